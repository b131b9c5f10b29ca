"""Team pools: membership, contributions under limits, exact proportional credit, leave/dissolve refunds."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Clock, Result, make_ex, tx, tx_at
from token_exchange.amounts import SCALE
from token_exchange.errors import IdConflict, Refused, UserError
from token_exchange.ledger.doctor import check
from token_exchange.rules.limits import LimitRefused
from token_exchange.services import pools
from token_exchange.services.exchange import Exchange


def team(ex: Exchange, clock: Clock, a: int = 600, b: int = 400) -> None:
    pools.create(ex, "opus-team", "claude", "100")
    pools.join(ex, "opus-team", "builder")
    for who, amount in (("claude", a), ("builder", b)):
        while amount:  # contributions obey burst 500 and the hourly 1000
            part = min(amount, 300)
            pools.contribute(ex, "opus-team", who, str(part))
            amount -= part
    clock.advance(hours=1)


def test_seed_60_40_split(ex: Exchange, clock: Clock) -> None:
    ex4 = ex
    team(ex4, clock)
    # The seed: A 600 + B 400, the pool spends 100 -> A 60%, B 40%
    s = pools.spend(ex4, "opus-team", "gemini-pro", 50000, "seed: spend 100")  # 2/1K x 50,000 = 100
    assert s.txn.amount == 100 * SCALE
    assert s.credits == {"claude": 60 * SCALE, "builder": 40 * SCALE}
    b = ex4.balance("claude")
    assert b.by_kind["credit"] == 60 * SCALE and b.by_kind["contribute"] == 600 * SCALE
    d = pools.show(ex4, "opus-team").to_json()
    byagent = {c["agent"]: c for c in d["contributors"]}
    assert byagent["claude"]["credit"] == 60 and byagent["builder"]["credit"] == 40
    assert byagent["claude"]["stake"] == 540 and byagent["builder"]["stake"] == 360
    assert d["balance"] == 900 and d["spent"] == 100 and d["spends"] == 1
    # the pool spend moves pool money to world:llm; credit entries are memos that move no agent's money
    idx = ex4.ledger.fresh()
    assert idx.account("pool:opus-team") == 900 * SCALE
    assert ex4.balance("claude").balance == 9400 * SCALE
    t = idx.get(s.txn.id)
    assert (t.kind, t.payer, t.payee, t.source["model"], t.source["tokens"], t.breakdown["price_per_1k"]) == \
        ("pool_spend", "pool:opus-team", "world:llm", "gemini-pro", 50000, "2")


def test_rounded_spend_credits_sum_exactly(ex: Exchange, clock: Clock) -> None:
    team(ex, clock)
    s = pools.spend(ex, "opus-team", "claude-opus", 6667, "100.005 tokens")
    assert s.txn.amount == 1000050
    assert s.credits == {"claude": 600030, "builder": 400020} and sum(s.credits.values()) == s.txn.amount


def test_largest_remainder_for_the_last_unit(ex: Exchange, clock: Clock) -> None:
    pools.create(ex, "trio", "claude", "0")
    for who in ("builder", "lambda"):
        pools.join(ex, "trio", who)
    for who in ("claude", "builder", "lambda"):
        pools.contribute(ex, "trio", who, "100")
    s = pools.spend(ex, "trio", "llama3.2", 1, "one unit")  # 0.0001 tokens = 1 unit for three equal stakes
    assert s.txn.amount == 1
    assert s.credits == {"builder": 1}  # equal remainders: ties broken by name
    s = pools.spend(ex, "trio", "llama3.2", 2, "two units")
    assert sum(s.credits.values()) == 2 and set(s.credits) == {"claude", "lambda"}  # builder's stake is now smaller


def test_pool_spend_exceeds_a_single_agents_burst(ex: Exchange, clock: Clock) -> None:
    team(ex, clock)
    s = pools.spend(ex, "opus-team", "claude-opus", 44000, "bigger than any burst")  # 660 > burst 500
    assert s.txn.amount == 660 * SCALE and sum(s.credits.values()) == 660 * SCALE
    with pytest.raises(Refused, match=r"Insufficient pool funds \(pool opus-team has 340, need 660\)"):
        pools.spend(ex, "opus-team", "claude-opus", 44000, "again")


def test_contributions_obey_the_members_limits(tmp_path: Path, clock: Clock) -> None:
    ex = make_ex(tmp_path / "ex", clock, "[agents.zero.limits]\nreserve = 9800\n")
    pools.create(ex, "p", "claude", "10")
    pools.join(ex, "p", "zero")
    with pytest.raises(LimitRefused, match=r"Exceeds burst limit \(600.0 > 500\)"):
        pools.contribute(ex, "p", "claude", "600")
    pools.contribute(ex, "p", "claude", "500")
    pools.contribute(ex, "p", "claude", "500")
    with pytest.raises(LimitRefused, match=r"Hourly limit reached \(1000.0/1000 used, need 10.0\)"):
        pools.contribute(ex, "p", "claude", "10")
    with pytest.raises(LimitRefused, match="emergency reserve"):
        pools.contribute(ex, "p", "zero", "201")
    pools.contribute(ex, "p", "zero", "200")


def test_membership_minimum_and_errors_change_nothing(ex: Exchange, clock: Clock) -> None:
    pools.create(ex, "p", "claude", "100")
    journal = ex.home / "ledger.toml"
    before = journal.read_bytes()
    bad = [(lambda: pools.contribute(ex, "p", "builder", "200"), "not a member"),
           (lambda: pools.contribute(ex, "p", "claude", "99.9999"), "below pool p's minimum 100"),
           (lambda: pools.contribute(ex, "p", "claude", "0"), "greater than 0"),
           (lambda: pools.contribute(ex, "p", "claude", "-5"), "negative"),
           (lambda: pools.contribute(ex, "p", "claude", "abc"), "not a number"),
           (lambda: pools.contribute(ex, "nope", "claude", "200"), "unknown pool"),
           (lambda: pools.join(ex, "nope", "builder"), "unknown pool"),
           (lambda: pools.join(ex, "p", "nobody"), "unknown agent"),
           (lambda: pools.spend(ex, "p", "gpt-9", 10, "x"), "unknown model"),
           (lambda: pools.spend(ex, "p", "claude-opus", 0, "x"), "greater than 0"),
           (lambda: pools.spend(ex, "p", "claude-opus", 10, "x"), "Insufficient pool funds"),
           (lambda: pools.leave(ex, "p", "builder"), "not a member"),
           (lambda: pools.create(ex, "p", "builder", "5"), "already exists"),
           (lambda: pools.create(ex, "Bad Name", "claude", "5"), "invalid pool name"),
           (lambda: pools.show(ex, "nope"), "unknown pool")]
    for call, msg in bad:
        with pytest.raises(UserError, match=msg):
            call()
    assert journal.read_bytes() == before
    # repeats are no-ops
    assert pools.create(ex, "p", "claude", "100")[1] is False
    pools.join(ex, "p", "builder")
    assert pools.join(ex, "p", "builder")[1] is False
    c1 = pools.contribute(ex, "p", "builder", "200", id="c1")
    c2 = pools.contribute(ex, "p", "builder", "200", id="c1")
    assert c1.created and not c2.created and ex.balance("builder").balance == 9800 * SCALE
    with pytest.raises(IdConflict):
        pools.contribute(ex, "p", "builder", "300", id="c1")


def test_leave_refunds_the_unspent_stake(ex: Exchange, clock: Clock) -> None:
    team(ex, clock)
    pools.spend(ex, "opus-team", "gemini-pro", 50000, "100")
    r = pools.leave(ex, "opus-team", "builder")
    assert r.refunds == {"builder": 360 * SCALE}
    assert ex.balance("builder").balance == (10000 - 400 + 360) * SCALE
    st = pools.show(ex, "opus-team")
    assert st.members == ["claude"] and st.balance == 540 * SCALE
    with pytest.raises(UserError, match="not a member"):
        pools.contribute(ex, "opus-team", "builder", "100")
    # a later spend is credited to the remaining stake only
    s = pools.spend(ex, "opus-team", "gemini-pro", 50000, "100 more")
    assert s.credits == {"claude": 100 * SCALE}
    # rejoining works; the old credit history stays
    pools.join(ex, "opus-team", "builder")
    assert pools.show(ex, "opus-team").credited["builder"] == 40 * SCALE


def test_dissolve_refunds_exactly_and_closes_the_pool(ex: Exchange, clock: Clock) -> None:
    team(ex, clock)
    pools.spend(ex, "opus-team", "llama3.2", 3, "odd units")  # 0.0003 tokens = 3 units split 60/40
    st = pools.show(ex, "opus-team")
    assert sum(st.stakes().values()) == st.balance
    r = pools.dissolve(ex, "opus-team")
    assert sum(r.refunds.values()) == st.balance
    assert ex.ledger.fresh().account("pool:opus-team") == 0
    assert r.pool.dissolved and r.pool.members == []
    for call in (lambda: pools.spend(ex, "opus-team", "gemini-pro", 10, "x"),
                 lambda: pools.contribute(ex, "opus-team", "claude", "100"),
                 lambda: pools.join(ex, "opus-team", "zero"),
                 lambda: pools.leave(ex, "opus-team", "claude"),
                 lambda: pools.dissolve(ex, "opus-team")):
        with pytest.raises(UserError, match="dissolved"):
            call()
    with pytest.raises(UserError, match="dissolved"):
        pools.create(ex, "opus-team", "claude", "100")
    total = sum(ex.balance(a).balance for a in ("claude", "builder"))
    assert total == 20000 * SCALE - 3  # only what the pool spent left the two wallets


def test_pool_state_survives_an_index_rebuild(ex: Exchange, clock: Clock) -> None:
    team(ex, clock)
    pools.spend(ex, "opus-team", "gemini-pro", 50000, "100")
    pools.leave(ex, "opus-team", "builder")
    before = pools.show(ex, "opus-team").to_json()
    ex.close()
    (ex.home / "index.sqlite").unlink()
    for extra in ("index.sqlite-wal", "index.sqlite-shm"):
        (ex.home / extra).unlink(missing_ok=True)
    ex2 = Exchange(ex.home, clock=clock)
    assert pools.show(ex2, "opus-team").to_json() == before
    assert check(ex2.ledger, repair=True).ok
    assert pools.show(ex2, "opus-team").to_json() == before


def test_cli_pool_commands(home: Path) -> None:
    env = "2026-01-01T12:00:00Z"
    later = "2026-01-01T13:00:00Z"

    def run(*args: str, env: str = env) -> Result:
        return tx_at(env, "--home", str(home), "pool", *args)

    assert run("create", "opus-team", "claude", "100").code == 0
    assert run("join", "opus-team", "builder").code == 0
    assert run("contribute", "opus-team", "claude", "500").code == 0
    assert run("contribute", "opus-team", "builder", "400").code == 0
    r = run("contribute", "opus-team", "claude", "100", "--json", env=later)
    assert r.code == 0 and r.json()["pool_balance"] == 1000
    r = run("spend", "opus-team", "gemini-pro", "50000", "complex analysis", "--json", env=later)
    assert r.code == 0, r.err
    assert r.json()["cost"] == 100 and r.json()["credits"] == {"builder": 40, "claude": 60}
    r = run("show", "opus-team", "--json")
    d = r.json()
    assert [(c["agent"], c["credit"], c["stake"], c["share_percent"]) for c in d["contributors"]] == \
        [("builder", 40, 360, 40), ("claude", 60, 540, 60)]
    assert "opus-team" in run("show", "opus-team").out
    r = tx("--home", str(home), "balance", "claude", "--json")
    assert r.json()["by_kind"]["credit"] == 60 and r.json()["by_kind"]["contribute"] == 600
    r = tx("--home", str(home), "balance")
    assert "Pool credit" in r.out
    r = run("list", "--json")
    assert [p["pool"] for p in r.json()] == ["opus-team"]
    for args, msg in ((("contribute", "opus-team", "zero", "200"), "not a member"),
                      (("contribute", "opus-team", "claude", "-5"), "negative"),
                      (("contribute", "opus-team", "claude", "50"), "minimum"),
                      (("spend", "opus-team", "gemini-pro", "0", "x"), "greater than 0"),
                      (("join", "ghost", "zero"), "unknown pool")):
        r = run(*args, env=later)
        assert r.code == 1 and msg in r.err and len(r.err.strip().splitlines()) == 1, (args, r.err)
    r = run("leave", "opus-team", "builder", "--json", env=later)
    assert r.code == 0 and r.json()["refunds"] == {"builder": 360}
    r = run("dissolve", "opus-team", "--json", env=later)
    assert r.code == 0 and r.json()["refunds"] == {"claude": 540} and r.json()["dissolved"] is True
    r = run("spend", "opus-team", "gemini-pro", "10", "x", env=later)
    assert r.code == 1 and "dissolved" in r.err
    assert tx("--home", str(home), "doctor").code == 0


# --- property: shares always sum, stakes always equal the pool balance, nobody goes negative ------
pool_ops = st.lists(st.one_of(
    st.tuples(st.just("contribute"), st.sampled_from(["claude", "builder", "lambda"]), st.integers(1, 5000000)),
    st.tuples(st.just("spend"), st.just(""), st.integers(1, 60000)),
    st.tuples(st.just("join"), st.sampled_from(["builder", "lambda"]), st.just(0)),
    st.tuples(st.just("leave"), st.sampled_from(["claude", "builder", "lambda"]), st.just(0)),
    st.tuples(st.just("wait"), st.just(""), st.integers(60, 7200)),
), min_size=1, max_size=30)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pool_ops, st.booleans())
def test_property_pool_shares_always_sum(seq: list[tuple[str, str, int]], dissolve_at_end: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        clock = Clock()
        ex = make_ex(Path(d) / "ex", clock)
        pools.create(ex, "p", "claude", "0")
        for op, who, n in seq:
            try:
                if op == "contribute":
                    pools.contribute(ex, "p", who, n)  # n units
                elif op == "spend":
                    s = pools.spend(ex, "p", "gemini-pro", n, "work")
                    assert sum(s.credits.values()) == s.txn.amount
                    assert all(v > 0 for v in s.credits.values())
                elif op == "join":
                    pools.join(ex, "p", who)
                elif op == "leave":
                    pools.leave(ex, "p", who)
                else:
                    clock.advance(seconds=n)
            except UserError:
                pass
            state = pools.show(ex, "p")
            stakes = state.stakes()
            assert all(v >= 0 for v in stakes.values())
            assert sum(stakes.values()) == state.balance >= 0
            assert sum(state.credited.values()) == state.spent
            idx = ex.ledger.fresh()
            for agent in ("claude", "builder", "lambda"):
                assert idx.account(agent) >= ex.cfg.agent(agent).limits.reserve
        if dissolve_at_end:
            before = {a: ex.ledger.fresh().account(a) for a in ("claude", "builder", "lambda")}
            stakes = pools.show(ex, "p").stakes()
            r = pools.dissolve(ex, "p")
            assert sum(r.refunds.values()) == sum(stakes.values())
            after = {a: ex.ledger.fresh().account(a) for a in ("claude", "builder", "lambda")}
            assert all(after[a] - before[a] == stakes.get(a, 0) for a in after)
            assert ex.ledger.fresh().account("pool:p") == 0
        assert sum(ex.ledger.fresh().accounts().values()) == 0
