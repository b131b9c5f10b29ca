"""The shortcuts a simulated year's speed relies on give exactly what the plain paths give (issue 17).

The timing goals live in benchmarks/bench_simulate.py (no timed assertions here)."""

from __future__ import annotations

import copy
import gc
import math
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from token_exchange.amounts import FMT_FAST, MAX_TOTAL, fmt, to_decimal
from token_exchange.errors import UserError
from token_exchange.ledger import ledger as ledger_mod
from token_exchange.ledger.memindex import MemoryIndex
from token_exchange.ledger.txn import REWARDS, Balance, Table, Txn, chain, make_txn
from token_exchange.sim.journal import chained
from token_exchange.sim.run import simulate


class Text(str):
    pass


class Whole(int):
    pass


# Every kind of value a caller could put in a field, plain or not.
odd = st.one_of(st.text(max_size=8), st.integers(-(2**70), 2**70), st.booleans(), st.floats(allow_nan=True),
                st.none(), st.tuples(st.integers(0, 3)), st.lists(st.integers(0, 3), max_size=2),
                st.builds(Text, st.text(max_size=4)), st.builds(Whole, st.integers(-5, 5)))
keys = st.one_of(st.text(min_size=1, max_size=6), st.integers(0, 3))


def outcome(t: Txn) -> str:
    """What ``_check`` says of ``t``: nothing, or the error it raises."""
    try:
        ledger_mod._check(MemoryIndex(), [t])
    except Exception as e:  # odd records fail in odd ways: the point is that both paths fail alike
        return f"{type(e).__name__}: {e}"
    return ""


plain_meta = st.dictionaries(st.text(min_size=1, max_size=6), st.text(max_size=6) | st.integers(-(2**70), 2**70),
                             max_size=3)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(max_size=8), min_size=10, max_size=10), st.integers(0, 10**15) | odd,
       plain_meta | st.dictionaries(keys, odd, max_size=3), plain_meta | st.dictionaries(keys, odd, max_size=3),
       st.none() | st.tuples(st.integers(0, 9), odd))
def test_the_plain_shortcut_refuses_exactly_what_the_round_trip_refuses(
        texts: list[Any], amount: Any, source: dict[Any, Any], breakdown: dict[Any, Any],
        odd_field: tuple[int, Any] | None) -> None:
    if odd_field is not None:
        texts[odd_field[0]] = odd_field[1]
    t = Txn._make((*texts[:4], amount, *texts[4:7], source, breakdown, *texts[7:], "h"))
    with pytest.MonkeyPatch.context() as m:
        m.setattr(ledger_mod, "_plain", lambda t: False)
        slow = outcome(t)
    assert outcome(t) == slow
    if ledger_mod._plain(t):
        assert "does not survive" not in slow


@settings(max_examples=500, deadline=None)
@given(plain_meta | st.dictionaries(keys, odd, max_size=3), plain_meta | st.dictionaries(keys, odd, max_size=3))
def test_tables_make_txn_marks_checked_are_exactly_the_ones_the_round_trip_accepts(
        source: dict[Any, Any], breakdown: dict[Any, Any]) -> None:
    try:
        t = make_txn("t1", "award", REWARDS, "zero", 5, agent="zero", source=source, breakdown=breakdown,
                     ts="2026-01-01T00:00:00.000000Z")
    except UserError:
        return
    for table in (t.source, t.breakdown):
        if type(table) is Table:  # then every key and value has its exact type, as the round trip needs
            assert all(type(k) is str for k in table) and all(type(v) in (str, int) for v in table.values())
    with pytest.MonkeyPatch.context() as m:
        m.setattr(ledger_mod, "_plain", lambda t: False)
        slow = outcome(t)
    assert slow == "" and outcome(t) == ""


def test_a_checked_table_is_read_only_and_copies_and_pickles_whole() -> None:
    t = make_txn("t1", "award", REWARDS, "zero", 5, agent="zero", source={"type": "x", "n": 3})
    table = t.source
    assert type(table) is Table and table == {"type": "x", "n": 3}
    for change in (lambda: table.__setitem__("n", 4), lambda: table.__delitem__("n"), table.clear, table.popitem,
                   lambda: table.pop("n"), lambda: table.setdefault("m", 1), lambda: table.update(n=4),
                   lambda: table.__ior__({"n": 4})):
        with pytest.raises(TypeError, match="read-only"):
            change()
    assert table == {"type": "x", "n": 3}
    writable = dict(table)
    writable["n"] = 4
    assert type(table.copy()) is dict and writable["n"] == 4
    for again in (copy.copy(table), copy.deepcopy(table), pickle.loads(pickle.dumps(table)),
                  pickle.loads(pickle.dumps(t)).source):
        assert type(again) is Table and again == table


