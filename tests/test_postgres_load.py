"""Load: 8 processes standing for 8 hosts (each its own home, one database), 500 spends each, racing one
agent's hourly limit.  Spent never above the limit and within one spend of it; every success the hosts
were told about is in the ledger exactly once, and nothing else is (0 lost, 0 duplicated).

Bounded: 4,000 requests to 127.0.0.1 only, every wait with a timeout.  The clock is injected (one
instant), so the whole race falls in one hourly window and the result does not depend on timing."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests import pgtools
from tests.pgtools import Schema, pg_home
from token_exchange.amounts import SCALE
from token_exchange.errors import Refused
from token_exchange.ledger.doctor import check
from token_exchange.services import spending as llm
from token_exchange.services.exchange import Exchange

pg = pgtools.pg  # the fixture: a fresh schema on the test server
T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
HOSTS = 8
SPENDS = 500
HOURLY = 2000  # tokens; gemini-pro at 2/1K: 500 inference tokens cost exactly 1 token, so 2,000 spends fit
LIMITS = f"[agents.observer.limits]\nhourly = {HOURLY}\ndaily = 100000\nreserve = 0\nburst = 500\n"


def _host(home: str, n: int, start: Any, results: Any) -> None:
    ex = Exchange(Path(home), clock=lambda: T0)
    ex.ledger.fresh()  # connect (and check the schema) before the start signal
    start.wait(timeout=120)
    ok: list[str] = []
    refused: list[str] = []
    for i in range(SPENDS):
        rid = f"host{n}-{i}"
        try:
            llm.spend(ex, "observer", "load", 500, model="gemini-pro", id=rid)
            ok.append(f"llm:{rid}")
        except Refused:
            refused.append(f"llm:{rid}")
    ex.close()
    results.put((ok, refused))


@pytest.mark.slow
def test_8_hosts_500_spends_each_never_pass_the_hourly_limit(tmp_path: Path, pg: Schema) -> None:
    homes = [pg_home(tmp_path / f"host{n}", pg.dsn, LIMITS) for n in range(HOSTS)]
    first = Exchange(homes[0], clock=lambda: T0)
    first.open_all()
    first.close()
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_host, args=(str(h), n, start, results)) for n, h in enumerate(homes)]
    for p in procs:
        p.start()
    start.set()
    outcomes = [results.get(timeout=900) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    told_ok = [i for ok, _ in outcomes for i in ok]
    told_refused = {i for _, refused in outcomes for i in refused}
    assert len(told_ok) + len(told_refused) == HOSTS * SPENDS
    stored = [r[0] for r in pg.sql("SELECT id FROM txns WHERE kind = 'spend' ORDER BY seq")]
    assert len(stored) == len(set(stored))  # 0 duplicated
    assert sorted(stored) == sorted(told_ok)  # 0 lost, and nothing the hosts were told was refused
    assert not told_refused & set(stored)
    spent = pg.sql("SELECT sum(amount) FROM txns WHERE kind = 'spend' AND agent = 'observer'")[0][0]
    cost = 1 * SCALE
    assert HOURLY * SCALE - cost < spent <= HOURLY * SCALE  # never above the limit, within one spend of it
    assert len(stored) == HOURLY  # (exactly: the cost divides the limit)
    # Every host took part (a race, not one host doing everything).
    assert sum(1 for ok, _ in outcomes if ok) >= 2
    ex = Exchange(homes[-1], clock=lambda: T0)
    try:
        assert ex.balance("observer").balance == (10000 - HOURLY) * SCALE
        report = check(ex.ledger)
        assert report.ok, report.problems
    finally:
        ex.close()
