"""Settlement (on-merge mode) on real repositories: each test is a scenario with its expected figures.

The repository is named nexushive-setup (contract x2.0) and claude's base rate is 150, so a "fix:"
commit (x1.5) pays 450, "docs:" (x1.1) 330, a message without a keyword 300 and "security hotfix"
(x2.0) 600.  The hooks record provisional awards; `tx settle` pays what lands on main.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import git, tx, tx_at
from tests.test_hooks import change, commit
from token_exchange.services.exchange import Exchange

SKIP_HOOKS = {"TOKEN_EXCHANGE_SKIP": "1"}  # a commit made where our hooks do not run (a server, the web UI)


def on_merge(repo: Path, backend: str = "toml", *, ttl: int | None = None, caps: str = "",
             edits: dict[str, str] | None = None) -> Path:
    """``repo`` with an on-merge exchange whose config is committed on main, and our hooks installed."""
    from token_exchange.rules.config import default_text

    text = default_text().replace('mode = "immediate"', 'mode = "on-merge"', 1)
    text = text.replace('backend = "toml"', f'backend = "{backend}"', 1)
    if ttl is not None:
        text = text.replace("provisional_ttl = 2592000", f"provisional_ttl = {ttl}", 1)
    if caps:
        text = text.replace("\n[caps]\n", f"\n[caps]\n{caps}\n", 1)
    for old, new in (edits or {}).items():
        assert old in text, old
        text = text.replace(old, new, 1)
    (repo / ".exchange").mkdir(exist_ok=True)
    (repo / ".exchange" / "config.toml").write_text(text)
    r = tx("init", "--backend", backend, cwd=repo)  # keeps this config; opens the wallets
    assert r.code == 0, r.err
    git(repo, "add", ".exchange/config.toml", ".exchange/.gitignore")
    git(repo, "commit", "-q", "--no-verify", "-m", "chore: the exchange, settled on merge")
    r = tx("hooks", "install", cwd=repo)
    assert r.code == 0, r.err
    return repo


def settle(repo: Path, *args: str, at: datetime | None = None) -> dict[str, Any]:
    """`tx settle --json` in ``repo``; ``at``: in this process with "now" fixed there (no production path
    reads a time from the environment)."""
    if at is None:
        r = tx("settle", "--json", *args, cwd=repo)
    else:
        with contextlib.chdir(repo):
            r = tx_at(at.isoformat(), "settle", "--json", *args)
    assert r.code == 0, r.err
    data = json.loads(r.out, parse_float=Decimal)
    assert isinstance(data, dict)
    return data


def work(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The settled lines of agents' work (not merge commits, not unmatched authors)."""
    return [c for c in data["commits"] if c["agents"] and c["status"] != "excluded"]


def wallet(repo: Path, agent: str = "claude") -> dict[str, Any]:
    r = tx("balance", agent, "--json", cwd=repo)
    assert r.code == 0, r.err
    data = json.loads(r.out, parse_float=Decimal)
    assert isinstance(data, dict)
    return data


def kinds(repo: Path, *wanted: str) -> list[tuple[str, str, Decimal]]:
    """(id, ref, amount) of every transaction of the given kinds, in ledger order."""
    from token_exchange.amounts import to_decimal

    ex = Exchange(repo / ".exchange")
    try:
        return [(t.id, t.ref, to_decimal(t.amount)) for t in ex.ledger.fresh().iter_txns(list(wanted))]
    finally:
        ex.close()


def doctor_ok(repo: Path) -> None:
    r = tx("doctor", "--json", cwd=repo)
    assert r.code == 0, r.out + r.err


def one(repo: Path, name: str, subject: str, env: dict[str, str] | None = None) -> str:
    change(repo, name)
    commit(repo, "-m", subject, env=env)
    return git(repo, "rev-parse", "HEAD").strip()


def merge(repo: Path, branch: str, how: str) -> None:
    """Land ``branch`` on main as a forge would (no hooks run on the server)."""
    git(repo, "switch", "-q", "main")
    if how == "merge":
        git(repo, "merge", "-q", "--no-ff", "--no-verify", branch, "-m", f"Merge branch '{branch}'", env=SKIP_HOOKS)
    elif how == "rebase":  # a rebase merge of a branch based on main's tip lands its commits as they are
        git(repo, "merge", "-q", "--ff-only", branch)
    else:
        raise AssertionError(how)


