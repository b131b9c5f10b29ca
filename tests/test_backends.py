"""One contract for every ledger backend in the registry: the same workload gives the same ledger.

A backend is one file behind ``protocols.Journal`` plus one registry line; this test runs on every
name in the registry (a new backend without a case here fails ``test_every_backend_is_covered``), so
what the exchange relies on — idempotent ids, refused conflicts, persistence across processes, an
index rebuilt from the journal alone, a consistent ``tx doctor`` — holds for each of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import pgtools
from tests.conftest import Clock, make_ex
from tests.test_postgres import T0, pg_ex, workload
from token_exchange.amounts import SCALE
from token_exchange.errors import IdConflict
from token_exchange.ledger.backends import NAMES
from token_exchange.ledger.doctor import check
from token_exchange.rules import config as config_mod
from token_exchange.services.exchange import Exchange


def notes_ex(path: Path, clock: Clock) -> Exchange:
    """A notes exchange inside the git repository ``path`` (the ``repo`` fixture)."""
    home = path / ".exchange"
    home.mkdir(parents=True, exist_ok=True)
    text = config_mod.default_text()
    (home / "config.toml").write_text(text.replace('backend = "toml"', 'backend = "notes"', 1))
    ex = Exchange(home, clock=clock)
    ex.open_all()
    return ex


def open_backend(name: str, request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Exchange:
    if name == "toml":
        return make_ex(tmp_path / "toml", clock)
    if name == "notes":
        return notes_ex(request.getfixturevalue("repo"), clock)
    if name == "postgres":
        schema: pgtools.Schema = request.getfixturevalue("pg")
        return pg_ex(tmp_path / "pg", schema.dsn, clock)
    raise AssertionError(f"no contract case for backend {name!r}")


CASES: dict[str, Callable[..., Exchange]] = {n: open_backend for n in ("toml", "notes", "postgres")}
pg = pgtools.pg  # the fixture (skips without a server)


def shape(ex: Exchange) -> list[tuple[Any, ...]]:
    """What every backend must agree on: the same transactions at the same instants, oldest first.
    Not hash/prev (the notes backend chains nothing) nor the order within one instant (a union merge
    keeps none: records of one microsecond are read back by hash)."""
    txns = [(t.ts, t.id, t.kind, t.payer, t.payee, t.amount, t.agent, t.ref) for t in ex.ledger.fresh().iter_txns()]
    assert [x[0] for x in txns] == sorted(x[0] for x in txns)  # never out of time order
    return sorted(txns)


def test_every_backend_is_covered() -> None:
    assert set(NAMES) == set(CASES)


@pytest.fixture(params=sorted(CASES))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Exchange, Clock]]:
    clock = Clock(T0)
    ex = open_backend(request.param, request, tmp_path, clock)
    yield request.param, ex, clock
    ex.close()


def test_the_same_workload_gives_the_same_ledger(backend: tuple[str, Exchange, Clock], tmp_path: Path) -> None:
    name, ex, clock = backend
    ref_clock = Clock(T0)
    ref = make_ex(tmp_path / "reference", ref_clock)
    try:
        workload(ref, ref_clock)
        workload(ex, clock)
        assert shape(ex) == shape(ref)
        assert [b.to_json() for b in ex.balances()] == [b.to_json() for b in ref.balances()]
    finally:
        ref.close()
    report = check(ex.ledger)
    assert report.ok, (name, report.problems)


def test_ids_are_idempotent_and_conflicts_refused(backend: tuple[str, Exchange, Clock]) -> None:
    name, ex, _clock = backend
    first = ex.award("claude", 250 * SCALE, "manual", "good work", id="award:1", project="p")
    again = ex.award("claude", 250 * SCALE, "manual", "good work", id="award:1", project="p")
    assert first.created and not again.created
    before = shape(ex)
    with pytest.raises(IdConflict):
        ex.award("claude", 999 * SCALE, "manual", "other work", id="award:1", project="p")
    assert shape(ex) == before  # the refusal wrote nothing
    assert ex.balance("claude").balance == 10_250 * SCALE


def test_a_new_process_and_a_rebuilt_index_see_the_same_ledger(backend: tuple[str, Exchange, Clock]) -> None:
    name, ex, clock = backend
    workload(ex, clock)
    seen, balances = shape(ex), [b.to_json() for b in ex.balances()]
    home = ex.home
    ex.close()
    index = home / "index.sqlite"
    if index.exists():  # toml and notes keep the index in the home; postgres keeps it in the database
        index.unlink()
    again = Exchange(home, clock=clock)
    again.open_all()
    try:
        assert shape(again) == seen
        assert [b.to_json() for b in again.balances()] == balances
        assert check(again.ledger).ok
    finally:
        again.close()
