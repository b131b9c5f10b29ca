"""The git hooks against real git: commit, amend, rebase -i, cherry-pick, rebase --exec, --no-verify."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import textwrap
import typing
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import from_template, git, initial_repo, tx
from token_exchange.amounts import to_decimal
from token_exchange.services.exchange import Exchange

TRAILER = re.compile(r"^Reward-Id: (R[0-9a-f]{40})$", re.M)


def init_and_install(repo: Path, *init: str) -> None:
    """`tx init` (with ``init``'s options) and `tx hooks install` in ``repo``."""
    r = tx("init", *init, cwd=repo)
    assert r.code == 0, r.err
    r = tx("hooks", "install", cwd=repo)
    assert r.code == 0, r.err


def hooked_repo(path: Path, *init: str) -> Path:
    """The `repo` fixture's repository at ``path`` with an exchange (``tx init`` + ``init``) and our plain
    hooks installed, built once per worker and copied per test (conftest.from_template)."""
    def build(dest: Path) -> None:
        initial_repo(dest)
        init_and_install(dest, *init)

    return from_template("hooked" + "".join(init), path, build)


@pytest.fixture
def hooked(tmp_path: Path) -> Path:
    """The `repo` fixture (named nexushive-setup) with an exchange in .exchange/ and our plain hooks."""
    return hooked_repo(tmp_path / "nexushive-setup")


def commit(repo: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    """`git commit` for real; returns what the hooks printed (git sends hook stdout to stderr)."""
    proc = subprocess.run(["git", "commit", "-q", *args], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


def change(repo: Path, name: str = "file.txt", text: str | None = None) -> None:
    path = repo / name
    path.write_text((path.read_text() if path.exists() else "") + (text or f"line {os.urandom(4).hex()}\n"))
    git(repo, "add", name)


def earned(repo: Path, agent: str = "claude") -> Decimal:
    ex = Exchange(repo / ".exchange")
    try:
        return to_decimal(ex.balance(agent).earned)
    finally:
        ex.close()


def earns(repo: Path) -> list[tuple[str, str, Decimal]]:
    ex = Exchange(repo / ".exchange")
    try:
        return [(t.ref, t.agent, to_decimal(t.amount)) for t in ex.ledger.fresh().iter_txns(["earn"])]
    finally:
        ex.close()


def message(repo: Path, rev: str = "HEAD") -> str:
    return git(repo, "log", "-1", "--format=%B", rev)


def tracked_clean(repo: Path) -> None:
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""


def editor(tmp_path: Path, name: str, code: str) -> str:
    """A tiny python script usable as GIT_EDITOR / GIT_SEQUENCE_EDITOR (gets the file path as argv[1])."""
    script = tmp_path / f"{name}.py"
    script.write_text("import sys, re\npath = sys.argv[1]\ntext = open(path).read()\n" + textwrap.dedent(code)
                      + "\nopen(path, 'w').write(text)\n")
    return f"{sys.executable} {script}"


# --- one commit ------------------------------------------------------------------------
def test_commit_adds_trailer_previews_and_pays_exact_amount(hooked: Path) -> None:
    change(hooked)
    out = commit(hooked, "-m", "fix: x")
    assert "token-exchange: will earn claude 450 tokens on nexushive-setup: 150 base x 2.0 (nexushive-setup) " \
           "x 1.5 (fix)" in out
    assert "token-exchange: claude 450 tokens on nexushive-setup" in out
    assert len(TRAILER.findall(message(hooked))) == 1
    assert earned(hooked) == Decimal(450)
    rid = TRAILER.findall(message(hooked))[0]
    assert earns(hooked) == [(f"commit:{rid}", "claude", Decimal(450))]
    tracked_clean(hooked)


def test_existing_trailer_is_left_alone(hooked: Path) -> None:
    rid = "R" + "ab" * 20
    change(hooked)
    commit(hooked, "-m", f"fix: x\n\nReward-Id: {rid}")
    assert TRAILER.findall(message(hooked)) == [rid]
    assert earns(hooked) == [(f"commit:{rid}", "claude", Decimal(450))]


def test_comments_and_scissors_are_ignored(hooked: Path, tmp_path: Path) -> None:
    # `commit -v` puts the diff below the scissors line; it mentions "fix", as does a comment line.
    change(hooked, "notes.txt", "fix security hole\n")
    ed = editor(tmp_path, "ed", 'text = "update notes\\n# fix in a comment\\n" + text')
    out = commit(hooked, "-v", env={"GIT_EDITOR": ed})
    assert "will earn claude 300 tokens" in out  # 150 x 2.0 x 1 (no keyword)
    msg = message(hooked)
    assert msg.startswith("update notes\n\nReward-Id: R") and "fix" not in msg
    assert earned(hooked) == Decimal(300)


def test_aborted_empty_message_gets_no_trailer(hooked: Path, tmp_path: Path) -> None:
    change(hooked)
    ed = editor(tmp_path, "empty", 'text = "# nothing\\n"')
    proc = subprocess.run(["git", "commit", "-q"], cwd=hooked, capture_output=True, text=True,
                          env={**os.environ, "GIT_EDITOR": ed})
    assert proc.returncode != 0 and "empty commit message" in proc.stderr.lower() + proc.stdout.lower()
    assert earned(hooked) == 0


def test_author_from_the_commit_not_git_config(hooked: Path) -> None:
    change(hooked)
    out = commit(hooked, "--author", "Builder <builder@aygp-dr.ai>", "-m", "fix: x")
    assert "will earn builder 360 tokens" in out  # 120 x 2.0 x 1.5
    assert "builder 360 tokens on nexushive-setup" in out
    assert earned(hooked, "builder") == Decimal(360) and earned(hooked) == 0


def test_mailmap_maps_author_to_agent(hooked: Path) -> None:
    (hooked / ".mailmap").write_text("Builder <builder@aygp-dr.ai> <ci-bot-42@example.com>\n")
    change(hooked)
    out = commit(hooked, "-m", "fix: x", env={"GIT_AUTHOR_EMAIL": "ci-bot-42@example.com"})
    assert "will earn builder 360 tokens" in out
    assert earned(hooked, "builder") == Decimal(360)


def test_project_from_origin_remote(hooked: Path) -> None:
    git(hooked, "remote", "add", "origin", "git@github.com:aygp-dr/claude-monitor.git")
    change(hooked)
    out = commit(hooked, "-m", "fix: x")
    assert "will earn claude 337.5 tokens on claude-monitor" in out  # 150 x 1.5 x 1.5
    assert earned(hooked) == Decimal("337.5")


def test_post_commit_takes_the_git_settings_commit_msg_read_for_the_same_commit(hooked: Path, tmp_path: Path) -> None:
    """One `git config` per commit: commit-msg's, handed to post-commit with its record.  A record left by a
    commit that never happened is not trusted for the next one: post-commit asks git."""
    trace = tmp_path / "trace"
    change(hooked)
    commit(hooked, "-m", "fix: x", env={"GIT_TRACE": str(trace)})
    assert trace.read_text().count("built-in: git config -z --get-regexp") == 1
    msg = tmp_path / "msg.txt"
    msg.write_text("fix: y\n")
    proc = subprocess.run([sys.executable, "-m", "token_exchange.hooks", "commit-msg", str(msg)], cwd=hooked,
                          capture_output=True, text=True)  # commit-msg ran, the commit did not
    assert proc.returncode == 0 and "will earn claude 450 tokens on nexushive-setup" in proc.stdout
    git(hooked, "remote", "add", "origin", "git@github.com:aygp-dr/claude-monitor.git")
    change(hooked)
    out = commit(hooked, "--no-verify", "-m", "fix: z")
    assert "claude 337.5 tokens on claude-monitor" in out  # 150 x 1.5 x 1.5


def test_co_authors_share_equally(hooked: Path) -> None:
    change(hooked)
    out = commit(hooked, "-m", "fix: x\n\nCo-authored-by: Builder <builder@aygp-dr.ai>\n"
                               "Co-authored-by: Some Human <human@example.com>")
    assert "will earn claude 225 + builder 225 tokens" in out
    assert earned(hooked) == Decimal(225) and earned(hooked, "builder") == Decimal(225)


def test_unknown_author_earns_nothing_and_commit_succeeds(hooked: Path) -> None:
    change(hooked)
    out = commit(hooked, "-m", "fix: x", env={"GIT_AUTHOR_EMAIL": "someone@example.com"})
    assert "someone@example.com is not an agent" in out
    assert earns(hooked) == []


def test_fixup_commit_earns_nothing(hooked: Path) -> None:
    change(hooked)
    commit(hooked, "-m", "fix: x")
    change(hooked)
    out = commit(hooked, "--fixup", "HEAD")
    assert "fixup/squash commit" in out
    assert earned(hooked) == Decimal(450)


# --- failures never break the commit ---------------------------------------------------------
def test_no_home_is_one_line_and_the_commit_succeeds(repo: Path) -> None:
    assert tx("hooks", "install", cwd=repo).code == 0
    change(repo)
    out = commit(repo, "-m", "fix: x")
    lines = [ln for ln in out.splitlines() if "token-exchange" in ln]
    assert len(lines) == 2 and all("no exchange at" in ln and "run `tx init`" in ln for ln in lines), out
    assert "Traceback" not in out
    assert git(repo, "log", "-1", "--format=%s") == "fix: x\n"
    tracked_clean(repo)


def test_bad_config_is_one_line_and_the_commit_succeeds(hooked: Path) -> None:
    (hooked / ".exchange" / "config.toml").write_text("[exchange]\nstarting_balance = 'lots'\n")
    change(hooked)
    out = commit(hooked, "-m", "fix: x")
    assert "Traceback" not in out
    bad = [ln for ln in out.splitlines() if "token-exchange" in ln]
    assert len(bad) == 2 and all("nothing recorded" in ln for ln in bad), out
    assert git(repo_log := hooked, "log", "-1", "--format=%s") == "fix: x\n", repo_log


def test_home_from_environment(hooked: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    assert tx("--home", str(other), "init").code == 0
    change(hooked)
    commit(hooked, "-m", "fix: x", env={"TOKEN_EXCHANGE_HOME": str(other)})
    assert earned(hooked) == 0
    ex = Exchange(other)
    assert to_decimal(ex.balance("claude").earned) == Decimal(450)


# --- never pay twice ------------------------------------------------------------------------
def test_amend_pays_once(hooked: Path) -> None:
    change(hooked)
    commit(hooked, "-m", "fix: x")
    rid = TRAILER.findall(message(hooked))[0]
    out = commit(hooked, "--amend", "--no-edit")
    assert "already paid" in out
    change(hooked)
    out = commit(hooked, "--amend", "-m", "fix: replaced message without the trailer")
    assert "already paid" in out.splitlines()[-1]
    change(hooked)
    commit(hooked, "--amend", "--no-edit")
    assert earned(hooked) == Decimal(450)
    assert [e[0] for e in earns(hooked)] == [f"commit:{rid}"]


def test_no_verify_commit_is_keyed_by_patch_id_and_amend_pays_once(hooked: Path) -> None:
    change(hooked)
    out = commit(hooked, "--no-verify", "-m", "fix: x")
    assert "claude 450 tokens" in out
    assert not TRAILER.findall(message(hooked))
    (ref, _, _), = earns(hooked)
    patch = subprocess.run("git show HEAD | git patch-id --stable", shell=True, cwd=hooked, capture_output=True,
                           text=True).stdout.split()[0]
    assert ref == f"commit:patch-{patch}"
    # amending the content changes the patch-id: the reflog says it is the same commit
    for _ in range(3):
        change(hooked)
        out = commit(hooked, "--amend", "--no-verify", "--no-edit")
        assert "already paid" in out
    assert earned(hooked) == Decimal(450)


def test_empty_no_verify_commit_is_keyed_by_sha(hooked: Path) -> None:
    commit(hooked, "--allow-empty", "--no-verify", "-m", "fix: nothing")
    sha = git(hooked, "rev-parse", "HEAD").strip()
    assert earns(hooked) == [(f"commit:sha-{sha}", "claude", Decimal(450))]


def three_commits(repo: Path, verify: bool = True) -> None:
    for i, subject in enumerate(("fix: one", "docs: two", "add three")):
        change(repo, f"f{i}.txt")
        commit(repo, *(() if verify else ("--no-verify",)), "-m", subject)


def test_interactive_rebase_reword_and_reorder_pay_nothing_new(hooked: Path, tmp_path: Path) -> None:
    three_commits(hooked)
    before = earns(hooked)
    assert sum(e[2] for e in before) == Decimal(450 + 330 + 300)
    # reorder (reverse) and reword the first picked commit
    seq = editor(tmp_path, "seq", """
        lines = [l for l in text.splitlines() if l and not l.startswith('#')]
        lines.reverse()
        lines[0] = 'reword ' + lines[0].split(' ', 1)[1]
        text = '\\n'.join(lines) + '\\n'
    """)
    ed = editor(tmp_path, "reword", "text = text.replace('add three', 'add three, reworded', 1)")
    proc = subprocess.run(["git", "rebase", "-i", "HEAD~3"], cwd=hooked, capture_output=True, text=True,
                          env={**os.environ, "GIT_SEQUENCE_EDITOR": seq, "GIT_EDITOR": ed})
    assert proc.returncode == 0, proc.stderr
    assert git(hooked, "log", "--format=%s", "-3") == "fix: one\ndocs: two\nadd three, reworded\n"
    assert earns(hooked) == before
    tracked_clean(hooked)


def squash_all(repo: Path, tmp_path: Path, cmd: str = "squash") -> subprocess.CompletedProcess[str]:
    seq = editor(tmp_path, "seq", f"""
        lines = [l for l in text.splitlines() if l and not l.startswith('#')]
        lines = [lines[0]] + ['{cmd} ' + l.split(' ', 1)[1] for l in lines[1:]]
        text = '\\n'.join(lines) + '\\n'
    """)
    return subprocess.run(["git", "rebase", "-i", "HEAD~3"], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "GIT_SEQUENCE_EDITOR": seq, "GIT_EDITOR": "true"})


def test_squash_of_paid_commits_pays_nothing_new(hooked: Path, tmp_path: Path) -> None:
    three_commits(hooked)
    before = earns(hooked)
    proc = squash_all(hooked, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert git(hooked, "rev-list", "--count", "HEAD") == "2\n"
    assert len(TRAILER.findall(message(hooked))) == 3
    assert earns(hooked) == before


def test_squash_of_no_verify_commits_pays_nothing_new(hooked: Path, tmp_path: Path) -> None:
    three_commits(hooked, verify=False)
    before = earns(hooked)
    assert all(ref.startswith("commit:patch-") for ref, _, _ in before)
    proc = squash_all(hooked, tmp_path)  # the squash message is edited: commit-msg adds a fresh trailer
    assert proc.returncode == 0, proc.stderr
    assert git(hooked, "rev-list", "--count", "HEAD") == "2\n"
    assert earns(hooked) == before


def test_fixup_autosquash_pays_nothing_new(hooked: Path, tmp_path: Path) -> None:
    change(hooked)
    commit(hooked, "-m", "fix: x")
    change(hooked, "other.txt")
    commit(hooked, "-m", "docs: y")
    change(hooked)
    commit(hooked, "--fixup", "HEAD~1")
    before = earns(hooked)
    proc = subprocess.run(["git", "rebase", "-i", "--autosquash", "HEAD~3"], cwd=hooked, capture_output=True,
                          text=True, env={**os.environ, "GIT_SEQUENCE_EDITOR": "true", "GIT_EDITOR": "true"})
    assert proc.returncode == 0, proc.stderr
    assert git(hooked, "log", "--format=%s", "-2") == "docs: y\nfix: x\n"
    assert earns(hooked) == before


@pytest.mark.parametrize("verify", [True, False], ids=["trailer", "no-verify"])
def test_cherry_pick_to_another_branch_pays_once(hooked: Path, verify: bool) -> None:
    git(hooked, "branch", "release")
    change(hooked, "feature.txt")
    commit(hooked, *(() if verify else ("--no-verify",)), "-m", "fix: x")
    sha = git(hooked, "rev-parse", "HEAD").strip()
    git(hooked, "switch", "-q", "release")
    change(hooked, "unrelated.txt")
    commit(hooked, "-m", "docs: release notes")
    before = earns(hooked)
    proc = subprocess.run(["git", "cherry-pick", sha], cwd=hooked, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "already paid" in proc.stdout + proc.stderr
    assert git(hooked, "rev-parse", "HEAD").strip() != sha
    assert earns(hooked) == before
    assert earned(hooked) == Decimal(450 + 330)


def test_rebase_exec_pays_nothing_new(hooked: Path) -> None:
    git(hooked, "switch", "-q", "-c", "feature")
    three_commits(hooked)
    change(hooked, "nv.txt")
    commit(hooked, "--no-verify", "-m", "add four without hooks")
    git(hooked, "switch", "-q", "main")
    change(hooked, "base.txt")
    commit(hooked, "-m", "docs: moves main")
    git(hooked, "switch", "-q", "feature")
    before = earns(hooked)
    old = git(hooked, "rev-parse", "HEAD").strip()
    proc = subprocess.run(["git", "rebase", "--exec", "true", "main"], cwd=hooked, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert git(hooked, "rev-parse", "HEAD").strip() != old
    assert earns(hooked) == before


def test_rebase_with_a_conflict_resolution_pays_nothing_new(hooked: Path) -> None:
    # a --no-verify commit whose patch changes while rebasing (the patch-id changes): the rebase todo knows it
    git(hooked, "switch", "-q", "-c", "feature")
    (hooked / "README").write_text("hello\nfeature line\n")
    git(hooked, "add", "README")
    commit(hooked, "--no-verify", "-m", "fix: feature")
    git(hooked, "switch", "-q", "main")
    (hooked / "README").write_text("hello\nmain line\n")
    git(hooked, "add", "README")
    commit(hooked, "-m", "docs: main")
    git(hooked, "switch", "-q", "feature")
    before = earns(hooked)
    proc = subprocess.run(["git", "rebase", "main"], cwd=hooked, capture_output=True, text=True)
    assert proc.returncode != 0  # conflict
    (hooked / "README").write_text("hello\nmain line\nfeature line\n")
    git(hooked, "add", "README")
    proc = subprocess.run(["git", "-c", "core.editor=true", "rebase", "--continue"], cwd=hooked,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert earns(hooked) == before


# --- the hot path ---------------------------------------------------------------------------
# Costly on every commit: the CLI stack, gitpython, and (warm) dataclasses, regex and tomllib (config is cached).
HEAVY = ("typer", "rich", "tomlkit", "git", "click", "orjson", "filelock", "dataclasses", "regex", "tomllib")
# Ours, but only for reading the journal back or rebuilding the index: a hook appends to an index in step.
READERS = ("token_exchange.ledger.bulk", "token_exchange.ledger.backends.tomlruns")


def string_annotations(modules: Iterable[str]) -> list[str]:
    """NamedTuple fields of our ``modules`` annotated with a string: typing compiles each into a ForwardRef when
    the class is built (the first one also sets up the compiler's AST types), in every hook process."""
    out = []
    for name in sorted(m for m in modules if m.startswith("token_exchange")):
        for cls in vars(importlib.import_module(name)).values():
            if isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields") and cls.__module__ == name:
                out += [f"{name}.{cls.__name__}.{field}" for field, t in cls.__annotations__.items()
                        if isinstance(t, str | typing.ForwardRef)]
    return out


@pytest.mark.parametrize("hook", ["commit-msg", "post-commit"])
def test_hook_imports_nothing_heavy(hooked: Path, hook: str) -> None:
    change(hooked)
    commit(hooked, "-m", "fix: x")
    msg = hooked / "msg.txt"
    msg.write_text("fix: y\n")
    args = ["commit-msg", "--msg-file", str(msg)] if hook == "commit-msg" else ["post-commit"]
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "token_exchange.hooks", *args], cwd=hooked,
                          capture_output=True, text=True)
    assert proc.returncode == 0
    assert "token-exchange:" in proc.stdout
    modules = {ln.split("|")[-1].strip() for ln in proc.stderr.splitlines() if ln.startswith("import time:")}
    packages = {m.split(".")[0] for m in modules}
    assert "token_exchange" in packages and "token_exchange.ledger.ledger" in modules
    assert not packages & set(HEAVY), packages & set(HEAVY)
    assert not modules & set(READERS), modules & set(READERS)
    assert not string_annotations(modules)


def test_tx_hook_usage(repo: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "token_exchange.hooks", "pre-push"], cwd=repo,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown hook" in proc.stderr
