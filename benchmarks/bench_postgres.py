"""The postgres backend against the TOML backend, paired in one run: spend latency and throughput.

Run: python3 benchmarks/bench_postgres.py [--dsn DSN] [--spends 400] [--hosts 8] [--per-host 150]
(DSN default: $TOKEN_EXCHANGE_TEST_DSN, else postgresql://postgres@127.0.0.1:5432/test; a fresh
schema is made and dropped).  Writes benchmarks/results/postgres.json.

Two workloads, each run on both backends, alternating in rounds so drift hits both alike:

- one process: ``llm.spend`` after ``llm.spend`` (limits checked, one write each), per-call latency;
- 8 processes writing one ledger: for TOML the 8 share one home (a flock serialises them; TOML
  cannot span hosts), for postgres each has its own home pointing at the database (standing for 8
  hosts).  Wall time for all their spends gives throughput; each call's latency includes the wait
  for the lock.

Loopback only (127.0.0.1); every loop is bounded by its count.  Limits are wide open: this measures
the write path, not refusals (tests/test_postgres_load.py races the limits).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from token_exchange.rules import config as config_mod
from token_exchange.services import spending as llm
from token_exchange.services.exchange import Exchange

RESULTS = Path(__file__).parent / "results"
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
WIDE = "[agents.observer.limits]\nhourly = 1000000\ndaily = 1000000\nreserve = 0\nburst = 100000\n"


class Ticker:
    """An injected clock that moves 1 ms per call (every spend at its own time, all inside one hour)."""

    def __init__(self, offset: int) -> None:
        self.n = offset

    def __call__(self) -> datetime:
        self.n += 1
        return T0 + timedelta(milliseconds=self.n)


def toml_home(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.toml").write_text(config_mod.default_text() + "\n" + WIDE)
    return path


def pg_home(path: Path, dsn: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    text = config_mod.default_text().replace('backend = "toml"', f'backend = "postgres"\ndsn = {json.dumps(dsn)}', 1)
    (path / "config.toml").write_text(text + "\n" + WIDE)
    return path


def spends(home: Path, tag: str, n: int, offset: int) -> list[float]:
    ex = Exchange(home, clock=Ticker(offset))
    ex.open_all()
    out = []
    for i in range(n):
        t = time.perf_counter()
        llm.spend(ex, "observer", "bench", 500, model="gemini-pro", id=f"{tag}-{i}")
        out.append(time.perf_counter() - t)
    ex.close()
    return out


def _worker(home: str, tag: str, n: int, offset: int, start: Any, results: Any) -> None:
    ex = Exchange(Path(home), clock=Ticker(offset))
    ex.ledger.fresh()
    start.wait(timeout=120)
    lat = []
    for i in range(n):
        t = time.perf_counter()
        llm.spend(ex, "observer", "bench", 500, model="gemini-pro", id=f"{tag}-{i}")
        lat.append(time.perf_counter() - t)
    ex.close()
    results.put(lat)


def many(homes: list[Path], tag: str, per_host: int, offset: int) -> tuple[float, list[float]]:
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(h), f"{tag}-{n}", per_host, offset + n * 10_000_000, start,
                                               results)) for n, h in enumerate(homes)]
    for p in procs:
        p.start()
    time.sleep(1.0)  # every worker connected and waiting
    t = time.perf_counter()
    start.set()
    lat = [x for _ in procs for x in results.get(timeout=900)]
    wall = time.perf_counter() - t
    for p in procs:
        p.join(timeout=60)
    return wall, lat


def summary(lat: list[float], wall: float | None = None) -> dict[str, float]:
    ms = sorted(x * 1000 for x in lat)
    q = statistics.quantiles(ms, n=100)
    total = wall if wall is not None else sum(lat)
    return {"calls": len(ms), "mean_ms": round(statistics.fmean(ms), 3), "p50_ms": round(q[49], 3),
            "p95_ms": round(q[94], 3), "p99_ms": round(q[98], 3), "per_s": round(len(ms) / total, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", default=os.environ.get("TOKEN_EXCHANGE_TEST_DSN",
                                                    "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--spends", type=int, default=400)
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument("--per-host", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    import psycopg

    schema = f"te_bench_{uuid.uuid4().hex[:12]}"
    dsn = psycopg.conninfo.make_conninfo(args.dsn, options=f"-csearch_path={schema}")
    single: dict[str, list[float]] = {"toml": [], "postgres": []}
    multi: dict[str, list[tuple[float, list[float]]]] = {"toml": [], "postgres": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for r in range(args.rounds):
                offset = r * 100_000_000
                single["toml"] += spends(toml_home(root / f"t1-{r}"), f"t1-{r}", args.spends, offset)
                single["postgres"] += spends(pg_home(root / f"p1-{r}", dsn), f"p1-{r}", args.spends, offset)
                shared = toml_home(root / f"t8-{r}")
                Exchange(shared, clock=Ticker(0)).open_all()
                multi["toml"].append(many([shared] * args.hosts, f"t8-{r}", args.per_host, offset + 1_000_000))
                homes = [pg_home(root / f"p8-{r}-{n}", dsn) for n in range(args.hosts)]
                Exchange(homes[0], clock=Ticker(0)).open_all()
                multi["postgres"].append(many(homes, f"p8-{r}", args.per_host, offset + 1_000_000))
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(schema)))
    result: dict[str, Any] = {
        "machine": f"{platform.machine()} {platform.python_version()}, {os.cpu_count()} cores",
        "server": "PostgreSQL on 127.0.0.1 (same machine), psycopg " + psycopg.__version__,
        "rounds": args.rounds,
        "one_process": {k: summary(v) for k, v in single.items()},
        f"{args.hosts}_processes": {k: summary([x for _, lat in v for x in lat], sum(w for w, _ in v))
                                    for k, v in multi.items()},
    }
    one, eight = result["one_process"], result[f"{args.hosts}_processes"]
    result["postgres_over_toml"] = {
        "one_process_p50": round(one["postgres"]["p50_ms"] / one["toml"]["p50_ms"], 2),
        f"{args.hosts}_processes_throughput": round(eight["postgres"]["per_s"] / eight["toml"]["per_s"], 2)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "postgres.json").write_text(json.dumps(result, indent=2) + "\n")
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