@pytest.mark.parametrize("meta", [{"x": (1, 2)}, {1: "a"}, {"x": math.nan}])
def test_records_that_do_not_survive_being_stored_are_still_refused(meta: dict[Any, Any]) -> None:
    t = Txn("t1", "award", REWARDS, "zero", 5, "zero", breakdown=meta, ts="2026-01-01T00:00:00.000000Z")
    assert not ledger_mod._plain(t)
    with pytest.raises(UserError, match="does not survive being stored"):
        ledger_mod._check(MemoryIndex(), [t])


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.integers(-(10**20), 10**20), st.integers(-(10**6), 10**6),
                 st.sampled_from([0, 1, -1, 9_999, 10_000, 10_001, FMT_FAST - 1, -FMT_FAST + 1, FMT_FAST, 2**53 - 1])))
def test_fmt_with_integers_is_fmt_with_decimals(units: int) -> None:
    assert fmt(units) == format(to_decimal(units), "f")


meta_values = st.text(max_size=12) | st.integers(-(2**53 - 1), 2**53 - 1)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=20), st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True),
                                                                meta_values, max_size=3)), max_size=6),
       st.sampled_from(["", "a" * 64]))
def test_the_simulated_journal_chains_as_the_ledger_does(records: list[tuple[str, dict[str, Any]]],
                                                          head: str) -> None:
    txns = [make_txn(f"t{i}", "award", REWARDS, "zero", i, agent="zero", description=d, source=dict(m),
                     breakdown=dict(m), ts="2026-01-01T00:00:00.000000Z") for i, (d, m) in enumerate(records)]
    assert chained(txns, head) == chain(txns, head)
    assert [t.hash for t in chained(txns, head)] == [t.hash for t in chain(txns, head)]


class Stub:
    """An index whose totals are what the test says (``_check`` asks it for nothing else)."""

    def __init__(self, account: int = 0, award: int = 0, earn: int = 0, contract: int = 0, pool: int = 0,
                 volume: int | None = None) -> None:
        self.account_total, self.by_kind, self.contract, self.pool = account, {"award": award, "earn": earn}, \
            contract, pool
        self.volume_total = volume

    def account(self, acct: str) -> int:
        return self.account_total if acct == "zero" else 0

    def balance(self, agent: str) -> Balance:
        return Balance(agent, 0, 0, 0, dict(self.by_kind), {})

    def kind_totals(self, agent: str) -> dict[str, int]:
        return dict(self.by_kind)

    def contract_paid(self, contract: str) -> int:
        return self.contract

    def pool_totals(self, ref: str) -> dict[tuple[str, str], tuple[int, int]]:
        return {("zero", "award"): (self.pool, 1)}

    def volume(self) -> int | None:
        return self.volume_total  # None: not kept, every total is looked up


@pytest.mark.parametrize(("stub", "what"), [
    (Stub(account=MAX_TOTAL), "the balance of zero"), (Stub(award=MAX_TOTAL), "zero's total of award"),
    (Stub(earn=MAX_TOTAL), "zero's total earned"), (Stub(contract=MAX_TOTAL), "what contract c paid"),
    (Stub(pool=MAX_TOTAL), "pool p total")])
def test_a_total_beyond_the_maximum_is_named_in_the_refusal(stub: Stub, what: str) -> None:
    """The messages are only filled in when a total overflows; they read as they always did."""
    t = make_txn("t1", "award", REWARDS, "zero", 10, agent="zero", breakdown={"contract": "c"}, ref="pool:p")
    with pytest.raises(UserError) as e:
        ledger_mod._check(stub, [t])  # type: ignore[arg-type]
    assert str(e.value) == (f"{what} would reach {fmt(MAX_TOTAL + 10)} tokens, beyond the ledger's maximum of "
                            f"+-{fmt(MAX_TOTAL)}; nothing written")


def test_the_totals_are_looked_up_only_when_the_volume_leaves_no_room() -> None:
    """Every total is a signed sum of indexed amounts: with the volume and the batch within the maximum, none is
    read (this stub's account total is not what its volume allows, so reading it would refuse)."""
    t = make_txn("t1", "award", REWARDS, "zero", 10, agent="zero")
    ledger_mod._check(Stub(account=MAX_TOTAL, volume=MAX_TOTAL - 10), [t])  # type: ignore[arg-type]
    with pytest.raises(UserError, match="the balance of zero would reach"):
        ledger_mod._check(Stub(account=MAX_TOTAL, volume=MAX_TOTAL - 9), [t])  # type: ignore[arg-type]


@pytest.mark.parametrize(("hours", "agents"), [(72, None), (6, 40)])
def test_a_run_leaves_no_reference_cycles_and_restores_the_collector(hours: int, agents: int | None) -> None:
    """The run pauses the cyclic garbage collector: that is only free if it makes no garbage only it could free."""
    gc.collect()
    gc.disable()
    try:
        simulate(hours=hours, seed=2, agents=agents)
        assert gc.collect() == 0
    finally:
        gc.enable()
    simulate(hours=2, seed=2)
    assert gc.isenabled()
