"""Every change is paid exactly once, whatever git does to it: a matrix of history rewrites against the
real hooks, on both backends, with `tx doctor` consistent after each.

Amounts: the repository is named nexushive-setup (contract x2.0), claude's base rate is 150, so
"fix:" (x1.5) pays 450, "docs:" (x1.1) 330, a message without a keyword 300.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import from_template, git, tx
from tests.test_hooks import change, commit, earned, earns, editor, hooked_repo

Scenario = Callable[[Path, Path], Decimal]  # (repo, tmp) -> what claude must have earned in all


@pytest.fixture(params=["toml", "notes"])
def hooked(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The `repo` fixture's repository with `tx init --backend PARAM` and `tx hooks install` (a copy)."""
    return hooked_repo(tmp_path / "nexushive-setup", "--backend", request.param)


def run_git(repo: Path, *args: str, env: dict[str, str] | None = None, ok: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


def one(repo: Path, name: str, subject: str, *args: str) -> None:
    change(repo, name)
    commit(repo, *args, "-m", subject)


# --- the scenarios that paid twice ------------------------------------------------------------------
def amend_m_then_reorder(repo: Path, tmp: Path) -> Decimal:
    one(repo, "a.txt", "fix: a")
    one(repo, "b.txt", "docs: b")
    commit(repo, "--amend", "-m", "docs: b, reworded without its trailer")
    seq = editor(tmp, "rev", """
        lines = [l for l in text.splitlines() if l and not l.startswith('#')]
        lines.reverse()
        text = '\\n'.join(lines) + '\\n'
    """)
    run_git(repo, "rebase", "-i", "HEAD~2", env={"GIT_SEQUENCE_EDITOR": seq, "GIT_EDITOR": "true"})
    return Decimal(450 + 330)


def amend_m_then_cherry_pick(repo: Path, tmp: Path) -> Decimal:
    git(repo, "branch", "release")
    one(repo, "a.txt", "fix: a")
    commit(repo, "--amend", "-m", "fix: a, reworded")
    sha = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "switch", "-q", "release")
    run_git(repo, "cherry-pick", sha)
    return Decimal(450)


def squash_merge(no_edit: bool) -> Scenario:
    def scenario(repo: Path, tmp: Path) -> Decimal:
        git(repo, "switch", "-q", "-c", "topic")
        one(repo, "a.txt", "fix: a")
        one(repo, "b.txt", "docs: b")
        git(repo, "switch", "-q", "main")
        run_git(repo, "merge", "--squash", "topic")
        commit(repo, *(["--no-edit"] if no_edit else ["-m", "feat: the topic, squashed"]))
        return Decimal(450 + 330)
    return scenario


def reset_soft(n: int) -> Scenario:
    def scenario(repo: Path, tmp: Path) -> Decimal:
        one(repo, "a.txt", "fix: a")
        if n == 2:
            one(repo, "b.txt", "docs: b")
        git(repo, "reset", "-q", "--soft", f"HEAD~{n}")
        commit(repo, "-m", "fix: a (and b), recommitted")
        return Decimal(450 + (330 if n == 2 else 0))
    return scenario


def amend_m_without_reflog(repo: Path, tmp: Path) -> Decimal:
    git(repo, "config", "core.logAllRefUpdates", "false")
    one(repo, "a.txt", "fix: a")
    commit(repo, "--amend", "-m", "fix: a, reworded")
    change(repo, "a.txt")
    commit(repo, "--no-verify", "--amend", "-m", "fix: a, reworded again without hooks")
    return Decimal(450)


def worktree_then_cherry_pick(repo: Path, tmp: Path) -> Decimal:
    wt = tmp / "wt"
    git(repo, "worktree", "add", "-q", "-b", "wt-branch", str(wt))
    one(wt, "a.txt", "fix: in the worktree")
    sha = git(wt, "rev-parse", "HEAD").strip()
    assert not (wt / ".exchange" / "ledger.toml").exists()  # one ledger per repository
    run_git(repo, "cherry-pick", sha)
    return Decimal(450)


