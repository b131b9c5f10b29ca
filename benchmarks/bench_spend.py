"""Spending benchmark: limit check, and limit check + spend, with 0 vs 1,000,000 transactions of history.

Run: python3 benchmarks/bench_spend.py [--size 1000000] [--runs 300]
Writes benchmarks/results/spend.json.  Goal (issue 4): within 1.5x of the empty ledger (the rolling
windows must not scan history).

The history is a realistic mix for six agents (awards, spends, reservations settled with a release,
pool contributions), all older than 24 hours, so the windows at "now" are empty in both ledgers and
any difference is the cost of history itself.  A third measurement puts 1,000 of the agent's spends
inside the last 24 hours to show the cost of a full window (that cost is per entry in the window,
by design of an exact sliding log).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from token_exchange.ledger.timestamps import ts_text
from token_exchange.ledger.txn import LLM, REWARDS, make_txn
from token_exchange.rules import config as config_mod
from token_exchange.rules import limits
from token_exchange.services import spending as llm
from token_exchange.services.exchange import Exchange

RESULTS = Path(__file__).parent / "results"
AGENTS = ["claude", "builder", "lambda", "spark", "observer", "zero"]
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def make(path: Path) -> tuple[Exchange, Clock]:
    path.mkdir(parents=True)
    (path / "config.toml").write_text(config_mod.default_text())
    clock = Clock()
    ex = Exchange(path, clock=clock)
    ex.open_all()
    return ex, clock


def history(i: int, ts: str) -> list:
    a = AGENTS[i % 6]
    k = i % 10
    if k < 4:
        return [make_txn(f"h{i}", "award", REWARDS, a, 20_000, agent=a, project="bench", ts=ts,
                         source={"type": "bench"})]
    if k < 8:
        return [make_txn(f"h{i}", "spend", a, LLM, 1_500, agent=a, ts=ts, source={"type": "llm", "model": "x",
                                                                                  "tokens": 1000})]
    if k == 8:
        return [make_txn(f"h{i}", "hold", a, f"hold:h{i}", 3_000, agent=a, ts=ts, breakdown={"ttl": 900}),
                make_txn(f"h{i}s", "settle", f"hold:h{i}", LLM, 2_000, agent=a, ts=ts),
                make_txn(f"h{i}r", "release", f"hold:h{i}", a, 1_000, agent=a, ts=ts)]
    return [make_txn(f"h{i}", "contribute", a, "pool:bench", 1_000, agent=a, ts=ts, ref="pool:bench")]


def fill(ex: Exchange, count: int, start: datetime, span: timedelta, batch: int = 20_000) -> float:
    t0 = time.perf_counter()
    done = i = 0
    step = span / max(count, 1)
    while done < count:
        txns: list = []
        while len(txns) < batch and done + len(txns) < count:
            txns.extend(history(i, ts_text(start + step * (done + len(txns)))))
            i += 1
        txns = txns[: count - done]
        ex.ledger.append_many(txns)
        done += len(txns)
        print(f"  loaded {done:,}/{count:,} ({time.perf_counter() - t0:.0f}s)", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    return time.perf_counter() - t0


def measure(ex: Exchange, clock: Clock, runs: int) -> dict[str, float]:
    lim = ex.cfg.agent("claude").limits
    check_times = []
    for _ in range(runs * 5):
        t = time.perf_counter()
        with ex.ledger.locked() as idx:
            u = limits.usage(idx, "claude", limits.micros(clock()))
            limits.check(lim, u, 15)
        check_times.append(time.perf_counter() - t)
    spend_times = []
    for _ in range(runs):
        clock.now += timedelta(seconds=1)
        t = time.perf_counter()
        llm.spend(ex, "claude", "coding", 1)  # 0.015 tokens: never near a limit
        spend_times.append(time.perf_counter() - t)
    return {"check_ms": round(statistics.median(check_times) * 1000, 3),
            "spend_ms": round(statistics.median(spend_times) * 1000, 3),
            "spend_p90_ms": round(sorted(spend_times)[int(len(spend_times) * 0.9)] * 1000, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        ex, clock = make(Path(d) / "empty")
        rows.append({"case": "empty ledger", "transactions": ex.ledger.fresh().count(), "load_s": 0.0,
                     **measure(ex, clock, args.runs)})
        print(rows[-1], file=sys.stderr)

        ex, clock = make(Path(d) / "big")
        load = fill(ex, args.size, NOW - timedelta(days=731), timedelta(days=729))
        rows.append({"case": f"{args.size:,} transactions of history (older than 24 h)",
                     "transactions": ex.ledger.fresh().count(), "load_s": round(load, 1),
                     **measure(ex, clock, args.runs)})
        print(rows[-1], file=sys.stderr)

        # 1,000 of claude's spends in the last 24 hours (0.015 tokens each: well under the limits)
        clock.now += timedelta(minutes=5)
        recent = [make_txn(f"recent{i}", "spend", "claude", LLM, 150, agent="claude",
                           ts=ts_text(clock.now - timedelta(hours=23) + timedelta(seconds=60 * i)))
                  for i in range(1000)]
        ex.ledger.append_many(recent)
        rows.append({"case": "same + 1,000 spends inside the daily window", "transactions": ex.ledger.fresh().count(),
                     "load_s": 0.0, **measure(ex, clock, args.runs)})
        print(rows[-1], file=sys.stderr)
        ledger_mb = round((Path(d) / "big" / "ledger.toml").stat().st_size / 1e6, 1)
        index_mb = round((Path(d) / "big" / "index.sqlite").stat().st_size / 1e6, 1)
    result = {"machine": f"{platform.machine()} {platform.python_version()}", "runs": args.runs,
              "rows": rows, "ledger_mb": ledger_mb, "index_mb": index_mb,
              "check_ratio_big_vs_empty": round(rows[1]["check_ms"] / rows[0]["check_ms"], 2),
              "spend_ratio_big_vs_empty": round(rows[1]["spend_ms"] / rows[0]["spend_ms"], 2)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "spend.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
