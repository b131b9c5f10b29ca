"""Git-notes ledger: cost of one append and of `tx balance` as the ledger grows.

    python3 benchmarks/bench_notes.py [--sizes 100,1000,10000] [--out benchmarks/results/notes.json]

For each size N a fresh repository gets N transactions: half are commit awards attached to real
commits (made with `git fast-import`), half are awards spread over past hours (hourly anchors),
written in batches through the ledger.  Then, medians of:

* ``append_ms``: one `Exchange.award` in-process (lock, catch-up check, new note blob + trees + commit,
  `git update-ref` CAS, index insert);
* ``commit_award_ms``: one `Exchange.commit` for a new commit (its note is a new note);
* ``tx_award_ms`` / ``tx_balance_ms``: the whole `tx award` / `tx balance claude` process;
* ``catch_up_1_ms``: a second home on the same repository catching up one new transaction;
* ``full_read_ms``: `read_all()` of the whole notes ledger (what `tx doctor` pays; appends never do).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from token_exchange import clock  # noqa: E402
from token_exchange.amounts import SCALE  # noqa: E402
from token_exchange.ledger.timestamps import ts_text  # noqa: E402
from token_exchange.ledger.txn import REWARDS, make_txn  # noqa: E402
from token_exchange.services.exchange import Exchange  # noqa: E402
from token_exchange.services.setup import init_home  # noqa: E402

ENV = {"GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@example.com", "GIT_COMMITTER_NAME": "Bench",
       "GIT_COMMITTER_EMAIL": "bench@example.com", "GIT_CONFIG_NOSYSTEM": "1"}


def git(repo: Path, *args: str, input: bytes | None = None) -> str:
    return subprocess.run(["git", *args], cwd=repo, input=input, capture_output=True, check=True
                          ).stdout.decode()


def make_commits(repo: Path, n: int) -> list[str]:
    lines = []
    for i in range(n):
        msg = f"feat: change {i}\n".encode()
        lines.append(b"commit refs/heads/main\nmark :%d\ncommitter Bench <bench@example.com> %d +0000\n"
                     b"data %d\n%s" % (i + 1, 1_700_000_000 + i, len(msg), msg))
        if i:
            lines.append(b"from :%d\n" % i)
        lines.append(b"\n")
    git(repo, "fast-import", "--quiet", input=b"".join(lines))
    return git(repo, "rev-list", "--reverse", "main").split()


START = datetime(2025, 1, 1, tzinfo=UTC)


def populate(ex: Exchange, repo: Path, n: int) -> None:
    shas = make_commits(repo, max(1, n // 2))
    start = START
    agents = sorted(ex.cfg.agents)
    batch = []
    for i in range(n):
        agent = agents[i % len(agents)]
        ts = ts_text(start + timedelta(minutes=7 * i))
        if i % 2 == 0 and i // 2 < len(shas):
            sha = shas[i // 2]
            t = make_txn(f"commit:{sha}:{agent}", "earn", REWARDS, agent, 5 * SCALE, agent=agent, project="bench",
                         description=f"feat: change {i // 2}", source={"type": "commit", "sha": sha},
                         ref=f"commit:{sha}", ts=ts)
        else:
            t = make_txn(f"award:bench-{i}", "award", REWARDS, agent, SCALE, agent=agent, source={"type": "bench"},
                         description="bench", ts=ts)
        batch.append(t)
        if len(batch) == 500:
            ex.ledger.append_many(batch)
            batch = []
    if batch:
        ex.ledger.append_many(batch)


def median_ms(fn, runs: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for k in range(runs):
        t0 = time.perf_counter()
        fn(k)
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


def bench(n: int, runs: int) -> dict[str, float | int]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        os.environ.update(ENV, HOME=str(base), GIT_CONFIG_GLOBAL=str(base / "gitconfig"))
        repo = base / "repo"
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        init_home(str(repo / ".exchange"), "notes")
        ex = Exchange(repo / ".exchange")
        t0 = time.perf_counter()
        # The history is dated in the past: its accounts are opened before it (a ledger never goes back in
        # time), and it is written at a "now" after its last record.
        with clock.injected(lambda: START - timedelta(hours=1)), ex.ledger.locked() as idx:
            for agent in sorted(ex.cfg.agents):
                ex.ensure_open(idx, agent)
        with clock.injected(lambda: START + timedelta(minutes=7 * n + 1)):
            populate(ex, repo, n)
        populate_s = time.perf_counter() - t0
        out: dict[str, float | int] = {"transactions": ex.ledger.fresh().count(),
                                       "populate_s": round(populate_s, 1)}
        out["append_ms"] = median_ms(lambda k: ex.award("claude", SCALE, "bench", f"a{k}", id=f"award:m{k}"), runs)

        def commit_award(k: int) -> None:
            git(repo, "commit", "-q", "--allow-empty", "-m", f"fix: bench {k}")
            sha = git(repo, "rev-parse", "HEAD").strip()
            t0 = time.perf_counter()
            ex.commit("claude@aygp-dr.ai", "bench", f"fix: bench {k}", sha=sha, reward_id=sha)
            times.append((time.perf_counter() - t0) * 1000)

        times: list[float] = []
        for k in range(runs):
            commit_award(k)
        out["commit_award_ms"] = round(statistics.median(times), 2)
        cli = [sys.executable, "-m", "token_exchange"]
        out["tx_award_ms"] = median_ms(lambda k: subprocess.run(
            [*cli, "award", "claude", "1", "bench", f"cli {k}", "--id", f"award:cli{k}"], cwd=repo,
            capture_output=True, check=True), max(3, runs // 4))
        out["tx_balance_ms"] = median_ms(lambda k: subprocess.run(
            [*cli, "balance", "claude"], cwd=repo, capture_output=True, check=True), max(3, runs // 4))
        # A second home on the same repository (TOKEN_EXCHANGE_HOME): catch up one new record.
        other = Exchange(base / "other-home", cfg=ex.cfg)
        (base / "other-home").mkdir()
        os.chdir(repo)
        other.ledger.fresh()

        def catch_up(k: int) -> None:
            ex.award("builder", SCALE, "bench", f"c{k}", id=f"award:c{k}")
            t0 = time.perf_counter()
            other.ledger.fresh()
            times.append((time.perf_counter() - t0) * 1000)

        times = []
        for k in range(runs):
            catch_up(k)
        out["catch_up_1_ms"] = round(statistics.median(times), 2)
        out["full_read_ms"] = median_ms(lambda k: ex.ledger.journal.read_all(), 3)
        os.chdir(ROOT)
        ex.close()
        other.close()
        return out


def toml_append(runs: int) -> float:
    """The TOML backend's append on the same machine, for scale."""
    with tempfile.TemporaryDirectory() as tmp:
        init_home(str(Path(tmp) / "home"), "toml")
        ex = Exchange(Path(tmp) / "home")
        ex.award("claude", SCALE, "bench", "warm", id="award:warm")
        ms = median_ms(lambda k: ex.award("claude", SCALE, "bench", f"t{k}", id=f"award:t{k}"), runs)
        ex.close()
        return ms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "notes.json"))
    args = ap.parse_args()
    results = {}
    for n in (int(s) for s in args.sizes.split(",")):
        results[str(n)] = bench(n, args.runs)
        print(n, results[str(n)], flush=True)
    baseline = {
        "python_startup_ms": median_ms(lambda k: subprocess.run([sys.executable, "-c", "pass"], check=True), 7),
        "git_rev_parse_ms": median_ms(lambda k: subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT,
                                                               capture_output=True, check=True), 7),
        "toml_append_ms": toml_append(args.runs),
    }
    print("baseline", baseline, flush=True)
    doc = {"benchmark": "git-notes ledger", "git": git(ROOT, "--version").strip(), "baseline": baseline,
           "python": sys.version.split()[0], "cpus": os.cpu_count(),
           "load_average": [round(x, 2) for x in os.getloadavg()], "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
