"""The Python API (token_exchange.api): tokens as Decimals, the reservation context manager, refusals,
quotes against the engine, pools, threads, and the docs example run verbatim."""

from __future__ import annotations

import dataclasses
import threading
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Clock, make_ex, tx, tx_at
from token_exchange import api
from token_exchange.errors import IdConflict, Refused, UserError
from token_exchange.rules.limits import LimitRefused

ROOT = Path(__file__).resolve().parent.parent
D = Decimal
LIMITS = "[agents.claude.limits]\nhourly = 100\ndaily = 100000\nburst = 100000\nreserve = 0\n"


def open_tx(tmp_path: Path, clock: Clock, extra: str = "") -> api.Exchange:
    return api.Exchange(make_ex(tmp_path / "ex", clock, extra))


@pytest.fixture
def t(tmp_path: Path, clock: Clock) -> api.Exchange:
    return open_tx(tmp_path, clock)


# --- reading -------------------------------------------------------------------------------------
def test_amounts_are_decimal_tokens_and_results_frozen_and_readable(t: api.Exchange) -> None:
    w = t.wallet("claude")
    assert w.balance == 10000 and isinstance(w.balance, Decimal)
    assert repr(w).startswith("Wallet(agent='claude', balance=Decimal('10000'), reserved=Decimal('0'), "
                              "available=Decimal('500')")
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.balance = Decimal(1)  # type: ignore[misc]
    lim = t.limits("claude")
    assert (lim.burst, lim.reserve, lim.hourly.limit, lim.daily.limit) == (D(500), D(500), D(1000), D(10000))
    assert t.balance("claude") == 10000 and "claude" in t.agents
    assert t.price("claude-opus", 5000) == 75 and t.price("qwen2.5-coder", 1) == Decimal("0.0001")
    with pytest.raises(UserError, match="unknown agent"):
        t.wallet("nobody")


def test_history_is_signed_from_the_agents_side(t: api.Exchange) -> None:
    t.spend("claude", "claude-opus", 1000, id="h1")
    t.earn("claude", "2.5", "bd", "closed bd-7", id="issue:bd-7")
    h = t.history("claude", 2)
    assert [(e.kind, e.amount) for e in h] == [("award", Decimal("2.5")), ("spend", Decimal(-15))]


# --- the reservation context manager ---------------------------------------------------------------
def test_reserve_settles_recorded_usage_on_exit(t: api.Exchange) -> None:
    with t.reserve("claude", "claude-opus", 20000, id="r1") as r:
        assert t.wallet("claude").reserved == 300 and r.held == 300
        r.use(input_tokens=4000, output_tokens=1000)
    assert (r.info.state, r.info.cost, r.info.tokens, r.info.released) == ("settled", D(75), 5000, D(225))
    assert t.balance("claude") == 9925 and t.wallet("claude").reserved == 0


def test_reserve_voids_when_nothing_was_used(t: api.Exchange) -> None:
    with t.reserve("claude", "claude-opus", 20000) as r:
        pass
    assert r.info.state == "voided" and t.balance("claude") == 10000
    with t.reserve("claude", "claude-opus", 20000) as r:
        r.use(tokens=0)
    assert r.info.state == "voided"


def test_reserve_voids_on_an_exception_before_use_and_settles_what_was_used(t: api.Exchange) -> None:
    with pytest.raises(RuntimeError), t.reserve("claude", "claude-opus", 20000) as r:
        raise RuntimeError("the model call failed")
    assert r.info.state == "voided" and t.balance("claude") == 10000
    with pytest.raises(RuntimeError), t.reserve("claude", "claude-opus", 20000) as r2:
        r2.use(tokens=2000)
        raise RuntimeError("parsing the reply failed")  # the tokens were consumed all the same
    assert r2.info.state == "settled" and r2.info.cost == 30 and t.balance("claude") == 9970