# --- a PR that edits the config to pay itself settles at the base rules ---------------------------------
@pytest.mark.parametrize("how", ["merge", "rebase"])
def test_pr_raising_its_own_rate_settles_at_the_base_rules(repo: Path, how: str) -> None:
    on_merge(repo)
    git(repo, "switch", "-q", "-c", "greedy")
    cfg = repo / ".exchange" / "config.toml"
    cfg.write_text(cfg.read_text().replace("base_rate = 150", "base_rate = 5000", 1))
    git(repo, "add", ".exchange/config.toml")
    commit(repo, "-m", "chore: tune the rates")  # priced by the hook with the edited rules: 5000 x 2.0
    one(repo, "w.py", "fix: the work")  # 5000 x 2.0 x 1.5
    w = wallet(repo)
    assert (w["provisional"], w["settled"], w["earned"]) == (25000, 10000, 0)  # provisional, not earned
    merge(repo, "greedy", how)
    data = settle(repo)
    assert data["rules"].endswith(":.exchange/config.toml") and data["mode"] == "on-merge"
    mine = work(data)
    assert [(c["subject"], c["provisional"], c["settled"], c["flag"]) for c in mine] == [
        ("chore: tune the rates", 10000, 300, "overpaid"), ("fix: the work", 15000, 450, "overpaid")]
    assert data["totals"]["settled"] == 750 and data["totals"]["provisional_released"] == 25000
    w = wallet(repo)
    assert (w["balance"], w["settled"], w["provisional"], w["earned"]) == (10750, 10750, 0, 750)
    again = settle(repo)
    assert again["commits"] == [] and again["written"] == 0 and wallet(repo)["balance"] == 10750
    doctor_ok(repo)


def test_the_rules_of_the_default_branch_apply_from_the_next_settlement(repo: Path) -> None:
    """A reviewed config change that landed prices what lands after it (never what landed with it)."""
    on_merge(repo)
    cfg = repo / ".exchange" / "config.toml"
    cfg.write_text(cfg.read_text().replace("base_rate = 150", "base_rate = 200", 1))
    git(repo, "add", ".exchange/config.toml")
    commit(repo, "-m", "chore: raise claude's rate", env=SKIP_HOOKS)  # landed on main directly
    one(repo, "a.py", "fix: with the old rules", env=SKIP_HOOKS)
    first = settle(repo)
    assert [c["settled"] for c in first["commits"]] == [300, 450]  # both priced at base_rate 150
    one(repo, "b.py", "fix: with the new rules", env=SKIP_HOOKS)
    second = settle(repo)
    assert second["base"] == first["tip"]
    assert [(c["settled"], c["flag"]) for c in second["commits"]] == [(600, "never provisionally paid")]


# --- a never-merged branch expires ----------------------------------------------------------------------
def test_never_merged_branch_expires_after_the_ttl(repo: Path) -> None:
    on_merge(repo, ttl=3600)
    git(repo, "switch", "-q", "-c", "abandoned")
    one(repo, "a.py", "fix: never merged")
    git(repo, "switch", "-q", "main")
    assert wallet(repo)["provisional"] == 450
    soon = datetime.now(UTC) + timedelta(minutes=30)
    assert settle(repo, at=soon)["expired"] == []
    assert wallet(repo)["provisional"] == 450
    later = datetime.now(UTC) + timedelta(hours=2)
    data = settle(repo, at=later)
    assert [(e["agent"], e["amount"]) for e in data["expired"]] == [("claude", 450)]
    assert data["totals"]["expired"] == 450
    w = wallet(repo)
    assert (w["balance"], w["provisional"], w["earned"]) == (10000, 0, 0)
    assert settle(repo, at=later)["expired"] == []  # once
    assert len(kinds(repo, "void")) == 1
    doctor_ok(repo)


def test_a_late_landing_after_expiry_still_settles(repo: Path) -> None:
    on_merge(repo, ttl=3600)
    git(repo, "switch", "-q", "-c", "slow")
    one(repo, "a.py", "fix: reviewed slowly")
    git(repo, "switch", "-q", "main")
    later = datetime.now(UTC) + timedelta(hours=2)
    assert settle(repo, at=later)["totals"]["expired"] == 450
    merge(repo, "slow", "merge")
    data = settle(repo, at=later)
    assert [(c["settled"], c["provisional"], c["flag"]) for c in work(data)] == [
        (450, 0, "never provisionally paid")]
    assert wallet(repo)["balance"] == 10450


