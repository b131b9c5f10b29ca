"""Golden files of the markdown report (deterministic: fixed dates, identities and content).

Regenerate after an intended change with:  TX_UPDATE_GOLDEN=1 python3 -m pytest tests/test_report_golden.py
and review the diff of tests/golden/ like code.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import ROOT, git, tx
from tests.test_report import CLAUDE, HUMAN, commit, make_pr

GOLDEN = ROOT / "tests" / "golden"


@pytest.fixture(autouse=True)
def fixed_dates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_AUTHOR_DATE", "2026-01-02T03:04:05+00:00")
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2026-01-02T03:04:05+00:00")


def check(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("TX_UPDATE_GOLDEN"):
        path.write_text(text, "utf-8")
    assert path.exists(), f"missing {path}: run with TX_UPDATE_GOLDEN=1"
    assert text == path.read_text("utf-8"), f"{name} changed: rerun with TX_UPDATE_GOLDEN=1 and review the diff"


def markdown(repo: Path) -> str:
    r = tx("report", "--base", "main", "--head", "feature", "--format", "markdown", "--no-ledger", cwd=repo)
    assert r.code == 0, r.err
    return r.out


def test_golden_pull_request(tmp_path: Path) -> None:
    repo = make_pr(tmp_path, budget=1500)
    commit(repo, "fix(parser): handle empty input", CLAUDE, "parser.py")
    commit(repo, "feat: pair on the exporter\n\nCo-authored-by: Bob <bob@example.com>", CLAUDE, "export.py")
    commit(repo, "fixup! feat: pair on the exporter", CLAUDE, "export.py", "v2\n")
    commit(repo, "docs: thanks @octocat <b>bold</b> [x](http://evil.example) | pipe", HUMAN, "README")
    commit(repo, "security hotfix: rotate keys", CLAUDE, "keys.py")
    cfg = repo / ".exchange" / "config.toml"
    cfg.write_text(cfg.read_text().replace("base_rate = 150", "base_rate = 9000"))
    git(repo, "commit", "-q", "--no-verify", "-am", "chore: tune rates", env=CLAUDE)
    check("report_pull_request.md", markdown(repo))


def test_golden_collapsed(tmp_path: Path) -> None:
    repo = make_pr(tmp_path)
    for i in range(20):
        commit(repo, f"test: case {i}", CLAUDE if i % 3 else HUMAN, f"t{i}.py")
    check("report_collapsed.md", markdown(repo))