def test_a_refused_reservation_raises_before_the_block_and_writes_nothing(tmp_path: Path, clock: Clock) -> None:
    t = open_tx(tmp_path, clock, "[agents.claude.limits]\nhourly = 100\n")
    ledger = t.home / "ledger.toml"
    before = ledger.read_bytes()
    ran = False
    with pytest.raises(LimitRefused, match=r"Hourly limit reached \(0.0/100 used, need 150.0\)"), \
            t.reserve("claude", "claude-opus", 10000):
        ran = True
    assert not ran and ledger.read_bytes() == before


def test_usage_above_the_maximum_is_charged_outside_the_limits(t: api.Exchange) -> None:
    with t.reserve("claude", "claude-opus", 1000, id="small") as r:
        r.use(input_tokens=1500, output_tokens=500)  # 2000 tokens on a 1000-token reservation
    assert (r.info.state, r.info.held, r.info.cost, r.info.over) == ("settled", D(15), D(30), D(15))
    assert t.balance("claude") == 9970
    over = t.svc.ledger.get("llm:small:over")
    assert over is not None and over.kind == "spend"
    assert tx("--home", str(t.home), "doctor").code == 0
    # the CLI keeps refusing it (exit 1), as before
    t.reserve("claude", "claude-opus", 1000, id="cli")
    r2 = tx_at("2026-01-01T12:00:00Z", "--home", str(t.home), "llm", "settle", "cli", "--tokens", "2000")
    assert r2.code == 1 and "more than its maximum 1000" in r2.err


def test_explicit_settle_void_and_their_errors(t: api.Exchange) -> None:
    r = t.reserve("claude", "claude-sonnet", 10000, id="x")
    assert t.reservation("x").state == "open"
    assert t.settle("x", input_tokens=1000, output_tokens=1000).cost == 6
    with pytest.raises(UserError, match="already settled"):
        t.void("x")
    with pytest.raises(UserError, match="nothing used"):
        t.settle(t.reserve("claude", None, 10).id, tokens=0)
    with pytest.raises(UserError, match="unknown reservation"):
        t.void("missing")
    assert r.id == "x"


# --- spend, earn, transfer -----------------------------------------------------------------------
def test_spend_prices_input_and_output_apart_and_is_idempotent(tmp_path: Path, clock: Clock) -> None:
    t = open_tx(tmp_path, clock, '[models."split"]\ncost_per_1k = 15\ninput_per_1k = 3\noutput_per_1k = 15\n')
    s = t.spend("claude", "split", input_tokens=4000, output_tokens=1000, id="q1")
    assert (s.cost, s.tokens, s.output_tokens, s.created) == (D(27), 5000, 1000, True)
    again = t.spend("claude", "split", input_tokens=4000, output_tokens=1000, id="q1")
    assert not again.created and t.balance("claude") == 10000 - 27
    with pytest.raises(IdConflict):
        t.spend("claude", "split", tokens=10, id="q1")
    assert t.spend("builder", None, 10000, task="planning").model == "claude-sonnet"  # the agent's preference


@pytest.mark.parametrize("kwargs,msg", [({"tokens": 0}, "greater than 0"), ({"tokens": -5}, "negative"),
                                        ({"tokens": "lots"}, "not a whole number"), ({"tokens": True}, "whole number"),
                                        ({"tokens": 1.5}, "whole number"), ({}, "give the tokens used"),
                                        ({"tokens": 5, "input_tokens": 5}, "not both"),
                                        ({"tokens": 5, "output_tokens": 6}, "between 0 and the token count")])
def test_bad_token_counts_are_one_line_user_errors(t: api.Exchange, kwargs: dict[str, object], msg: str) -> None:
    before = (t.home / "ledger.toml").read_bytes()
    with pytest.raises(UserError, match=msg) as e:
        t.spend("claude", "claude-opus", **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(e.value)
    assert (t.home / "ledger.toml").read_bytes() == before


def test_earn_pays_tokens_once_per_id_and_refuses_floats(t: api.Exchange) -> None:
    e = t.earn("builder", Decimal("178.2"), "beads", "closed bd-12", id="issue:bd-12")
    assert (e.amount, e.created, e.balance) == (Decimal("178.2"), True, Decimal("10178.2"))
    assert not t.earn("builder", "178.2", "beads", "closed bd-12", id="issue:bd-12").created
    with pytest.raises(UserError, match="not a float"):
        t.earn("builder", 0.1, "beads", "x")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="more than 4 decimal places"):
        t.earn("builder", "0.00001", "beads", "x")