# --- a squash-merged PR settles once -------------------------------------------------------------------
def _squash_github(repo: Path) -> None:
    """GitHub's squash: one commit on main whose message lists the PR's commits, trailers included."""
    log = git(repo, "log", "--reverse", "--format=* %B", "main..topic")
    git(repo, "switch", "-q", "main")
    git(repo, "merge", "-q", "--squash", "topic")
    subprocess.run(["git", "commit", "-q", "--no-verify", "-m", f"feat: the topic (#1)\n\n{log}"], cwd=repo,
                   check=True, env={**os.environ, **SKIP_HOOKS})


def _squash_local(repo: Path) -> None:
    """`git merge --squash` and a commit with the hooks (the message quotes the commits, indented)."""
    git(repo, "switch", "-q", "main")
    git(repo, "merge", "-q", "--squash", "topic")
    commit(repo, "--no-edit")


@pytest.mark.parametrize("squash", [_squash_github, _squash_local], ids=["github", "local"])
def test_squash_merged_pr_settles_once(repo: Path, squash: Any) -> None:
    on_merge(repo)
    git(repo, "switch", "-q", "-c", "topic")
    fix = one(repo, "a.py", "fix: a")
    docs = one(repo, "b.py", "docs: b")
    assert wallet(repo)["provisional"] == 450 + 330
    squash(repo)
    data = settle(repo)
    mine = work(data)
    # one landed commit, priced once by its own message (the best keyword of the squash: fix, x1.5)
    assert [(c["settled"], c["provisional"], c["difference"], c["flag"]) for c in mine] == [
        (450, 780, -330, "overpaid")]
    w = wallet(repo)
    assert (w["balance"], w["provisional"], w["earned"]) == (10450, 0, 450)
    assert len(kinds(repo, "earn")) == 1 and len(kinds(repo, "void")) == 2
    # the squashed commits landing again (someone merges the topic branch too) are the same change
    git(repo, "merge", "-q", "--no-ff", "--no-verify", "-s", "ours", "topic", "-m", "Merge topic again",
        env=SKIP_HOOKS)
    again = settle(repo)
    assert [(c["sha"], c["flag"]) for c in work(again)] == [(fix, "already settled"), (docs, "already settled")]
    assert again["totals"]["settled"] == 0 and wallet(repo)["balance"] == 10450
    doctor_ok(repo)


# --- a revert claws back -------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["direct", "merge", "squash"])
def test_revert_on_main_claws_back_exactly_once(repo: Path, how: str) -> None:
    on_merge(repo)
    git(repo, "switch", "-q", "-c", "topic")
    one(repo, "a.py", "fix: a")
    one(repo, "b.py", "docs: b")
    if how == "squash":
        _squash_github(repo)
        expected = Decimal(450)
    else:
        merge(repo, "topic", "merge" if how == "merge" else "rebase")
        expected = Decimal(450 + 330)
    assert settle(repo)["totals"]["settled"] == expected
    assert wallet(repo)["balance"] == 10000 + expected
    # revert what landed: the merge commit (-m 1), else the tip commit (direct: only "docs: b")
    args = ["-m", "1", "HEAD"] if how == "merge" else ["HEAD"]
    subprocess.run(["git", "revert", "--no-edit", *args], cwd=repo, check=True, capture_output=True,
                   env={**os.environ, **SKIP_HOOKS})
    clawed = expected if how != "direct" else Decimal(330)
    data = settle(repo)
    assert sum(c["amount"] for c in data["clawbacks"]) == clawed
    assert data["totals"]["clawed_back"] == clawed
    w = wallet(repo)
    assert w["balance"] == 10000 + expected - clawed
    assert settle(repo)["clawbacks"] == [] and wallet(repo)["balance"] == w["balance"]  # once
    doctor_ok(repo)


