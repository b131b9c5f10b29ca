"""Ledger benchmark: append latency, whole-process `tx balance`, and rebuilding a deleted index.

Run: python3 benchmarks/bench_ledger.py [--sizes 0,10000,1000000] [--rebuild 1000000] [--runs 9]
Writes benchmarks/results/ledger.json.

* balance: `tx balance` at 0, 10,000 and 1,000,000 transactions (goal, issue 2: within 1.5x of 0).
* rebuild (issue 11.7): `tx balance` in a fresh process after deleting index.sqlite, at 1,000,000
  transactions: goal at most 15 s and 300 MB peak RSS.  Paired, in the same run, with a named anchor:
  a plain-Python process that reads the same ledger.toml and ``json.loads`` every value
  (``anchor_read_json``), i.e. the least any Python reader of the file pays.  Peak RSS is the child's
  ``ru_maxrss`` measured by a wrapper process whose only child is the measured one.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

from token_exchange.ledger.backends.toml import HEADER, render_batch
from token_exchange.ledger.txn import REWARDS, chain, make_txn, ts_text
from token_exchange.services.exchange import Exchange
from token_exchange.services.setup import init_home

RESULTS = Path(__file__).parent / "results"
AGENTS = ["claude", "builder", "lambda", "spark", "observer", "zero"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
ANCHOR = r"""
import json, sys
n = 0
with open(sys.argv[1], encoding="utf-8") as f:
    for line in f:
        key, sep, raw = line.partition(" = ")
        if sep:
            json.loads(raw)
            n += 1
print(n)
"""
MEASURE = r"""
import resource, subprocess, sys, time
t = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True)
wall = time.perf_counter() - t
if proc.returncode:
    sys.exit(proc.stderr.decode()[-500:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(wall, r.ru_maxrss, r.ru_utime + r.ru_stime)
"""


def write_ledger(home: Path, count: int, batch: int = 1000) -> float:
    """Write ``count`` chained awards straight into HOME/ledger.toml in the journal's own format (batches of
    ``batch``, as `tx import` or a busy hook would) after the home's opening transactions."""
    start = time.perf_counter()
    ex = Exchange(home)
    idx = ex.ledger.fresh()
    last = idx.meta("last_hash") or ""
    ex.close()
    with open(home / "ledger.toml", "ab") as f:
        if f.tell() == 0:
            f.write(HEADER)
        for lo in range(0, count, batch):
            txns = [make_txn(f"bulk-{i}", "award", REWARDS, AGENTS[i % 6], 10_000 + i % 997, agent=AGENTS[i % 6],
                             project="bench", description="benchmark award", source={"type": "bench"},
                             breakdown={"contract": "default"}, ts=ts_text(T0 + timedelta(seconds=i)))
                    for i in range(lo, min(count, lo + batch))]
            txns = chain(txns, last)
            last = txns[-1].hash
            f.write(render_batch(txns))
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


def measured(args: list[str]) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MB, CPU seconds) of one fresh process running ``args``.  On a shared machine
    the CPU time (user + system) is what the same run takes alone; both are reported."""
    out = subprocess.run([sys.executable, "-c", MEASURE, *args], check=True, capture_output=True, text=True).stdout
    wall, kb, cpu = out.split()
    return float(wall), int(kb) / 1024, float(cpu)


def append_latency(ex: Exchange, runs: int) -> float:
    times = []
    for i in range(runs):
        t = time.perf_counter()
        ex.ledger.append(make_txn(f"lat-{time.time_ns()}-{i}", "award", REWARDS, "zero", 1, agent="zero"))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def rebuild(tmp: Path, size: int, runs: int) -> dict[str, object]:
    home = tmp / f"rebuild{size}"
    init_home(home, "toml")
    write = write_ledger(home, size)
    tx = [sys.executable, "-m", "token_exchange", "--home", str(home), "balance", "claude", "--json"]
    anchor = [sys.executable, "-c", ANCHOR, str(home / "ledger.toml")]
    pairs = []
    for _ in range(runs):  # paired: anchor and rebuild alternate, so drift hits both alike
        for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
            (home / name).unlink(missing_ok=True)
        r_wall, r_rss, r_cpu = measured(tx)
        a_wall, a_rss, a_cpu = measured(anchor)
        pairs.append((r_wall, r_rss, a_wall, a_rss, r_cpu, a_cpu))
        print(f"  rebuild {r_wall:.2f} s ({r_cpu:.2f} s CPU) {r_rss:.0f} MB; anchor {a_wall:.2f} s ({a_cpu:.2f} s CPU) "
              f"{a_rss:.0f} MB", file=sys.stderr)
    med = lambda i: statistics.median(p[i] for p in pairs)  # noqa: E731
    return {"transactions": size + 6, "ledger_mb": round((home / "ledger.toml").stat().st_size / 1e6, 1),
            "index_mb": round((home / "index.sqlite").stat().st_size / 1e6, 1), "write_s": round(write, 1),
            "runs": runs, "rebuild_s": round(med(0), 2), "rebuild_peak_rss_mb": round(max(p[1] for p in pairs), 1),
            "anchor": "anchor_read_json: plain Python reads ledger.toml and json.loads every value",
            "anchor_s": round(med(2), 2), "anchor_peak_rss_mb": round(max(p[3] for p in pairs), 1),
            "rebuild_vs_anchor": round(med(0) / med(2), 2),
            "rebuild_cpu_s": round(med(4), 2), "anchor_cpu_s": round(med(5), 2),
            "rebuild_vs_anchor_cpu": round(med(4) / med(5), 2),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "goal": "rebuild_s <= 15 and rebuild_peak_rss_mb <= 300 (issue 11.7)"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="0,10000,1000000")
    ap.add_argument("--rebuild", type=int, default=1_000_000, help="transactions for the rebuild figure (0: skip)")
    ap.add_argument("--rebuild-runs", type=int, default=3)
    ap.add_argument("--runs", type=int, default=9)
    opts = ap.parse_args()
    rows = []
    result: dict[str, object] = {"machine": f"{platform.machine()} {platform.python_version()}"}
    with tempfile.TemporaryDirectory() as tmp:
        if opts.rebuild:
            result["rebuild"] = rebuild(Path(tmp), opts.rebuild, opts.rebuild_runs)
            print(json.dumps(result["rebuild"]), file=sys.stderr)
        for size in [int(s) for s in opts.sizes.split(",") if s]:
            home = Path(tmp) / f"h{size}"
            init_home(home, "toml")
            load = write_ledger(home, size) if size else 0.0
            ex = Exchange(home)
            ex.ledger.fresh()
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
    if rows:
        result["rows"] = rows
        result["balance_ratio_largest_vs_empty"] = round(rows[-1]["balance_ms"] / rows[0]["balance_ms"], 2)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ledger.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