def test_transfer_moves_tokens_once_under_the_payers_limits(t: api.Exchange) -> None:
    done = t.transfer("claude", "builder", "5.5", "thanks for the review", id="tip-1")
    assert (done.payer, done.payee, done.amount, done.created) == ("claude", "builder", D("5.5"), True)
    assert done.balance == D("9994.5") and t.balance("builder") == D("10005.5")
    again = t.transfer("claude", "builder", "5.5", "thanks for the review", id="tip-1")
    assert not again.created and t.balance("claude") == D("9994.5")  # the same id moves once
    assert [(e.kind, e.amount, e.payee) for e in t.history("claude", 1)] == [("transfer", D("-5.5"), "builder")]
    with pytest.raises(Refused, match="burst"):
        t.transfer("claude", "builder", 600, "too much at once")  # the seed's burst limit is 500
    with pytest.raises(UserError, match="two different agents"):
        t.transfer("claude", "claude", 1, "to myself")
    with pytest.raises(UserError, match="float"):
        t.transfer("claude", "builder", 1.5, "a float")  # type: ignore[arg-type]
    assert t.balance("claude") == D("9994.5")


# --- limits as a guard sees them -----------------------------------------------------------------------
def test_check_says_why_work_may_not_start_and_when_it_may(tmp_path: Path, clock: Clock) -> None:
    t = open_tx(tmp_path, clock, LIMITS)
    assert t.check("claude") == api.Verdict("claude", True)
    t.spend("claude", "claude-opus", 6000, id="a")  # 90 of the hourly 100
    clock.advance(minutes=10)
    t.spend("claude", "claude-opus", 600, id="b")  # 9 more: 99
    assert t.check("claude").allowed
    v = t.check("claude", "2")
    assert not v.allowed and v.limit == "hourly" and v.frees_at == "2026-01-01T13:00:00Z"
    assert v.reason == ("Hourly limit reached (99.0/100 used, need 2.0); enough frees up at 2026-01-01T13:00:00Z "
                        "(in 50m 00s)")
    u = open_tx(tmp_path / "u", clock, "[agents.zero.limits]\nreserve = 10000\n")
    v = u.check("zero")
    assert not v.allowed and v.limit == "reserve" and v.reason is not None and "emergency reserve" in v.reason


# --- quotes: the engine's own numbers ------------------------------------------------------------------
def test_commit_quote_is_what_the_commit_then_pays(t: api.Exchange) -> None:
    q = t.quote_commit("fix: parser drops the last token", agent="claude", project="nexushive-setup")
    assert (q.status, q.amount, q.contract, q.multiplier, q.bonus, q.keyword) == \
        ("pay", D(450), "nexushive-setup", D("2.0"), D("1.5"), "fix")
    paid = t.svc.commit("claude@aygp-dr.ai", "nexushive-setup", "fix: parser drops the last token", sha="abc1")
    assert Decimal(paid.amount) / 10000 == q.amount
    assert t.quote_commit("Merge branch 'x'", author="claude@aygp-dr.ai", parents=2).status == "excluded"
    assert t.quote_commit("x", author="stranger@example.com").status == "unmatched"
    with pytest.raises(UserError, match="either agent or author"):
        t.quote_commit("x")


def test_commit_quote_defaults_to_the_project_a_hook_would_use(t: api.Exchange, repo: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo)  # a repository named nexushive-setup: contract x2
    q = t.quote_commit("docs: readme", agent="claude")
    assert (q.project, q.contract, q.amount) == ("nexushive-setup", "nexushive-setup", D(330))
    monkeypatch.chdir(repo.parent)
    assert t.quote_commit("docs: readme", agent="claude").contract == "default"


