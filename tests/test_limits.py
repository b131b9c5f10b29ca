"""Rate limits: the seed's messages, rolling windows, reservations in the windows, `tx limits`, properties."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Clock, make_ex, tx, tx_at
from token_exchange.amounts import SCALE
from token_exchange.errors import UserError
from token_exchange.ledger.timestamps import ts_micros, ts_text
from token_exchange.rules import limits
from token_exchange.rules.config import Limits
from token_exchange.rules.limits import LimitRefused, Usage, check
from token_exchange.services import reservations
from token_exchange.services import spending as llm
from token_exchange.services.exchange import Exchange

SEED = Limits(hourly=1000 * SCALE, daily=10000 * SCALE, burst=500 * SCALE, reserve=500 * SCALE)


def u(tokens: str | int) -> int:
    from decimal import Decimal

    return int(Decimal(str(tokens)) * SCALE)


def usage(balance: str | int = 10000, hourly: str | int = 0, daily: str | int = 0, held: int = 0) -> Usage:
    return Usage(0, u(balance), u(hourly), u(daily), held)


# --- pure rules: the seed's messages --------------------------------------------------------------
def test_seed_messages() -> None:
    assert check(SEED, usage(), u(660)).message == "Exceeds burst limit (660.0 > 500)"
    assert check(SEED, usage(hourly=810, daily=810), u(195)).message == \
        "Hourly limit reached (810.0/1000 used, need 195.0)"
    assert check(SEED, usage(balance=600), u(195)).message == \
        "Would breach emergency reserve (600.0 - 195.0 = 405.0 < 500)"
    assert check(SEED, usage(hourly=10, daily=9900), u(195)).message == \
        "Daily limit reached (9900.0/10000 used, need 195.0)"
    assert check(SEED, usage(balance=100), u(195)).message == "Insufficient funds (balance 100.0, need 195.0)"


def test_boundaries_are_inclusive_of_the_limit() -> None:
    assert check(SEED, usage(), u(500)) is None  # burst: equal is allowed
    assert check(SEED, usage(hourly=805, daily=805), u(195)) is None  # exactly 1000
    assert check(SEED, usage(hourly=805, daily=805), u(195) + 1).limit == "hourly"  # one unit over
    assert check(SEED, usage(balance=695), u(195)) is None  # leaves exactly the reserve
    assert check(SEED, usage(balance=695), u(195) + 1).limit == "reserve"


def test_rule_order_is_the_seeds() -> None:
    # everything is wrong: burst is reported first, then reserve, then hourly, then daily
    assert check(SEED, usage(balance=100, hourly=999, daily=9999), u(600)).limit == "burst"
    assert check(SEED, usage(balance=600, hourly=999, daily=9999), u(200)).limit == "reserve"
    assert check(SEED, usage(hourly=999, daily=9999), u(200)).limit == "hourly"


def test_frees_at_walks_the_oldest_entries() -> None:
    H = limits.HOUR_US
    entries = [(100, u(300)), (200, u(300)), (300, u(210))]
    assert limits.frees_at(entries, H, u(810), 0, u(1000), u(195)) == 100 + H  # 300 frees at the first entry
    assert limits.frees_at(entries, H, u(810), 0, u(1000), u(500)) == 200 + H
    # open reservations do not free up by time alone
    assert limits.frees_at([(100, u(100))], H, u(900), u(800), u(1000), u(300)) is None


def test_duration_text() -> None:
    assert limits.duration(3_725_000_000) == "1h 02m 05s"
    assert limits.duration(1_390_000_000) == "23m 10s"
    assert limits.duration(1) == "1s"


# --- rolling windows with the injectable clock ----------------------------------------------------
def test_hourly_window_rolls_not_resets(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 1, 1, 12, 50, tzinfo=UTC))
    ex = make_ex(tmp_path / "ex", clock)
    for _ in range(2):
        llm.spend(ex, "claude", "coding", 27000)  # 405 each: 810 used
    clock.advance(minutes=15)  # 13:05: a fixed window would have reset at 13:00
    with pytest.raises(LimitRefused) as e:
        llm.spend(ex, "claude", "coding", 13000)  # 195
    msg = str(e.value)
    assert msg.startswith("Hourly limit reached (810.0/1000 used, need 195.0); enough frees up at "
                          "2026-01-01T13:50:00Z (in 45m 00s)")
    assert e.value.frees_at_us == ts_micros("2026-01-01T13:50:00.000000Z")
    clock.advance(minutes=44, seconds=59)
    with pytest.raises(LimitRefused):
        llm.spend(ex, "claude", "coding", 13000)
    clock.advance(seconds=1)  # exactly 60 minutes after the spends: they left the window
    assert llm.spend(ex, "claude", "coding", 13000).created


def test_daily_window(tmp_path: Path) -> None:
    clock = Clock()
    ex = make_ex(tmp_path / "ex", clock, "[agents.spark.limits]\nhourly = 100000\ndaily = 1000\nburst = 1000\n")
    llm.spend(ex, "spark", "x", 100000)  # sonnet 3/1K: 300
    clock.advance(hours=12)
    llm.spend(ex, "spark", "x", 200000)  # 600
    clock.advance(hours=11, minutes=59)
    with pytest.raises(LimitRefused, match=r"Daily limit reached \(900.0/1000 used, need 300.0\); enough frees up "
                                           r"at 2026-01-02T12:00:00Z \(in 1m 00s\)"):
        llm.spend(ex, "spark", "x", 100000)
    clock.advance(minutes=1)
    llm.spend(ex, "spark", "x", 100000)


def test_per_agent_overrides(tmp_path: Path) -> None:
    ex = make_ex(tmp_path / "ex", Clock(), "[agents.zero.limits]\nburst = 2\n")
    with pytest.raises(LimitRefused, match=r"Exceeds burst limit \(3.0 > 2\)"):
        llm.spend(ex, "zero", "x", 1000, model="claude-sonnet")
    llm.spend(ex, "claude", "x", 1000, model="claude-sonnet")  # others keep the defaults


def test_more_than_the_window_limit_itself(tmp_path: Path) -> None:
    ex = make_ex(tmp_path / "ex", Clock(), "[agents.zero.limits]\nhourly = 100\n")
    with pytest.raises(LimitRefused, match="more than the hourly limit itself"):
        llm.spend(ex, "zero", "x", 50000, model="claude-sonnet")  # 150


def test_open_reservations_count_and_settled_ones_count_once(tmp_path: Path) -> None:
    clock = Clock()
    ex = make_ex(tmp_path / "ex", clock)
    reservations.reserve(ex, "claude", "coding", 33000, id="r1")  # holds 495
    reservations.reserve(ex, "claude", "coding", 33000, id="r2")  # 990 in all
    with pytest.raises(LimitRefused, match=r"Hourly limit reached \(990.0/1000 used, need 15.0\); open "
                                           r"reservations hold 990.0 of it: settle or void them first"):
        reservations.reserve(ex, "claude", "coding", 1000, id="r3")
    st = limits.status(ex.ledger.fresh(), ex.cfg.agent("claude").limits, "claude", limits.micros(clock()))
    assert st.usage.held == 990 * SCALE and st.usage.hourly == 990 * SCALE
    reservations.settle(ex, "r1", 10000)  # 150: the 495 hold stops counting, the settle counts once
    reservations.void(ex, "r2")
    st = limits.status(ex.ledger.fresh(), ex.cfg.agent("claude").limits, "claude", limits.micros(clock()))
    assert st.usage.hourly == 150 * SCALE and st.usage.held == 0 and st.usage.balance == 9850 * SCALE
    clock.advance(hours=1)
    st = limits.status(ex.ledger.fresh(), ex.cfg.agent("claude").limits, "claude", limits.micros(clock()))
    assert st.usage.hourly == 0 and st.usage.daily == 150 * SCALE


def test_refusal_writes_nothing(tmp_path: Path) -> None:
    ex = make_ex(tmp_path / "ex", Clock())
    before = (ex.home / "ledger.toml").read_bytes()
    with pytest.raises(LimitRefused):
        llm.spend(ex, "claude", "coding", 100000)
    assert (ex.home / "ledger.toml").read_bytes() == before


def test_tx_limits(home: Path) -> None:
    assert tx_at("2026-01-01T12:00:00Z", "--home", str(home), "llm", "claude", "coding", "20000").code == 0  # 300
    assert tx_at("2026-01-01T12:00:00Z", "--home", str(home), "llm", "reserve", "claude", "coding", "10000", "--id", "r1").code == 0
    r = tx_at("2026-01-01T12:10:00Z", "--home", str(home), "limits", "claude", "--json")
    assert r.code == 0, r.err
    d = r.json()
    assert d["balance"] == 9550 and d["reserved"] == 150
    assert d["hourly"] == {"limit": 1000, "used": 450, "remaining": 550, "next_frees_at": "2026-01-01T13:00:00Z",
                           "next_frees_in_seconds": 3000, "next_frees_amount": 300}
    assert d["daily"]["used"] == 450 and d["daily"]["remaining"] == 9550
    assert d["burst"] == {"limit": 500} and d["reserve"]["limit"] == 500
    assert d["available"] == 500
    assert [(x["id"], x["amount"], x["expires"]) for x in d["reservations"]] == [("r1", 150, "2026-01-01T12:15:00Z")]
    # after its TTL the reservation is expired by `tx limits` itself (lazily, under the lock)
    r = tx_at("2026-01-01T12:15:00Z", "--home", str(home), "limits", "claude", "--json")
    assert r.json()["reserved"] == 0 and r.json()["balance"] == 9700 and r.json()["hourly"]["used"] == 300
    r = tx_at("2026-01-01T12:10:00Z", "--home", str(home), "limits", "claude")
    assert r.code == 0 and "hourly" in r.out and "balance 9700, reserved 0" in r.out
    r = tx("--home", str(home), "limits", "nobody")
    assert r.code == 1 and "unknown agent" in r.err


# --- property: no sequence of operations breaks a limit or makes a balance negative ---------------
LIM = "[limits]\nhourly = 1000\ndaily = 3000\nburst = 500\nreserve = 500\nreservation_ttl = 600\n"

ops = st.lists(st.one_of(
    st.tuples(st.just("spend"), st.sampled_from(["claude", "zero"]), st.integers(1, 40000)),
    st.tuples(st.just("reserve"), st.sampled_from(["claude", "zero"]), st.integers(1, 40000)),
    st.tuples(st.just("settle"), st.integers(0, 20), st.integers(1, 40000)),
    st.tuples(st.just("void"), st.integers(0, 20), st.just(0)),
    st.tuples(st.just("wait"), st.just(""), st.integers(1, 7200)),
), min_size=1, max_size=40)


def brute_usage(ex: Exchange, agent: str, now_us: int, window_us: int) -> int:
    """Usage recomputed from every transaction (the slow, obvious definition)."""
    txns = list(ex.ledger.fresh().iter_txns())
    total = sum(t.amount for t in txns if t.agent == agent and t.kind in ("spend", "settle", "contribute")
                and now_us - window_us < ts_micros(t.ts) <= now_us)
    holds: dict[str, int] = {}
    for t in txns:
        if t.payee.startswith("hold:") and t.agent == agent:
            holds[t.payee] = holds.get(t.payee, 0) + t.amount
        if t.payer.startswith("hold:") and t.payer in holds:
            holds[t.payer] -= t.amount
    closed = {t.payer for t in txns if t.payer.startswith("hold:")}
    return total + sum(v for k, v in holds.items() if k not in closed)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_property_limits_never_broken(seq: list[tuple[str, object, int]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        clock = Clock()
        ex = make_ex(Path(d) / "ex", clock, LIM.replace("[limits]", "[agents.zero.limits]").replace(
            "reservation_ttl = 600\n", ""))
        rids: list[str] = []
        for op, who, n in seq:
            try:
                if op == "spend":
                    llm.spend(ex, str(who), "coding", n)
                elif op == "reserve":
                    rids.append(reservations.reserve(ex, str(who), "coding", n).id)
                elif op == "settle" and rids:
                    reservations.settle(ex, rids[int(str(who)) % len(rids)], n)
                elif op == "void" and rids:
                    reservations.void(ex, rids[int(str(who)) % len(rids)])
                elif op == "wait":
                    clock.advance(seconds=n)
            except UserError:
                pass
            now_us = limits.micros(clock())
            idx = ex.ledger.fresh()
            for agent in ("claude", "zero"):
                lim = ex.cfg.agent(agent).limits
                bal = idx.account(agent)
                assert bal >= 0
                assert bal >= lim.reserve  # started above it; outflows never cross it
                hourly = brute_usage(ex, agent, now_us, limits.HOUR_US)
                daily = brute_usage(ex, agent, now_us, limits.DAY_US)
                assert hourly <= lim.hourly and daily <= lim.daily
                # the indexed usage agrees with the brute-force definition
                got = limits.usage(idx, agent, now_us)
                assert (got.hourly, got.daily) == (hourly, daily)
            assert sum(idx.accounts().values()) == 0
            for amount in idx.accounts("hold:").values():
                assert amount >= 0


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999),
                    timezones=st.just(UTC)))
def test_micros_are_exact_to_year_9999(moment: datetime) -> None:
    """The windows count in microseconds since the epoch: exact integers, never a float's rounding (after 2106
    ``timestamp()`` rounds x.999999 s up), and the same as the ledger's reading of the stored text."""
    us = limits.micros(moment)
    assert limits.from_micros(us) == moment
    assert ts_micros(ts_text(moment)) == us


def test_micros_past_2106_do_not_round_up() -> None:
    moment = datetime(3059, 6, 1, 12, 0, 59, 999997, tzinfo=UTC)
    assert limits.micros(moment) == 34_378_603_259_999_997  # timestamp() says ...260.0 s
