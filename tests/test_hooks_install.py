"""`tx hooks install|uninstall|status`: the plain git hooks, core.hooksPath, chaining existing hooks."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path

from tests.conftest import git, tx
from tests.test_hooks import change, commit, earned
from token_exchange.hooks.install import HOOK_TYPES, MARKER, render


def test_hook_scripts_are_rendered_from_the_template() -> None:
    for hook in HOOK_TYPES:
        text = render(hook, "/opt/venv/bin/tx-hook")
        assert text.startswith("#!/bin/sh\n") and MARKER in text and "@" not in text.replace("$@", "")
        assert 'TX_HOOK="${TOKEN_EXCHANGE_HOOK:-/opt/venv/bin/tx-hook}"' in text
        assert f'"$TX_HOOK" {hook}' in text


def test_install_commit_uninstall(repo: Path) -> None:
    assert tx("init", cwd=repo).code == 0
    r = tx("hooks", "install", "--json", cwd=repo)
    assert r.code == 0, r.err
    assert [d["action"] for d in json.loads(r.out)] == ["installed"] * 3
    change(repo)
    commit(repo, "-m", "fix: x")
    assert earned(repo) == Decimal(450)
    r = tx("hooks", "install", "--json", cwd=repo)
    assert [d["action"] for d in json.loads(r.out)] == ["updated"] * 3
    assert not list((repo / ".git" / "hooks").glob("*.local"))
    status = json.loads(tx("hooks", "status", "--json", cwd=repo).out)
    assert [h["state"] for h in status["hooks"]] == ["installed"] * 3
    r = tx("hooks", "uninstall", cwd=repo)
    assert r.code == 0
    for hook in HOOK_TYPES:
        assert not (repo / ".git" / "hooks" / hook).exists()
    change(repo)
    commit(repo, "-m", "fix: y")
    assert earned(repo) == Decimal(450)


def test_core_hooks_path_is_respected(repo: Path) -> None:
    assert tx("init", cwd=repo).code == 0
    git(repo, "config", "core.hooksPath", ".githooks")
    sub = repo / "sub"
    sub.mkdir()
    r = tx("hooks", "install", cwd=sub)
    assert r.code == 0, r.err
    assert (repo / ".githooks" / "commit-msg").exists() and (repo / ".githooks" / "post-commit").exists()
    assert not (repo / ".git" / "hooks" / "commit-msg").exists()
    change(repo)
    commit(repo, "-m", "fix: x")
    assert earned(repo) == Decimal(450)
    assert json.loads(tx("hooks", "status", "--json", cwd=repo).out)["hooks_dir"] == str(repo / ".githooks")


def test_existing_hooks_are_chained_and_restored(repo: Path) -> None:
    assert tx("init", cwd=repo).code == 0
    hooks = repo / ".git" / "hooks"
    mine = '#!/bin/sh\nif grep -q WIP "$1"; then echo "no WIP commits" >&2; exit 1; fi\n'
    (hooks / "commit-msg").write_text(mine)
    (hooks / "commit-msg").chmod(0o755)
    post = f'#!/bin/sh\necho ran >> "{repo / "post.log"}"\nexit 3\n'
    (hooks / "post-commit").write_text(post)
    (hooks / "post-commit").chmod(0o755)
    r = tx("hooks", "install", cwd=repo)
    assert r.code == 0 and "kept as commit-msg.local" in r.err
    assert (hooks / "commit-msg.local").read_text() == mine
    change(repo)
    out = commit(repo, "-m", "WIP: x", check=False)
    assert "no WIP commits" in out
    assert earned(repo) == 0
    commit(repo, "-m", "fix: x")
    assert earned(repo) == Decimal(450)
    assert (repo / "post.log").read_text() == "ran\n"  # the chained post-commit ran; its status is ignored
    status = json.loads(tx("hooks", "status", "--json", cwd=repo).out)
    assert [bool(h["chained"]) for h in status["hooks"]] == [True, True, False]  # no post-rewrite hook before
    assert tx("hooks", "uninstall", cwd=repo).code == 0
    assert (hooks / "commit-msg").read_text() == mine and (hooks / "post-commit").read_text() == post
    assert not (hooks / "commit-msg.local").exists()


def test_uninstall_leaves_foreign_hooks_alone(repo: Path) -> None:
    hooks = repo / ".git" / "hooks"
    (hooks / "post-commit").write_text("#!/bin/sh\ntrue\n")
    r = tx("hooks", "uninstall", "--json", cwd=repo)
    assert r.code == 0
    assert json.loads(r.out)[1]["action"] == "left alone (not a token-exchange hook)"
    assert (hooks / "post-commit").read_text() == "#!/bin/sh\ntrue\n"


def test_install_refuses_when_both_hook_and_local_exist(repo: Path) -> None:
    hooks = repo / ".git" / "hooks"
    (hooks / "commit-msg").write_text("#!/bin/sh\ntrue\n")
    (hooks / "commit-msg.local").write_text("#!/bin/sh\ntrue\n")
    r = tx("hooks", "install", cwd=repo)
    assert r.code == 1 and "already exists" in r.err and len(r.err.strip().splitlines()) == 1
    assert MARKER not in (hooks / "commit-msg").read_text()


def test_install_outside_a_repository_is_one_line(tmp_path: Path) -> None:
    r = tx("hooks", "install", cwd=tmp_path)
    assert r.code == 1 and "not inside a git repository" in r.err and len(r.err.strip().splitlines()) == 1


def test_missing_hook_program_skips_without_blocking(repo: Path) -> None:
    assert tx("init", cwd=repo).code == 0
    assert tx("hooks", "install", "--command", "/nonexistent/tx-hook", cwd=repo).code == 0
    change(repo)
    out = commit(repo, "-m", "fix: x")
    assert "not found; commit-msg hook skipped" in out and "not found; post-commit hook skipped" in out
    tx_hook = str(Path(sys.executable).parent / "tx-hook")
    out = commit(repo, "--amend", "--no-edit", env={"TOKEN_EXCHANGE_HOOK": tx_hook})
    assert earned(repo) == Decimal(450)  # HEAD got paid once the interpreter was found


def test_a_broken_installation_costs_one_line_and_never_the_commit(repo: Path, tmp_path: Path) -> None:
    """The package moved or half-uninstalled: tx-hook exists but dies with a traceback; the commit succeeds
    and the hook says one line for it."""
    broken = tmp_path / "tx-hook"
    broken.write_text(f"#!{sys.executable}\nimport token_exchange_that_moved  # noqa\n")
    broken.chmod(0o755)
    assert tx("init", cwd=repo).code == 0
    assert tx("hooks", "install", "--command", str(broken), cwd=repo).code == 0
    change(repo)
    out = commit(repo, "-m", "fix: x")
    assert git(repo, "log", "-1", "--format=%s") == "fix: x\n"
    ours = [line for line in out.splitlines() if "token-exchange" in line]
    assert len(ours) == 2 and all("hook failed: ModuleNotFoundError" in line for line in ours), out
    assert "Traceback" not in out
