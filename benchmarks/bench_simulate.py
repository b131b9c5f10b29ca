"""Benchmark: `tx simulate` through the real engine (Exchange.commit, llm.spend, pools).

Times, in-process (wall and CPU of this process, best of --runs):

* the seed's day: 24 h, 6 agents;
* a year: 8,760 h, 6 agents (contracts exhaust within days; after that agents only spend);
* 1,000 agents (the six strategies, cycled) for 24 h;
* --out: the same day written to a kept home (ledger.toml rendered, index saved).

Also reports transactions per second and the machine's load average, since the figures
depend on it.  Writes benchmarks/results/simulate.json.
Usage: python benchmarks/bench_simulate.py [--runs R] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "simulate.json"
sys.path.insert(0, str(ROOT))

from token_exchange.sim import simulate  # noqa: E402


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def brief(f: dict[str, object]) -> dict[str, object]:
    """Findings without the (possibly 1,000-name) lists: booleans and counts."""
    return {k: (len(v) if isinstance(v, list) else v) for k, v in f.items()}


def measure(name: str, runs: int, **kw: object) -> dict[str, object]:
    best: dict[str, object] | None = None
    for _ in range(runs):
        out = None
        if kw.get("out") == "tmp":
            out = Path(tempfile.mkdtemp(prefix="tx-bench-")) / "home"
        args = {**kw, "out": out}
        w0, c0 = time.perf_counter(), cpu()
        r = simulate(**args)  # type: ignore[arg-type]
        wall, used = time.perf_counter() - w0, cpu() - c0
        row = {"case": name, "hours": r.hours, "agents": len(r.agents), "transactions": r.transactions,
               "wall_s": round(wall, 3), "cpu_s": round(used, 3),
               "txns_per_s": round(r.transactions / wall), "findings": brief(r.findings())}
        if best is None or wall < best["wall_s"]:  # type: ignore[operator]
            best = row
        print(f"{name}: {r.transactions} transactions in {wall:.2f} s wall, {used:.2f} s CPU", flush=True)
    assert best is not None
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="a month instead of a year, 200 agents instead of 1,000")
    a = ap.parse_args()
    cases = [measure("day, 6 agents", max(a.runs, 3), hours=24, seed=1),
             measure("day, 6 agents, --out (ledger.toml written)", a.runs, hours=24, seed=1, out="tmp"),
             measure("year, 6 agents" if not a.quick else "month, 6 agents", a.runs,
                     hours=8760 if not a.quick else 720, seed=1),
             measure("day, 1000 agents" if not a.quick else "day, 200 agents", a.runs, hours=24, seed=1,
                     agents=1000 if not a.quick else 200)]
    data = {"benchmark": "tx simulate (in-process; real Exchange.commit / llm.spend / pools)",
            "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(), "cases": cases}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
