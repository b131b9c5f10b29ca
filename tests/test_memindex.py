"""MemoryIndex must answer every query exactly as the SQLite Index does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from token_exchange.errors import IdConflict
from token_exchange.ledger.index import SqliteIndex as Index
from token_exchange.ledger.memindex import MemoryIndex
from token_exchange.ledger.timestamps import ts_text
from token_exchange.ledger.txn import LLM, REWARDS, Txn, make_txn

AGENTS = ["claude", "zero", "spark"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@st.composite
def txn(draw: st.DrawFn, n: int) -> Txn:
    agent = draw(st.sampled_from(AGENTS))
    shape = draw(st.sampled_from(["earn", "spend", "hold", "settle", "contribute", "credit"]))
    amount = draw(st.integers(0, 10**8))
    ts = ts_text(T0 + timedelta(seconds=draw(st.integers(0, 3 * 86400))))
    hold = f"hold:r{draw(st.integers(0, 4))}"
    pool = f"pool:p{draw(st.integers(0, 2))}"
    if shape == "earn":
        return make_txn(f"t{n}", draw(st.sampled_from(["earn", "award"])), REWARDS, agent, amount, agent=agent,
                        project=draw(st.sampled_from(["", "a", "b"])),
                        breakdown={"contract": draw(st.sampled_from(["default", "x"]))}, ts=ts,
                        ref=draw(st.sampled_from(["", "commit:1", "commit:2"])))
    if shape == "spend":
        return make_txn(f"t{n}", "spend", agent, LLM, amount, agent=agent, ts=ts)
    if shape == "hold":
        return make_txn(f"t{n}", "hold", agent, hold, amount, agent=agent, ts=ts,
                        breakdown={"ttl": draw(st.sampled_from([0, 60, 900]))})
    if shape == "settle":
        return make_txn(f"t{n}", draw(st.sampled_from(["settle", "release"])), hold, LLM, amount, agent=agent, ts=ts)
    if shape == "contribute":
        return make_txn(f"t{n}", "contribute", agent, pool, amount, agent=agent, ts=ts, ref=pool)
    return make_txn(f"t{n}", "credit", pool, agent, amount, agent=agent, ts=ts, ref=pool)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_memory_index_matches_sqlite(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    txns = [data.draw(txn(n)) for n in range(data.draw(st.integers(0, 40)))]
    sql = Index(tmp_path_factory.mktemp("idx") / "index.sqlite")
    mem = MemoryIndex()
    cut = data.draw(st.integers(0, len(txns)))
    for batch in (txns[:cut], txns[cut:], txns[: cut // 2]):  # the last batch is all duplicates
        assert sql.add(batch, "p", "h") == mem.add(batch, "p", "h")
    since = int((T0 + timedelta(seconds=data.draw(st.integers(0, 3 * 86400)))).timestamp()) * 1_000_000
    until = since + data.draw(st.sampled_from([0, 3600, 10**12])) * 1_000_000  # windows are (now - w, now]
    kinds = data.draw(st.lists(st.sampled_from(["spend", "settle", "hold", "contribute", "earn"]), min_size=1))
    assert sql.count() == mem.count()
    # The volume bounds every total (Ledger's write check relies on it): the sum of every amount indexed.
    assert sql.volume() == mem.volume() == sum(t.amount for t in {t.id: t for t in txns}.values())
    assert all(abs(v) <= (mem.volume() or 0) for v in mem.accounts().values())
    assert sql.accounts() == mem.accounts() and sql.accounts("hold:") == mem.accounts("hold:")
    assert sql.agents() == mem.agents()
    for a in AGENTS:
        assert sql.balance(a) == mem.balance(a)
        assert sql.kind_totals(a) == mem.kind_totals(a) == mem.balance(a).by_kind
        assert sql.history(a, 5) == mem.history(a, 5)
        assert sql.window_sum(a, kinds, since, until) == mem.window_sum(a, kinds, since, until)
        assert sorted(sql.window_entries(a, kinds, since, until)) == sorted(mem.window_entries(a, kinds, since, until))
        assert sql.open_holds(a) == mem.open_holds(a)
    assert sql.expired_holds(since) == mem.expired_holds(since)
    for ref in ("commit:1", "commit:2", "pool:p0", "pool:p1", ""):
        assert sql.by_ref(ref) == mem.by_ref(ref)
        assert sql.pool_totals(ref) == mem.pool_totals(ref)
    for c in ("default", "x", "none"):
        assert sql.contract_paid(c) == mem.contract_paid(c)
    assert list(sql.iter_txns()) == list(mem.iter_txns())
    assert list(sql.iter_txns(["spend"])) == list(mem.iter_txns(["spend"]))
    assert (sql.meta("position"), sql.meta("last_hash")) == (mem.meta("position"), mem.meta("last_hash"))
    sql.close()


def test_conflicting_id_changes_nothing(tmp_path: Path) -> None:
    for idx in (Index(tmp_path / "i.sqlite"), MemoryIndex()):
        a = make_txn("x", "award", REWARDS, "zero", 5, agent="zero", ts=ts_text(T0))
        b = make_txn("x", "award", REWARDS, "zero", 6, agent="zero", ts=ts_text(T0))
        idx.add([a], "1", None)
        with pytest.raises(IdConflict):
            idx.add([make_txn("y", "award", REWARDS, "zero", 1, agent="zero", ts=ts_text(T0)), b], "2", None)
        assert idx.count() == 1 and idx.meta("position") == "1"
