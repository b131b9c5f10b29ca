"""Index rebuild (issue 11.7): the fast paths give exactly what the plain ones give.

The timing goal lives in benchmarks/bench_ledger.py (no timed assertions here)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import Clock, make_ex
from token_exchange.ledger.backends import toml as toml_mod
from token_exchange.ledger.backends.toml import HEADER, TomlJournal, render_batch
from token_exchange.ledger.doctor import check
from token_exchange.ledger.index import SqliteIndex
from token_exchange.ledger.memindex import MemoryIndex
from token_exchange.ledger.txn import REWARDS, canonical, canonical_hashed, chain, make_txn
from token_exchange.services.exchange import Exchange

text = st.text(st.characters(codec="utf-8"), max_size=30)


meta_values = text | st.integers(-(2**53 - 1), 2**53 - 1)


@settings(max_examples=200, deadline=None)
@given(text, text, text, st.dictionaries(st.from_regex(r"[A-Za-z0-9_-]{1,10}", fullmatch=True), meta_values,
                                         max_size=4), st.integers(0, 10**15))
def test_the_direct_canonical_text_is_the_encoders(desc: str, project: str, ref: str, meta: dict, amount: int) -> None:
    t = make_txn("id-1", "award", REWARDS, "zero", amount, agent="zero", description=desc, project=project, ref=ref,
                 source=dict(meta), breakdown=dict(meta), ts="2026-01-01T00:00:00.000000Z", prev="p" * 64)
    assert canonical_hashed(t.hashed()) == canonical(t.hashed())


def _journal(tmp_path: Path, batches: int = 40) -> Path:
    home = tmp_path / "h"
    home.mkdir()
    last = ""
    with open(home / "ledger.toml", "wb") as f:
        f.write(HEADER)
        for b in range(batches):
            batch = chain([make_txn(f"t{b}-{i}", "award", REWARDS, ("zero", "claude")[i % 2], 100 + b * 7 + i,
                                    agent=("zero", "claude")[i % 2], description=f"d {b} {i} é",
                                    source={"type": "t", "n": i}, ts=f"2026-01-01T00:{b % 60:02d}:00.000000Z")
                           for i in range(1 + b % 4)], last)
            last = batch[-1].hash
            f.write(render_batch(batch))
    return home


@pytest.mark.parametrize("group", [1, 7, 1024])
def test_the_fast_parser_gives_what_the_exact_one_gives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        group: int) -> None:
    """Runs of blocks parsed as one JSON document (any run length) equal block-by-block parsing; a damaged
    block falls back to the exact parser, which names it."""
    home = _journal(tmp_path)
    monkeypatch.setattr(toml_mod, "PARSE_GROUP", group)
    fast = TomlJournal(home).read_all()
    monkeypatch.setattr(toml_mod, "parse_blocks", toml_mod.parse_slowly)
    exact = TomlJournal(home).read_all()
    assert fast == exact and fast.tail is None and len(fast.txns) == sum(1 + b % 4 for b in range(40))
    assert fast.hashed == [canonical(t.hashed()) for t in fast.txns]


def test_a_rebuild_gives_what_adding_one_by_one_gives(tmp_path: Path) -> None:
    home = _journal(tmp_path)
    txns = TomlJournal(home).read_all().txns
    for idx in (SqliteIndex(tmp_path / "bulk.sqlite"), MemoryIndex()):
        idx.rebuild(TomlJournal(home).chunks(""))
        one = SqliteIndex(tmp_path / f"one-{type(idx).__name__}.sqlite")
        for t in txns:
            one.add([t], "p", t.hash)
        assert idx.count() == one.count() and idx.accounts() == one.accounts()
        assert list(idx.iter_txns()) == list(one.iter_txns())
        for agent in ("zero", "claude"):
            assert idx.balance(agent) == one.balance(agent)
            assert idx.history(agent, 5) == one.history(agent, 5)
        assert idx.meta("last_hash") == txns[-1].hash and idx.last_ts() == one.last_ts()
        one.close()


def test_rebuilding_a_deleted_index_through_the_ledger(tmp_path: Path) -> None:
    clock = Clock()
    ex = make_ex(tmp_path / "h", clock)
    for b in range(20):
        ex.ledger.append_many([make_txn(f"b{b}-{i}", "award", REWARDS, "zero", 1 + i, agent="zero") for i in range(3)])
    before = ex.balance("zero")
    ex.close()
    shutil.copy(tmp_path / "h" / "ledger.toml", tmp_path / "copy.toml")
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (tmp_path / "h" / name).unlink(missing_ok=True)
    ex = Exchange(tmp_path / "h", clock=clock)
    assert ex.balance("zero") == before
    assert check(ex.ledger).ok
    assert (tmp_path / "h" / "ledger.toml").read_bytes() == (tmp_path / "copy.toml").read_bytes()
    assert not list((tmp_path / "h").glob(".index.sqlite.rebuild-*"))
