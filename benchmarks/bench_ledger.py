"""Ledger benchmark: append latency and whole-process `tx balance` at 0, 10,000 and 1,000,000 transactions.

Run: python3 benchmarks/bench_ledger.py [--sizes 0,10000,1000000] [--runs 9]
Writes benchmarks/results/ledger.json.  Goal (issue 2): `tx balance` at 1,000,000 within 1.5x of 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from token_exchange.services.exchange import Exchange
from token_exchange.services.setup import init_home
from token_exchange.ledger.ledger import REWARDS, make_txn

RESULTS = Path(__file__).parent / "results"
AGENTS = ["claude", "builder", "lambda", "spark", "observer", "zero"]


def fill(ex: Exchange, count: int, batch: int = 20_000) -> float:
    """Bulk-load ``count`` awards (one write + one index transaction per batch)."""
    start = time.perf_counter()
    done = 0
    while done < count:
        n = min(batch, count - done)
        ex.ledger.append_many([make_txn(f"bulk-{done + i}", "award", REWARDS, AGENTS[(done + i) % 6], 10_000 + i,
                                        agent=AGENTS[(done + i) % 6], project="bench",
                                        description="benchmark award", source={"type": "bench"})
                               for i in range(n)])
        done += n
        print(f"  loaded {done:,}/{count:,}", file=sys.stderr, end="\r")
    return time.perf_counter() - start


def whole_process(args: list[str], runs: int) -> float:
    """Median wall time of a fresh process; bytecode caching on (as on a user's machine), one warm-up run."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(args, check=True, capture_output=True, env=env)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def append_latency(ex: Exchange, runs: int) -> float:
    times = []
    for i in range(runs):
        t = time.perf_counter()
        ex.ledger.append(make_txn(f"lat-{time.time_ns()}-{i}", "award", REWARDS, "zero", 1, agent="zero"))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="0,10000,1000000")
    ap.add_argument("--runs", type=int, default=9)
    opts = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in [int(s) for s in opts.sizes.split(",")]:
            home = Path(tmp) / f"h{size}"
            init_home(home, "toml")
            ex = Exchange(home)
            load = fill(ex, size) if size else 0.0
            append = append_latency(ex, 50)
            ex.close()
            tx = [sys.executable, "-m", "token_exchange", "--home", str(home)]
            balance = whole_process([*tx, "balance", "claude", "--json"], opts.runs)
            python = whole_process([sys.executable, "-c", "pass"], opts.runs)
            rows.append({"transactions": size, "load_s": round(load, 2),
                         "append_ms": round(append * 1000, 2), "balance_ms": round(balance * 1000, 1),
                         "python_startup_ms": round(python * 1000, 1),
                         "ledger_mb": round((home / "ledger.toml").stat().st_size / 1e6, 1),
                         "index_mb": round((home / "index.sqlite").stat().st_size / 1e6, 1)})
            print(json.dumps(rows[-1]), file=sys.stderr)
    base = rows[0]["balance_ms"]
    result = {"machine": f"{platform.machine()} {platform.python_version()}", "rows": rows,
              "balance_ratio_largest_vs_empty": round(rows[-1]["balance_ms"] / base, 2)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ledger.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