# --- the scenarios that missed a payment ---------------------------------------------------------------
def copy_message_of_head(repo: Path, tmp: Path) -> Decimal:
    one(repo, "a.txt", "fix: a")
    change(repo, "b.txt")
    commit(repo, "-C", "HEAD")  # new work under a copied message (and trailer)
    return Decimal(450 + 450)


def commit_at_edit_stop(repo: Path, tmp: Path) -> Decimal:
    one(repo, "a.txt", "fix: a")
    one(repo, "b.txt", "docs: b")
    seq = editor(tmp, "edit", "text = text.replace('pick', 'edit', 1)")
    run_git(repo, "rebase", "-i", "HEAD~2", env={"GIT_SEQUENCE_EDITOR": seq})
    one(repo, "c.txt", "test: new work at the stop")
    run_git(repo, "rebase", "--continue", env={"GIT_EDITOR": "true"})
    return Decimal(450 + 330 + 390)


def commit_by_exec_line(repo: Path, tmp: Path) -> Decimal:
    one(repo, "a.txt", "fix: a")
    run_git(repo, "rebase", "-x", "echo x >> exec.txt && git add exec.txt && git commit -q -m 'test: by exec'",
            "HEAD~1")
    return Decimal(450 + 390)


def commit_while_ledger_locked(repo: Path, tmp: Path) -> Decimal:
    import fcntl

    one(repo, "a.txt", "fix: a")
    from token_exchange.services.exchange import Exchange

    ex = Exchange(repo / ".exchange")
    lock = ex.ledger.journal.lock_path()
    ex.close()
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        change(repo, "b.txt")
        out = commit(repo, "-m", "docs: b while the ledger is busy")
        assert "queued" in out
    finally:
        os.close(fd)
    one(repo, "c.txt", "test: the next commit catches up")
    return Decimal(450 + 330 + 390)


# --- the ones that held before ----------------------------------------------------------------------------
def amend_no_edit(repo: Path, tmp: Path) -> Decimal:
    one(repo, "a.txt", "fix: a")
    change(repo, "a.txt")
    commit(repo, "--amend", "--no-edit")
    return Decimal(450)


def reword(repo: Path, tmp: Path) -> Decimal:
    one(repo, "a.txt", "fix: a")
    one(repo, "b.txt", "docs: b")
    seq = editor(tmp, "rw", "text = text.replace('pick', 'reword', 1)")
    ed = editor(tmp, "msg", "text = text.replace('fix: a', 'fix: a, reworded', 1)")
    run_git(repo, "rebase", "-i", "HEAD~2", env={"GIT_SEQUENCE_EDITOR": seq, "GIT_EDITOR": ed})
    return Decimal(450 + 330)


def squash_fixup(cmd: str) -> Scenario:
    def scenario(repo: Path, tmp: Path) -> Decimal:
        one(repo, "a.txt", "fix: a")
        one(repo, "b.txt", "docs: b")
        seq = editor(tmp, "sq", f"""
            lines = [l for l in text.splitlines() if l and not l.startswith('#')]
            lines = [lines[0]] + ['{cmd} ' + l.split(' ', 1)[1] for l in lines[1:]]
            text = '\\n'.join(lines) + '\\n'
        """)
        run_git(repo, "rebase", "-i", "HEAD~2", env={"GIT_SEQUENCE_EDITOR": seq, "GIT_EDITOR": "true"})
        return Decimal(450 + 330)
    return scenario


def autosquash(repo: Path, tmp: Path) -> Decimal:
    one(repo, "a.txt", "fix: a")
    one(repo, "b.txt", "docs: b")
    change(repo, "a.txt")
    commit(repo, "--fixup", "HEAD~1")
    run_git(repo, "rebase", "-i", "--autosquash", "HEAD~3", env={"GIT_SEQUENCE_EDITOR": "true", "GIT_EDITOR": "true"})
    return Decimal(450 + 330)