def test_issue_quote_uses_the_seed_tables(t: api.Exchange) -> None:
    q = t.quote_issue(1, "bug")
    assert (q.priority, q.amount, q.multiplier) == ("P1", D(750), D("1.5"))
    assert t.quote_issue("P3", "task", ["security"]).amount == 300  # a label named after a type counts
    with pytest.raises(UserError, match="invalid priority"):
        t.quote_issue("urgent")


# --- pools ---------------------------------------------------------------------------------------------
def test_pool_operations_in_tokens(t: api.Exchange) -> None:
    created = t.pool_create("opus-team", "claude", 100)
    assert created.changed and not t.pool_create("opus-team", "claude", "100").changed
    assert t.pool_join("opus-team", "builder").pool.members == ("claude", "builder")
    assert t.pool_contribute("opus-team", "claude", 500).pool_balance == 500
    t.pool_contribute("opus-team", "claude", "100")
    assert t.pool_contribute("opus-team", "builder", Decimal(400), id="b1").amount == 400
    s = t.pool_spend("opus-team", "gemini-pro", 50000, "complex analysis")
    assert s.cost == 100 and s.credits == {"builder": 40, "claude": 60}
    p = t.pool("opus-team")
    assert p.balance == 900
    assert [(c.agent, c.stake) for c in p.contributors] == [("builder", D(360)), ("claude", D(540))]
    assert [x.name for x in t.pools()] == ["opus-team"]
    assert t.pool_leave("opus-team", "builder").refunds == {"builder": 360}
    d = t.pool_dissolve("opus-team")
    assert d.refunds == {"claude": 540} and d.dissolved
    with pytest.raises(UserError, match="dissolved"):
        t.pool_contribute("opus-team", "claude", 100)


# --- threads share one Exchange ------------------------------------------------------------------------
def test_threads_sharing_an_exchange_never_break_a_limit(tmp_path: Path, clock: Clock) -> None:
    t = open_tx(tmp_path, clock, LIMITS)
    start = threading.Barrier(16)
    outcomes: list[str] = []

    def work(n: int) -> None:
        start.wait()
        try:
            with t.reserve("claude", "claude-opus", 1000, id=f"t{n}") as r:  # 15 each: 6 fit in 100
                r.use(tokens=1000)
            outcomes.append("ok")
        except Refused:
            outcomes.append("refused")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert outcomes.count("ok") == 6 and outcomes.count("refused") == 10
    assert t.limits("claude").hourly.used == 90 and t.balance("claude") == 10000 - 90


# --- property: whatever a block does, no hold is left and the money adds up ----------------------------
flows = st.lists(st.tuples(st.integers(1, 30000), st.one_of(st.none(), st.integers(0, 40000)), st.booleans()),
                 min_size=1, max_size=8)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flows)
def test_reservation_blocks_leave_nothing_open(tmp_path_factory: pytest.TempPathFactory,
                                               steps: list[tuple[int, int | None, bool]]) -> None:
    t = open_tx(tmp_path_factory.mktemp("p"), Clock(), "[agents.claude.limits]\nhourly = 100000\n"
                "daily = 1000000\nburst = 100000\nreserve = 0\n")
    charged = Decimal(0)
    for max_tokens, used, fail in steps:
        try:
            with t.reserve("claude", "claude-sonnet", max_tokens) as r:
                if used is not None:
                    r.use(tokens=used)
                if fail:
                    raise KeyError("boom")
        except KeyError:
            pass
        charged += r.info.cost
        if used:
            assert r.info.state == "settled" and r.info.cost == t.price("claude-sonnet", used)
        else:
            assert r.info.state == "voided"
    w = t.wallet("claude")
    assert w.reserved == 0 and w.balance == 10000 - charged
