"""Our published hooks through the real `pre-commit` CLI (the python environment is built once per run: the
`snapshot` and `pre_commit_home` fixtures in conftest.py)."""

from __future__ import annotations

import shlex
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, git, run, tx
from tests.test_hooks import TRAILER, change, commit, earned, earns, message

pytestmark = pytest.mark.skipif(shutil.which("pre-commit") is None, reason="pre-commit is not installed")


@pytest.fixture(autouse=True)
def pip_cache(pre_commit_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One pip cache for every environment pre-commit builds this session (try-repo builds its own)."""
    monkeypatch.setenv("PIP_CACHE_DIR", str(pre_commit_home / "pip-cache"))


def test_hook_manifest() -> None:
    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    msg, post = hooks["token-exchange-commit-msg"], hooks["token-exchange-post-commit"]
    for h in (msg, post):
        assert h["language"] == "python" and h["minimum_pre_commit_version"] == "3.2.0"
    # plain console scripts (no bootstrap one-liner, no server)
    assert shlex.split(msg["entry"]) == ["tx-hook", "commit-msg"]
    assert shlex.split(post["entry"]) == ["tx-hook", "post-commit"]
    assert msg["stages"] == ["commit-msg"] and "args" not in msg  # pre-commit passes the message file last
    assert post["stages"] == ["post-commit"] and post["always_run"] is True and post["pass_filenames"] is False


@pytest.mark.slow
def test_pre_commit_install_and_commit(repo: Path, snapshot: tuple[Path, str]) -> None:
    hook_repo, sha = snapshot
    (repo / ".pre-commit-config.yaml").write_text(
        f"default_install_hook_types: [commit-msg, post-commit]\n"
        f"repos:\n- repo: {hook_repo}\n  rev: {sha}\n  hooks:\n"
        f"  - id: token-exchange-commit-msg\n  - id: token-exchange-post-commit\n")
    git(repo, "add", ".pre-commit-config.yaml")
    commit(repo, "--no-verify", "-m", "add pre-commit config")
    assert tx("init", cwd=repo).code == 0
    r = run(["pre-commit", "install"], cwd=repo)
    assert r.code == 0, r.err
    assert "pre-commit installed at .git/hooks/commit-msg" in r.out
    assert "pre-commit installed at .git/hooks/post-commit" in r.out
    change(repo)
    out = commit(repo, "-m", "fix: x")
    assert "token-exchange: will earn claude 450 tokens on nexushive-setup" in out, out
    assert "token-exchange: claude 450 tokens on nexushive-setup" in out, out
    assert len(TRAILER.findall(message(repo))) == 1
    out = commit(repo, "--amend", "--no-edit")
    assert "already paid" in out
    assert earned(repo) == Decimal(450)
    assert len(earns(repo)) == 1
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""


@pytest.mark.slow
def test_pre_commit_try_repo_commit_msg(repo: Path, snapshot: tuple[Path, str], tmp_path: Path) -> None:
    hook_repo, sha = snapshot
    assert tx("init", cwd=repo).code == 0
    msg = tmp_path / "COMMIT_EDITMSG"
    msg.write_text("docs: explain\n# a comment\n")
    r = run(["pre-commit", "try-repo", str(hook_repo), "token-exchange-commit-msg", "--ref", sha,
             "--hook-stage", "commit-msg", "--commit-msg-filename", str(msg), "--verbose"], cwd=repo)
    assert r.code == 0, r.out + r.err
    assert "token-exchange: will earn claude 330 tokens on nexushive-setup" in r.out  # 150 x 2.0 x 1.1 (docs)
    assert TRAILER.search(msg.read_text())