def cherry_pick(flags: tuple[str, ...], verify: bool = True) -> Scenario:
    def scenario(repo: Path, tmp: Path) -> Decimal:
        git(repo, "branch", "release")
        one(repo, "a.txt", "fix: a", *(() if verify else ("--no-verify",)))
        sha = git(repo, "rev-parse", "HEAD").strip()
        git(repo, "switch", "-q", "release")
        run_git(repo, "cherry-pick", *flags, sha)
        return Decimal(450)
    return scenario


def cherry_pick_conflict(repo: Path, tmp: Path) -> Decimal:
    git(repo, "branch", "release")
    (repo / "README").write_text("hello\nmain\n")
    git(repo, "add", "README")
    commit(repo, "-m", "fix: a")
    sha = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "switch", "-q", "release")
    (repo / "README").write_text("hello\nrelease\n")
    git(repo, "add", "README")
    commit(repo, "-m", "docs: release")
    assert "conflict" in run_git(repo, "cherry-pick", sha, ok=False).lower()
    (repo / "README").write_text("hello\nrelease\nmain\n")
    git(repo, "add", "README")
    run_git(repo, "cherry-pick", "--continue", env={"GIT_EDITOR": "true"})
    return Decimal(450 + 330)


def apply_rebase(repo: Path, tmp: Path) -> Decimal:
    git(repo, "switch", "-q", "-c", "topic")
    one(repo, "a.txt", "fix: a")
    git(repo, "switch", "-q", "main")
    one(repo, "m.txt", "docs: main moves")
    git(repo, "switch", "-q", "topic")
    run_git(repo, "rebase", "--apply", "main")
    return Decimal(450 + 330)


