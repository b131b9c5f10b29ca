"""LLM spending: prices (seed figures), direct spends, two-phase reservations, the context manager, CLI."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import Clock, make_ex, tx, tx_at
from token_exchange.amounts import SCALE, to_units
from token_exchange.errors import IdConflict, Refused, UserError
from token_exchange.rules import config as config_mod
from token_exchange.rules.limits import LimitRefused
from token_exchange.services import reservations
from token_exchange.services import spending as llm
from token_exchange.services.exchange import Exchange

NOW = "2026-01-01T12:00:00Z"


def tokens(text: str) -> int:
    return to_units(text)


# --- pricing -------------------------------------------------------------------------------------
def test_seed_price_5000_opus_tokens_cost_75() -> None:
    cfg = config_mod.load(None)
    assert llm.cost(cfg.model("claude-opus"), 5000) == 75 * SCALE
    assert llm.cost(cfg.model("claude-sonnet"), 5000) == 15 * SCALE
    assert llm.cost(cfg.model("gemini-pro"), 5000) == 10 * SCALE
    assert llm.cost(cfg.model("llama3.2"), 5000) == tokens("0.5")
    assert llm.cost(cfg.model("qwen2.5-coder"), 1) == 1  # 0.0001 tokens: exactly one unit


def test_cost_rounds_up_to_a_unit() -> None:
    m = config_mod.Model("odd", Decimal("0.07"), Decimal("0.07"), Decimal("0.07"))
    # 1 token x 0.07/1000 = 0.00007 tokens = 0.7 units -> 1 unit (a charge never undercuts its price)
    assert llm.cost(m, 1) == 1
    assert llm.cost(m, 10) == 7


def test_split_input_output_prices() -> None:
    m = config_mod.Model("split", Decimal(15), Decimal(3), Decimal(15))
    price = llm.Price.of(m)
    assert price.cost(5000) == 75 * SCALE  # no split given: the blended price
    assert price.cost(5000, 1000) == (4 * 3 + 15) * SCALE  # 4000 in at 3 + 1000 out at 15
    assert price.max_cost(5000) == 75 * SCALE
    with pytest.raises(UserError):
        price.cost(10, 11)


@pytest.mark.parametrize("bad,msg", [("0", "greater than 0"), ("-5", "negative"), ("abc", "not a whole number"),
                                     ("1.5", "not a whole number"), ("", "not a whole number"),
                                     ("10000000000001", "maximum"), ("١٢", "not a whole number"),
                                     pytest.param("9" * 5000, "maximum", id="5000-digits"),
                                     pytest.param("0" * 5000 + "7", None, id="zeros-7"),
                                     pytest.param("-" + "9" * 5000, "negative", id="minus-5000-digits"),
                                     pytest.param(10**5000, "maximum", id="5000-digit-int"), (-3, "negative")])
def test_bad_token_counts(bad: str | int, msg: str | None) -> None:
    """Refused in one line, including numbers longer than int() converts (4,300 digits)."""
    if msg is None:  # leading zeros are still a number
        assert llm.parse_tokens(bad) == 7
        return
    with pytest.raises(UserError, match=msg):
        llm.parse_tokens(bad)


# --- direct spends ------------------------------------------------------------------------------
def test_spend_uses_preferred_model_and_records_price(ex: Exchange) -> None:
    r = llm.spend(ex, "builder", "planning", 10000)  # builder plans with claude-sonnet (3/1K)
    assert r.cost == 30 * SCALE and r.created
    t = r.txn
    assert (t.kind, t.payer, t.payee, t.agent) == ("spend", "builder", "world:llm", "builder")
    assert t.source["model"] == "claude-sonnet" and t.source["tokens"] == 10000 and t.source["task"] == "planning"
    assert t.breakdown["price_per_1k"] == "3"
    assert ex.balance("builder").balance == 9970 * SCALE
    # other task types fall back to the primary LLM
    assert llm.spend(ex, "builder", "review", 1000).txn.source["model"] == "qwen2.5-coder"
    assert llm.spend(ex, "builder", "review", 1000, model="gemini-pro").cost == 2 * SCALE


def test_spend_is_idempotent_by_id(ex: Exchange) -> None:
    a = llm.spend(ex, "claude", "coding", 5000, id="req-1")
    b = llm.spend(ex, "claude", "coding", 5000, id="req-1")
    assert a.created and not b.created and b.txn.id == a.txn.id
    assert ex.balance("claude").balance == 9925 * SCALE
    with pytest.raises(IdConflict):
        llm.spend(ex, "claude", "coding", 6000, id="req-1")


def test_price_change_never_rewrites_history(tmp_path: Path, clock: Clock) -> None:
    ex = make_ex(tmp_path / "ex", clock)
    first = llm.spend(ex, "claude", "coding", 5000, id="before")
    r = reservations.reserve(ex, "claude", "coding", 10000, id="held")
    text = (ex.home / "config.toml").read_text().replace("claude-opus = { cost_per_1k = 15 }",
                                                         "claude-opus = { cost_per_1k = 30 }")
    (ex.home / "config.toml").write_text(text)
    ex2 = Exchange(ex.home, clock=clock)
    assert ex2.ledger.get(first.txn.id).amount == 75 * SCALE
    assert ex2.ledger.get(first.txn.id).breakdown["price_per_1k"] == "15"
    # settle uses the price stored on the reservation, not today's price
    s = reservations.settle(ex2, r.id, 2000)
    assert s.cost == 30 * SCALE
    assert llm.spend(ex2, "claude", "coding", 1000).cost == 30 * SCALE


def test_errors_change_nothing(ex: Exchange) -> None:
    journal = ex.home / "ledger.toml"
    before = journal.read_bytes()
    for call in (lambda: llm.spend(ex, "nobody", "coding", 10),
                 lambda: llm.spend(ex, "claude", "coding", 10, model="gpt-9"),
                 lambda: llm.spend(ex, "claude", "coding", "0"),
                 lambda: llm.spend(ex, "claude", "coding", "-3"),
                 lambda: llm.spend(ex, "claude", "coding", "ten"),
                 lambda: llm.spend(ex, "claude", "coding", 44000),  # 660 > burst 500
                 lambda: llm.spend(ex, "claude", "coding", 10, id="bad id"),
                 lambda: reservations.settle(ex, "nope", 10),
                 lambda: reservations.void(ex, "nope")):
        with pytest.raises(UserError):
            call()
    assert journal.read_bytes() == before


# --- reservations -------------------------------------------------------------------------------
def test_reserve_settle_releases_the_rest(ex: Exchange) -> None:
    r = reservations.reserve(ex, "claude", "coding", 20000, id="r1")
    assert r.held == 300 * SCALE and r.state == "open" and r.expires == "2026-01-01T12:15:00Z"
    assert ex.balance("claude").balance == 9700 * SCALE  # held money left the wallet
    s = reservations.settle(ex, "r1", 5000)
    assert (s.state, s.cost, s.released) == ("settled", 75 * SCALE, 225 * SCALE)
    b = ex.balance("claude")
    assert b.balance == 9925 * SCALE and b.spent == 75 * SCALE
    idx = ex.ledger.fresh()
    assert idx.account("hold:r1") == 0 and idx.open_holds("claude") == []
    assert idx.get("llm:r1:settle").kind == "settle" and idx.get("llm:r1:settle").payee == "world:llm"
    assert idx.get("llm:r1:release").kind == "release"


def test_settle_all_of_it_writes_no_release(ex: Exchange) -> None:
    reservations.reserve(ex, "claude", "coding", 20000, id="r1")
    assert reservations.settle(ex, "r1", 20000).released == 0
    assert ex.ledger.get("llm:r1:release") is None


def test_double_settle_settle_after_void_and_too_many_tokens(ex: Exchange) -> None:
    reservations.reserve(ex, "claude", "coding", 20000, id="r1")
    with pytest.raises(Refused, match="more than its maximum 20000"):
        reservations.settle(ex, "r1", 20001)
    reservations.settle(ex, "r1", 100)
    with pytest.raises(UserError, match="already settled"):
        reservations.settle(ex, "r1", 100)
    with pytest.raises(UserError, match="already settled"):
        reservations.void(ex, "r1")
    reservations.reserve(ex, "claude", "coding", 20000, id="r2")
    v = reservations.void(ex, "r2")
    assert v.state == "voided" and v.released == 300 * SCALE
    with pytest.raises(UserError, match="voided"):
        reservations.settle(ex, "r2", 10)
    with pytest.raises(UserError, match="voided"):
        reservations.void(ex, "r2")
    assert ex.balance("claude").balance == (10000 - 1.5) * SCALE


def test_reserve_is_idempotent_and_ids_do_not_mix(ex: Exchange) -> None:
    a = reservations.reserve(ex, "claude", "coding", 20000, id="r1")
    b = reservations.reserve(ex, "claude", "coding", 20000, id="r1")
    assert a.held == b.held and ex.balance("claude").balance == 9700 * SCALE
    with pytest.raises(IdConflict):
        reservations.reserve(ex, "claude", "coding", 30000, id="r1")
    with pytest.raises(IdConflict):
        llm.spend(ex, "claude", "coding", 10, id="r1")
    llm.spend(ex, "claude", "coding", 10, id="s1")
    with pytest.raises(IdConflict):
        reservations.reserve(ex, "claude", "coding", 10, id="s1")


def test_reservation_expires_lazily_at_the_next_operation(ex: Exchange, clock: Clock) -> None:
    reservations.reserve(ex, "claude", "coding", 20000, id="r1")
    clock.advance(seconds=899)
    assert reservations.show(ex, "r1").state == "open"
    clock.advance(seconds=1)
    r = reservations.show(ex, "r1")
    assert r.state == "expired" and r.released == 300 * SCALE
    assert ex.balance("claude").balance == 10000 * SCALE
    with pytest.raises(UserError, match="expired at 2026-01-01T12:15:00Z"):
        reservations.settle(ex, "r1", 10)


def test_expiry_happens_before_a_limit_check(tmp_path: Path, clock: Clock) -> None:
    ex = make_ex(tmp_path / "ex", clock, "[agents.claude.limits]\nhourly = 400\n")
    reservations.reserve(ex, "claude", "coding", 20000, id="r1", ttl=60)  # holds 300 of the 400
    with pytest.raises(LimitRefused, match="Hourly limit reached"):
        llm.spend(ex, "claude", "coding", 10000)  # 150
    clock.advance(seconds=60)
    assert llm.spend(ex, "claude", "coding", 10000).created  # the hold expired first
    assert ex.ledger.get("llm:r1:expire").breakdown["reason"] == "expired"


def test_holds_count_against_balance_and_burst(tmp_path: Path, clock: Clock) -> None:
    ex = make_ex(tmp_path / "ex", clock, "[agents.zero.limits]\nreserve = 9500\nburst = 400\n")
    with pytest.raises(LimitRefused, match=r"Exceeds burst limit \(450.0 > 400\)"):
        reservations.reserve(ex, "zero", "x", 30000, model="claude-opus")
    reservations.reserve(ex, "zero", "x", 20000, model="claude-opus", id="a")  # 300
    with pytest.raises(LimitRefused, match="emergency reserve"):
        reservations.reserve(ex, "zero", "x", 20000, model="claude-opus", id="b")  # 9700 - 300 < 9500


# --- the context manager ------------------------------------------------------------------------
def test_context_manager_settles_recorded_usage(ex: Exchange) -> None:
    with reservations.reservation(ex, "claude", "coding", 20000) as r:
        assert ex.balance("claude").balance == 9700 * SCALE
        r.use(5000)
    assert r.state.state == "settled" and r.state.cost == 75 * SCALE
    assert ex.balance("claude").balance == 9925 * SCALE


def test_context_manager_voids_when_nothing_used_or_on_error(ex: Exchange) -> None:
    with reservations.reservation(ex, "claude", "coding", 20000) as r:
        pass
    assert r.state.state == "voided"
    with pytest.raises(RuntimeError):
        with reservations.reservation(ex, "claude", "coding", 20000) as r2:
            raise RuntimeError("model call failed")
    assert r2.state.state == "voided"
    with pytest.raises(RuntimeError):
        with reservations.reservation(ex, "claude", "coding", 20000) as r3:
            r3.use(1000)
            raise RuntimeError("failed after the call")
    assert r3.state.state == "settled" and r3.state.cost == 15 * SCALE  # consumed tokens are still paid
    assert ex.balance("claude").balance == 9985 * SCALE
    with pytest.raises(LimitRefused):
        with reservations.reservation(ex, "claude", "coding", 50000):
            pytest.fail("must not run when the reservation is refused")


def test_context_manager_explicit_settle(ex: Exchange) -> None:
    with reservations.reservation(ex, "claude", "coding", 20000, id="ctx") as r:
        r.settle(2000)
    assert ex.ledger.get("llm:ctx:settle").amount == 30 * SCALE
    with pytest.raises(Refused):
        with reservations.reservation(ex, "claude", "coding", 100) as r:
            r.use(101)


# --- CLI ----------------------------------------------------------------------------------------
def test_cli_direct_and_spend_spellings(home: Path) -> None:


    r = tx_at(NOW, "--home", str(home), "llm", "claude", "coding", "5000")
    assert r.code == 0, r.err
    assert "claude used 75 for 5000 tokens" in r.err
    r = tx_at(NOW, "--home", str(home), "llm", "spend", "claude", "coding", "5000", "--json")
    assert r.code == 0, r.err
    d = r.json()
    assert d["cost"] == 75 and d["model"] == "claude-opus" and d["tokens"] == 5000 and d["balance"] == 9850
    r = tx_at(NOW, "--home", str(home), "llm", "--json", "claude", "coding", "1000")
    assert r.code == 0 and r.json()["cost"] == 15


def test_cli_refusals_are_one_line_exit_1(home: Path) -> None:


    before = (home / "ledger.toml").read_bytes()
    cases = [(["claude", "coding", "44000"], "Exceeds burst limit (660.0 > 500)"),
             (["claude", "coding", "0"], "greater than 0"),
             (["claude", "coding", "-5"], "negative"),
             (["claude", "coding", "lots"], "not a whole number"),
             (["nobody", "coding", "5"], "unknown agent"),
             (["claude", "coding", "5", "--model", "gpt"], "unknown model")]
    for args, msg in cases:
        r = tx_at(NOW, "--home", str(home), "llm", *args)
        assert r.code == 1, (args, r.err)
        assert msg in r.err and len(r.err.strip().splitlines()) == 1, r.err
    r = tx_at(NOW, "--home", str(home), "llm", "claude", "coding", "44000", "--json")
    assert r.code == 1 and r.json() == {"error": "Exceeds burst limit (660.0 > 500); split the request or use a "
                                                 "team pool"}
    assert (home / "ledger.toml").read_bytes() == before


def test_cli_reserve_settle_void(home: Path) -> None:


    r = tx_at(NOW, "--home", str(home), "llm", "reserve", "claude", "coding", "20000")
    assert r.code == 0, r.err
    rid = r.out.strip()
    assert "reserved 300" in r.err
    r = tx_at(NOW, "--home", str(home), "llm", "settle", rid, "--tokens", "5000", "--json")
    assert r.code == 0, r.err
    assert r.json()["state"] == "settled" and r.json()["cost"] == 75 and r.json()["released"] == 225
    r = tx_at(NOW, "--home", str(home), "llm", "settle", rid, "--tokens", "5000")
    assert r.code == 1 and "already settled" in r.err
    r = tx_at(NOW, "--home", str(home), "llm", "reserve", "claude", "coding", "1000", "--id", "r2", "--json")
    assert r.json()["id"] == "r2" and r.json()["held"] == 15
    assert tx_at(NOW, "--home", str(home), "llm", "void", "r2").code == 0
    r = tx_at(NOW, "--home", str(home), "llm", "settle", "r2", "--tokens", "5")
    assert r.code == 1 and "voided" in r.err
    r = tx_at(NOW, "--home", str(home), "llm", "void", "missing")
    assert r.code == 1 and "unknown reservation" in r.err
    # later, after the TTL, an open reservation is expired by the next operation
    tx_at(NOW, "--home", str(home), "llm", "reserve", "claude", "coding", "1000", "--id", "r3")
    r = tx_at("2026-01-01T12:15:00Z", "--home", str(home), "llm", "show", "r3", "--json")
    assert r.json()["state"] == "expired"
    r = tx("--home", str(home), "balance", "claude", "--json")
    assert r.json()["balance"] == 9925
    assert tx("--home", str(home), "doctor").code == 0
