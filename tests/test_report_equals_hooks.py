"""One engine: on random histories and random configs, what `tx report` says a range earns equals,
commit by commit, what the real hooks paid for it (real git, real hooks, the report reading the ledger),
earning caps included (the report prices each commit at its committer time, the hooks at commit time)."""

from __future__ import annotations

import json
import os
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import GIT_ENV, git, tx
from token_exchange.amounts import to_decimal
from token_exchange.rules import config as config_mod
from token_exchange.services.exchange import Exchange

AUTHORS = {"claude": "claude@aygp-dr.ai", "builder": "builder@aygp-dr.ai", "zero": "zero@aygp-dr.ai",
           "human": "someone@example.org"}
SUBJECTS = ["fix: a bug", "docs: readme", "security hotfix", "feat: thing", "fixup! feat: thing", "test: more",
            "refactor: tidy", "chore: bump", 'Revert "feat: thing"']

commit_spec = st.tuples(
    st.sampled_from(sorted(AUTHORS)),  # author
    st.sampled_from(SUBJECTS),
    st.lists(st.sampled_from(["builder", "zero", "human"]), max_size=2),  # co-authors
    st.sampled_from(["plain", "plain", "empty", "copy-head", "no-verify"]),
)
config_spec = st.fixed_dictionaries({
    "claude_rate": st.sampled_from(["150", "100", "33.3333"]),
    "multiplier": st.sampled_from(["2.0", "1.0", "1.7"]),
    "budget": st.sampled_from(["50000", "1000", "700"]),
    "bonus": st.sampled_from(["1.5", "3.0"]),
    "pay_fixups": st.booleans(),
    "caps": st.sampled_from(["", "commits = { daily = 700 }", "commits = { hourly = 1000, daily = 5000 }"]),
})


def config_text(spec: dict[str, object]) -> str:
    text = config_mod.default_text()
    text = text.replace("base_rate = 150", f"base_rate = {spec['claude_rate']}", 1)
    text = text.replace('name = "nexushive-setup"\npattern = "nexushive-setup"\nmultiplier = 2.0\nbudget = 50000',
                        f'name = "nexushive-setup"\npattern = "nexushive-setup"\nmultiplier = {spec["multiplier"]}\n'
                        f'budget = {spec["budget"]}')
    text = text.replace('keywords = ["fix", "bug", "patch", "resolve"]\nmultiplier = 1.5',
                        f'keywords = ["fix", "bug", "patch", "resolve"]\nmultiplier = {spec["bonus"]}')
    text = text.replace("\n[caps]\n", f"\n[caps]\n{spec['caps']}\n", 1)
    return text.replace("pay_fixups = false", f"pay_fixups = {'true' if spec['pay_fixups'] else 'false'}")


def make_commit(repo: Path, n: int, spec: tuple[str, str, list[str], str]) -> None:
    author, subject, co, how = spec
    env = {**os.environ, "GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": AUTHORS[author]}
    body = "".join(f"\nCo-authored-by: {c} <{AUTHORS[c]}>" for c in co)
    message = subject + ("\n" + body if body else "")
    if how != "empty":
        (repo / f"f{n}.txt").write_text(f"{n}\n")
        git(repo, "add", f"f{n}.txt")
    args = {"plain": ["-m", message], "empty": ["--allow-empty", "-m", message], "copy-head": ["-C", "HEAD"],
            "no-verify": ["--no-verify", "-m", message]}[how]
    proc = subprocess.run(["git", "commit", "-q", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def paid_by_sha(repo: Path) -> dict[str, Decimal]:
    ex = Exchange(repo / ".exchange")
    try:
        out: dict[str, Decimal] = {}
        for t in ex.ledger.fresh().iter_txns(["earn"]):
            sha = str(t.source.get("sha", ""))
            out[sha] = out.get(sha, Decimal(0)) + to_decimal(t.amount)
        return out
    finally:
        ex.close()


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=config_spec, before=st.lists(commit_spec, min_size=0, max_size=2),
       pr=st.lists(commit_spec, min_size=1, max_size=5))
def test_report_equals_what_the_hooks_paid(tmp_path_factory: pytest.TempPathFactory, cfg: dict[str, object],
                                           before: list[tuple[str, str, list[str], str]],
                                           pr: list[tuple[str, str, list[str], str]]) -> None:
    repo = tmp_path_factory.mktemp("prop") / "nexushive-setup"
    repo.mkdir()
    env = {**GIT_ENV}
    git(repo, "init", "-q", "-b", "main", env=env)
    (repo / ".exchange").mkdir()
    (repo / ".exchange" / "config.toml").write_text(config_text(cfg))
    (repo / ".gitignore").write_text(".exchange/*\n!.exchange/config.toml\n")
    git(repo, "add", ".gitignore", ".exchange/config.toml")
    git(repo, "commit", "-q", "--no-verify", "-m", "add the exchange")
    assert tx("init", cwd=repo).code == 0
    assert tx("hooks", "install", cwd=repo).code == 0
    for n, spec in enumerate(before):
        make_commit(repo, n, spec)
    git(repo, "switch", "-q", "-c", "feature")
    for n, spec in enumerate(pr, start=100):
        make_commit(repo, n, spec)
    r = tx("report", "--base", "main", "--head", "feature", "--json", cwd=repo)
    assert r.code == 0, r.err
    report = json.loads(r.out, parse_float=Decimal)
    paid = paid_by_sha(repo)
    shas = git(repo, "rev-list", "--reverse", "main..feature").split()
    assert [c["sha"] for c in report["commits"]] == shas
    for c in report["commits"]:
        assert c["amount"] == paid.get(c["sha"], 0), (c, paid)
        assert c["flag"] is None
    assert report["total"] == sum(paid.get(s, Decimal(0)) for s in shas)