def am(repo: Path, tmp: Path) -> Decimal:
    git(repo, "branch", "release")
    one(repo, "a.txt", "fix: a")
    patch = run_git(repo, "format-patch", "-1", "--stdout", "HEAD")
    git(repo, "switch", "-q", "release")
    proc = subprocess.run(["git", "am", "-q"], cwd=repo, input=patch, text=True, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    return Decimal(450)


SCENARIOS: dict[str, Scenario] = {
    "amend -m, then rebase -i reorder": amend_m_then_reorder,
    "amend -m, then cherry-pick": amend_m_then_cherry_pick,
    "merge --squash, commit --no-edit": squash_merge(True),
    "merge --squash, commit -m": squash_merge(False),
    "reset --soft HEAD~1, commit": reset_soft(1),
    "reset --soft HEAD~2, commit": reset_soft(2),
    "amend -m without a reflog": amend_m_without_reflog,
    "worktree commit, cherry-picked in main": worktree_then_cherry_pick,
    "commit -C HEAD on new work": copy_message_of_head,
    "new commit at a rebase edit stop": commit_at_edit_stop,
    "commit by a rebase exec line": commit_by_exec_line,
    "commit while the ledger is locked": commit_while_ledger_locked,
    "amend --no-edit": amend_no_edit,
    "rebase -i reword": reword,
    "rebase -i squash": squash_fixup("squash"),
    "rebase -i fixup": squash_fixup("fixup"),
    "rebase --autosquash": autosquash,
    "cherry-pick": cherry_pick(()),
    "cherry-pick -x": cherry_pick(("-x",)),
    "cherry-pick of a --no-verify commit": cherry_pick((), verify=False),
    "cherry-pick with a conflict": cherry_pick_conflict,
    "rebase --apply": apply_rebase,
    "git am": am,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_change_is_paid_once(hooked: Path, tmp_path: Path, name: str) -> None:
    expected = SCENARIOS[name](hooked, tmp_path)
    assert earned(hooked) == expected, earns(hooked)
    refs = [ref for ref, _, _ in earns(hooked)]
    assert len(refs) == len(set(refs))
    r = tx("doctor", "--json", cwd=hooked)
    assert r.code == 0, r.out + r.err


def test_catch_up_pays_what_the_hooks_skipped(repo: Path) -> None:
    assert tx("init", cwd=repo).code == 0
    assert tx("hooks", "install", cwd=repo).code == 0
    one(repo, "a.txt", "fix: paid by the hook")
    change(repo, "b.txt")
    commit(repo, "-m", "docs: hooks skipped", env={"TOKEN_EXCHANGE_SKIP": "1"})
    assert earned(repo) == Decimal(450)
    r = tx("catch-up", "--json", cwd=repo)
    assert r.code == 0, r.err
    assert [p["amount"] for p in r.json()["paid"]] == [330]
    assert earned(repo) == Decimal(450 + 330)
    again = tx("catch-up", "--json", cwd=repo)
    assert again.json()["paid"] == [] and earned(repo) == Decimal(780)


# --- two clones that sync (notes backend) ----------------------------------------------------------------
@pytest.fixture
def clones(tmp_path: Path) -> tuple[Path, Path]:
    """Two clones of one remote, each with the notes backend and the real hooks; A has a paid commit on main
    that B has as code (pulled) but not yet as ledger (not synced).  Built once per worker (the remote, both
    clones, A's commit through the real hooks, A's sync, B's pull) and copied (conftest.from_template); the
    copies' origin is pointed at the copied remote."""
    top = from_template("clones", tmp_path / "clones", _make_clones)
    remote = top / "nexushive-setup.git"
    a, b = top / "a" / "nexushive-setup", top / "b" / "nexushive-setup"
    for c in (a, b):
        assert git(c, "config", "remote.origin.url").strip().endswith("/nexushive-setup.git")
        git(c, "remote", "set-url", "origin", str(remote))
    return a, b


def _make_clones(tmp_path: Path) -> None:
    remote = tmp_path / "nexushive-setup.git"  # the project (contract x2.0) is the origin's repository name
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    a, b = tmp_path / "a" / "nexushive-setup", tmp_path / "b" / "nexushive-setup"
    git(tmp_path, "clone", "-q", str(remote), str(a))
    (a / "README").write_text("hello\n")
    git(a, "add", "README")
    git(a, "commit", "-q", "--no-verify", "-m", "initial")
    git(a, "push", "-q", "origin", "main")
    git(tmp_path, "clone", "-q", str(remote), str(b))
    for c in (a, b):
        assert tx("init", "--backend", "notes", cwd=c).code == 0
        assert tx("hooks", "install", cwd=c).code == 0
    one(a, "a.txt", "fix: A's change")
    git(a, "push", "-q", "origin", "main")
    assert tx("sync", cwd=a).code == 0
    git(b, "pull", "-q", "--no-rebase", "origin", "main")


def both_synced(a: Path, b: Path) -> None:
    for c in (b, a, b):
        r = tx("sync", cwd=c)
        assert r.code == 0, r.err


def b_amends(b: Path, tmp: Path) -> Decimal:
    commit(b, "--amend", "-m", "fix: A's change, reworded by B")
    return Decimal(450)


def b_rebases(b: Path, tmp: Path) -> Decimal:
    git(b, "switch", "-q", "-c", "side", "HEAD~1")
    one(b, "b.txt", "docs: B's own work")
    git(b, "switch", "-q", "main")
    run_git(b, "rebase", "side")
    return Decimal(450 + 330)


def b_cherry_picks(b: Path, tmp: Path) -> Decimal:
    git(b, "switch", "-q", "-c", "release", "HEAD~1")
    run_git(b, "cherry-pick", git(b, "rev-parse", "main").strip())
    return Decimal(450)


TWO_CLONE: dict[str, Callable[[Path, Path], Decimal]] = {
    "B amends A's commit with -m": b_amends,
    "B rebases A's commit onto its own": b_rebases,
    "B cherry-picks A's commit": b_cherry_picks,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TWO_CLONE))
def test_two_clones_that_sync_pay_a_change_once(clones: tuple[Path, Path], tmp_path: Path, name: str) -> None:
    a, b = clones
    expected = TWO_CLONE[name](b, tmp_path)
    both_synced(a, b)
    for c in (a, b):
        assert earned(c) == expected, (name, earns(c))
        r = tx("doctor", "--json", cwd=c)
        assert r.code == 0, r.out + r.err