def test_clawback_of_spent_tokens_leaves_a_debt_that_doctor_accepts(repo: Path) -> None:
    on_merge(repo, edits={"starting_balance = 10000": "starting_balance = 0", "reserve = 500": "reserve = 0"})
    one(repo, "a.py", "fix: a", env=SKIP_HOOKS)
    assert settle(repo)["totals"]["settled"] == 450
    r = tx("llm", "claude", "coding", "30000", cwd=repo)  # 30,000 tokens of claude-opus at 15/1K = 450
    assert r.code == 0, r.err
    subprocess.run(["git", "revert", "--no-edit", "HEAD"], cwd=repo, check=True, capture_output=True,
                   env={**os.environ, **SKIP_HOOKS})
    assert settle(repo)["totals"]["clawed_back"] == 450
    assert wallet(repo)["balance"] == -450  # the award is gone; what it paid for stays spent: a debt
    doctor_ok(repo)
    r = tx("llm", "claude", "coding", "100", cwd=repo)
    assert r.code == 1 and "Insufficient funds" in r.err


# --- keyword stuffing is held by the caps --------------------------------------------------------------
def test_keyword_stuffing_is_held_by_the_daily_cap(repo: Path) -> None:
    on_merge(repo, caps="commits = { daily = 1000 }")
    git(repo, "switch", "-q", "-c", "stuffed")
    outs = []
    for n in range(5):
        change(repo, f"s{n}.py")
        outs.append(commit(repo, "-m", f"security hotfix: critical urgent fix {n}"))
    assert wallet(repo)["provisional"] == 1000  # 600 + 400 + 0 + 0 + 0, already at commit time
    assert "daily commits cap 1000" in outs[1]
    merge(repo, "stuffed", "merge")
    data = settle(repo)
    mine = work(data)
    assert [c["settled"] for c in mine] == [600, 400, 0, 0, 0]
    assert "daily commits cap 1000" in mine[1]["reason"]
    ex = Exchange(repo / ".exchange")
    try:
        cut = [t for t in ex.ledger.fresh().iter_txns(["earn"]) if "cap" in t.breakdown]
        assert [(t.breakdown["uncapped"], t.amount) for t in cut][:1] == [("600", 400 * 10_000)]
    finally:
        ex.close()
    w = wallet(repo)
    assert (w["balance"], w["earned"], w["provisional"]) == (11000, 1000, 0)
    r = tx("limits", "claude", "--json", cwd=repo)
    assert r.code == 0, r.err
    caps = json.loads(r.out, parse_float=Decimal)["caps"]
    assert caps == [{"source": "commits", "window": "daily", "limit": 1000, "earned": 1000, "remaining": 0}]
    table = tx("limits", "claude", cwd=repo)
    assert "earning cap: commits daily" in table.out


# --- provisional tokens are not spendable unless the config says so ----------------------------------
def test_provisional_tokens_are_held_back_from_spending(repo: Path) -> None:
    on_merge(repo)
    git(repo, "switch", "-q", "-c", "work")
    one(repo, "a.py", "fix: a")  # 450 provisional
    lim = json.loads(tx("limits", "claude", "--json", cwd=repo).out, parse_float=Decimal)
    assert lim["provisional_held_back"] == 450 and lim["balance"] == 10450
    assert lim["available"] == 500  # the burst limit; the reserve is measured on the settled 10000
    # spend all but the reserve of the settled tokens: 9500 in burst-sized steps on a fixed clock's days
    day = datetime(2026, 3, 1, tzinfo=UTC)
    with contextlib.chdir(repo):
        for n in range(19):
            r = tx_at((day + timedelta(days=n)).isoformat(), "llm", "claude", "coding", "33333", "--id", f"r{n}")
            assert r.code == 0, r.err
        r = tx_at((day + timedelta(days=30)).isoformat(), "llm", "claude", "coding", "1000")
    assert r.code == 1
    assert "emergency reserve" in r.err and "450.0 provisional not spendable until settled" in r.err


