"""16 processes spending for one agent at once can never cross a limit or the reserve, not by one unit."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from token_exchange.amounts import SCALE
from token_exchange.rules import config as config_mod
from token_exchange.services.exchange import Exchange

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PROCS = 16


def _home(path: Path, extra: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.toml").write_text(config_mod.default_text() + "\n" + extra)
    Exchange(path, clock=lambda: T0).open_all()
    return path


def _worker(home: str, agent: str, tokens: int, attempts: int, start: multiprocessing.synchronize.Event,
            results: multiprocessing.queues.Queue, reserve_too: bool) -> None:
    from token_exchange.errors import Refused
    from token_exchange.services import reservations
    from token_exchange.services import spending as llm

    ex = Exchange(Path(home), clock=lambda: T0)
    start.wait()
    ok = refused = 0
    for i in range(attempts):
        try:
            if reserve_too and i % 2:
                with reservations.reservation(ex, agent, "x", tokens, model="gemini-pro") as r:
                    r.use(tokens)
            else:
                llm.spend(ex, agent, "x", tokens, model="gemini-pro")
            ok += 1
        except Refused:
            refused += 1
    results.put((ok, refused))


def _race(home: Path, agent: str, tokens: int, attempts: int, reserve_too: bool = False) -> tuple[int, int]:
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(home), agent, tokens, attempts, start, results, reserve_too))
             for _ in range(PROCS)]
    for p in procs:
        p.start()
    start.set()
    outcomes = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return sum(o for o, _ in outcomes), sum(r for _, r in outcomes)


def test_16_processes_hit_the_hourly_limit_exactly(tmp_path: Path) -> None:
    home = _home(tmp_path / "ex", "")
    # gemini-pro 2/1K: 20,000 tokens cost exactly 40; the hourly limit 1,000 fits exactly 25 of them
    ok, refused = _race(home, "observer", 20000, 4)
    assert ok == 25 and refused == PROCS * 4 - 25
    ex = Exchange(home, clock=lambda: T0)
    b = ex.balance("observer")
    assert b.spent == 1000 * SCALE and b.balance == 9000 * SCALE
    idx = ex.ledger.fresh()
    assert idx.window_sum("observer", ("spend", "settle"), 0, 2**62) == 1000 * SCALE


def test_16_processes_cannot_cross_the_reserve(tmp_path: Path) -> None:
    # reserve 9,000 of 10,000: exactly 1,000 spendable; windows wide open
    home = _home(tmp_path / "ex", "[agents.observer.limits]\nreserve = 9000\nhourly = 100000\ndaily = 100000\n")
    ok, refused = _race(home, "observer", 15000, 5, reserve_too=True)  # 30 each: 33 fit (990), never 34
    assert ok == 33 and refused == PROCS * 5 - 33
    ex = Exchange(home, clock=lambda: T0)
    assert ex.balance("observer").balance == 9010 * SCALE
    assert ex.ledger.fresh().open_holds("observer") == []


def test_16_cli_processes_at_once(tmp_path: Path) -> None:
    """The same through the real `tx llm` command: 16 processes started together."""
    home = _home(tmp_path / "ex", "[agents.zero.limits]\nhourly = 200\n")
    import os

    cmd = [sys.executable, "-m", "token_exchange", "--home", str(home), "llm", "zero", "coding", "20000",
           "--model", "gemini-pro"]  # 40 each: 5 fit in 200
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ)) for _ in range(PROCS)]
    codes = [p.wait(timeout=300) for p in procs]
    errs = [p.stderr.read() for p in procs if p.stderr]
    assert codes.count(0) == 5 and codes.count(1) == PROCS - 5
    assert sum("Hourly limit reached (200.0/200 used, need 40.0)" in e for e in errs) == PROCS - 5
    ex = Exchange(home, clock=lambda: T0)
    assert ex.balance("zero").spent == 200 * SCALE