# --- two clones settle and sync without a double payment ------------------------------------------------
def test_two_clones_settle_and_sync_without_double_payment(tmp_path: Path) -> None:
    from tests.test_notes import make_remote

    _, (a, b) = make_remote(tmp_path, 2)
    for clone in (a, b):
        shutil.rmtree(clone / ".exchange")  # make_remote's untracked homes: this config is tracked
    on_merge(a, "notes", edits={'project = ""': 'project = "nexushive-setup"'})  # the remote is remote.git
    git(a, "push", "-q", "origin", "main")
    git(b, "pull", "-q", "origin", "main")
    assert tx("init", "--backend", "notes", cwd=b).code == 0
    git(a, "switch", "-q", "-c", "topic")
    one(a, "a.py", "fix: a")
    one(a, "b.py", "docs: b")
    merge(a, "topic", "merge")
    git(a, "push", "-q", "origin", "main")
    assert tx("sync", cwd=a).code == 0  # a's provisional awards reach the remote
    git(b, "pull", "-q", "origin", "main")
    first_b = settle(b)  # b has not fetched the notes: it settles without knowing the provisional awards
    assert [c["flag"] for c in work(first_b)] == ["never provisionally paid"] * 2
    first_a = settle(a)
    assert [c["flag"] for c in work(first_a)] == ["settled", "settled"]
    for clone in (a, b, a, b):
        r = tx("sync", cwd=clone)
        assert r.code == 0, r.err
    for clone in (a, b):
        assert settle(clone)["written"] == 0  # nothing new, in either clone, after the sync
        earns = kinds(clone, "earn")
        assert sorted(e[2] for e in earns) == [0, 330, 450]  # 0: the merge commit (merges earn nothing)
        assert len({e[0] for e in earns}) == len(earns)
        w = wallet(clone)
        assert (w["balance"], w["provisional"], w["earned"]) == (10780, 0, 780)
        doctor_ok(clone)
    # the same history settled to the same records: every earn and marker is one record line in the notes
    from tests.test_notes import record_lines

    lines = [r for r in record_lines(a) if r["kind"] in ("earn", "marker")]
    assert len(lines) == len({r["id"] for r in lines})


# --- conventions -----------------------------------------------------------------------------------------
def test_settle_in_immediate_mode_says_there_is_nothing_to_settle(repo: Path) -> None:
    assert tx("init", cwd=repo).code == 0
    git(repo, "add", ".exchange/config.toml")
    git(repo, "commit", "-q", "--no-verify", "-m", "chore: the exchange")
    data = settle(repo)
    assert data["commits"] == [] and data["marker"] is None and data["mode"] == "immediate"
    assert "nothing to settle" in data["notes"][0]


@pytest.mark.parametrize("args", [["--branch", "../main"], ["--rev", "no-such-rev"], ["--branch", "nope"],
                                  ["--config-path", "a\nb"]])
def test_settle_refuses_bad_arguments_in_one_line(repo: Path, args: list[str]) -> None:
    on_merge(repo)
    r = tx("settle", *args, cwd=repo)
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err, r.err


def test_a_hook_that_ignored_on_merge_is_reported_not_paid_again(repo: Path) -> None:
    """A branch that switched its own config back to immediate (and raised its rate) got an earn from its
    hook; settlement pays nothing more and reports it as paid outside settlement, with the rules' figure."""
    on_merge(repo)
    git(repo, "switch", "-q", "-c", "sneaky")
    cfg = repo / ".exchange" / "config.toml"
    cfg.write_text(cfg.read_text().replace('mode = "on-merge"', 'mode = "immediate"', 1)
                   .replace("base_rate = 150", "base_rate = 5000", 1))
    git(repo, "add", ".exchange/config.toml")
    commit(repo, "-m", "fix: immediate again")  # an immediate earn of 5000 x 2.0 x 1.5
    assert wallet(repo)["earned"] == 15000
    merge(repo, "sneaky", "merge")
    data = settle(repo)
    [line] = work(data)
    assert (line["flag"], line["settled"]) == ("paid outside settlement", 0)
    assert "the rules pay 450" in line["reason"]
    assert wallet(repo)["earned"] == 15000  # reported for review; settlement does not pay it again


def test_catch_up_refuses_an_unprintable_since_in_one_line(repo: Path) -> None:
    """(Found by tests/test_fuzz.py: `--since` reached git's argv with a NUL and raised.)"""
    from tests.conftest import tx_inproc

    assert tx("init", cwd=repo).code == 0
    with contextlib.chdir(repo):
        r = tx_inproc("catch-up", "--since", "\x00")
    assert r.code == 1 and "--since" in r.err and len(r.err.strip().splitlines()) == 1
