"""Benchmark: `tx-bd preview-all` over a 10,000-issue beads export, whole process.

Generates the export with fixtures/gen_beads_export.py (deterministic), puts it in a temp git
repo as .beads/issues.jsonl with an initialised exchange, and times (median of --runs, wall and
CPU of the child):

* `python -c pass` and `python -c "import token_exchange.cli.bd"`: the floor;
* `tx-bd preview-all --json` and the plain table, reading the JSONL export (no bd on PATH);
* the in-process parts: reading + validating the export (each line parsed on its own), planning every
  open issue with ``rules.engine.plan_issue``, JSON encoding;
* `tx-bd sync --json` paying every closed issue once, then the no-op re-sync;
* the hook bd runs after each close/update (`tx-bd hook ID EVENT`, issue on stdin), whole process;
* `tx-bd preview-all --json` through the bd stand-in (fixtures/bd) over --bd-count issues: the
  stand-in is a Python script whose `list` is quadratic, so this measures it more than us.

Python processes are timed twice: as this sandbox runs them (PYTHONDONTWRITEBYTECODE=1, every
import compiled from source) and with bytecode cached (as after a normal pip install).
Writes benchmarks/results/bd.json.  Usage: python benchmarks/bench_bd.py [--count N] [--runs R]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "bd.json"
GEN = ROOT / "fixtures" / "gen_beads_export.py"


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed_proc(cmd: list[str], cwd: Path, env: dict[str, str], runs: int, keep: list[bytes] | None = None,
               ) -> dict[str, float]:
    walls, cpus = [], []
    for _ in range(runs):
        c0, t0 = child_cpu(), time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, check=False)
        if keep is not None:
            keep.append(proc.stdout)
        walls.append(time.perf_counter() - t0)
        cpus.append(child_cpu() - c0)
        if proc.returncode != 0:
            raise SystemExit(f"{cmd} failed: {proc.stderr.decode()[-500:]}")
    return {"wall_s": round(statistics.median(walls), 4), "cpu_s": round(statistics.median(cpus), 4)}


def timed_proc_input(cmd: list[str], cwd: Path, env: dict[str, str], runs: int, data: bytes) -> dict[str, float]:
    walls, cpus = [], []
    for _ in range(runs):
        c0, t0 = child_cpu(), time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, input=data, capture_output=True, check=False)
        walls.append(time.perf_counter() - t0)
        cpus.append(child_cpu() - c0)
        if proc.returncode != 0:
            raise SystemExit(f"{cmd} failed: {proc.stderr.decode()[-500:]}")
    return {"wall_s": round(statistics.median(walls), 4), "cpu_s": round(statistics.median(cpus), 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--bd-count", type=int, default=1_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-bd-"))
    try:
        repo = tmp / "repo"
        (repo / ".beads").mkdir(parents=True)
        export = repo / ".beads" / "issues.jsonl"
        subprocess.run([sys.executable, str(GEN), "--count", str(args.count), "--out", str(export)], check=True)
        lines = export.read_bytes().count(b"\n")
        no_bd_path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                     if p and not (Path(p) / "bd").exists())
        base_env = {**os.environ, "PATH": no_bd_path, "HOME": str(tmp), "GIT_CONFIG_GLOBAL": os.devnull,
                    "GIT_CONFIG_NOSYSTEM": "1", "TOKEN_EXCHANGE_HOME": str(repo / ".exchange")}
        base_env.pop("BEADS_DIR", None)
        subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True, env=base_env)
        py = sys.executable
        subprocess.run([py, "-m", "token_exchange", "init"], cwd=repo, check=True, env=base_env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cached = {**base_env, "PYTHONPYCACHEPREFIX": str(tmp / "pycache")}
        cached.pop("PYTHONDONTWRITEBYTECODE", None)
        no_pyc = {**base_env, "PYTHONDONTWRITEBYTECODE": "1"}
        txbd = [py, "-m", "token_exchange.cli.bd"]
        procs: dict[str, dict[str, dict[str, float]]] = {}
        cases = {
            "python -c pass": [py, "-c", "pass"],
            "import token_exchange.cli.bd": [py, "-c", "import token_exchange.cli.bd"],
            "tx-bd preview-all --json": [*txbd, "preview-all", "--json"],
            "tx-bd preview-all (table, piped)": [*txbd, "preview-all"],
        }
        subprocess.run(cases["tx-bd preview-all --json"], cwd=repo, env=cached, check=True,
                       stdout=subprocess.DEVNULL)  # warm the bytecode cache
        for name, cmd in cases.items():
            procs[name] = {"bytecode_cached": timed_proc(cmd, repo, cached, args.runs),
                           "no_bytecode": timed_proc(cmd, repo, no_pyc, args.runs)}
        out = subprocess.run(cases["tx-bd preview-all --json"], cwd=repo, env=cached, capture_output=True, check=True)
        listing = json.loads(out.stdout)

        # in-process parts
        from token_exchange.beads import issues as bdi
        from token_exchange.beads import payee as bdp
        from token_exchange.beads import payments
        from token_exchange.cli.output import dumps
        from token_exchange.rules import config

        cfg = config.load(repo / ".exchange" / "config.toml")
        clock = time.process_time  # CPU: the machine may be shared and loaded
        t = clock()
        issues = bdi.read_jsonl(export)
        t_read = clock() - t
        open_work = [i for i in issues if i.status not in ("closed", "pinned") and not i.pinned and i.is_work]
        t = clock()
        view = payments.PaidIssues({})
        plans = [payments.plan(cfg, i, bdp.payee_for(cfg, i, None, None), view, as_closed=True) for i in open_work]
        t_plans = clock() - t
        t = clock()
        dumps({"issues": [bdi.issue_json(i, p.reward) for i, p in zip(open_work, plans, strict=True)]})
        t_json = clock() - t

        # sync: pay every closed issue once (one atomic append), then the no-op re-run
        sync_env = {**cached, "BD_ACTOR": "zero"}
        first: list[bytes] = []
        again: list[bytes] = []
        sync_first = timed_proc([*txbd, "sync", "--json"], repo, sync_env, 1, first)
        sync_again = timed_proc([*txbd, "sync", "--json"], repo, sync_env, args.runs, again)
        first_doc, again_doc = json.loads(first[0]), json.loads(again[-1])

        # the hook bd runs after every close and update (whole process, the issue on stdin): an update of an
        # open issue (nothing to do) and a close of an issue already paid (the ledger holds the sync's payments)
        records = [json.loads(x) for x in export.read_text().splitlines() if x.strip()]
        opened = next(r for r in records if r.get("status") == "open" and r.get("_type", "issue") == "issue")
        paid = next(r for r in records if r.get("id") == first_doc["paid"][0]["id"])
        hooks = {}
        for name, rec, event in (("on_update, open issue", opened, "update"), ("on_close, already paid", paid, "close")):
            hooks[name] = timed_proc_input([*txbd, "hook", rec["id"], event], repo, sync_env, args.runs,
                                           json.dumps(rec).encode())

        # through the bd stand-in (a smaller store: it is a Python script)
        small = tmp / "small"
        (small / ".beads").mkdir(parents=True)
        subprocess.run([py, str(GEN), "--count", str(args.bd_count), "--out", str(small / ".beads" / "issues.jsonl")],
                       check=True)
        subprocess.run(["git", "init", "-q", "-b", "main"], cwd=small, check=True, env=base_env)
        bd_env = {**cached, "PATH": f"{ROOT / 'fixtures'}{os.pathsep}{no_bd_path}"}
        # the stand-in keeps its own database (like bd's Dolt data): import the export into it
        (small / ".beads" / "config.yaml").write_text("issue-prefix: tx\ntypes.custom: agent,convoy,docs,security\n")
        subprocess.run([py, str(ROOT / "fixtures" / "bd"), "import"], cwd=small, env=bd_env, check=True,
                       stderr=subprocess.DEVNULL)
        via_bd = timed_proc([*txbd, "preview-all", "--json"], small, bd_env, max(1, args.runs // 2))
        bd_alone = timed_proc([py, str(ROOT / "fixtures" / "bd"), "list", "--status",
                               "open,in_progress,blocked,deferred,hooked", "--limit", "0", "--json"], small, bd_env,
                              max(1, args.runs // 2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    main_fig = procs["tx-bd preview-all --json"]["bytecode_cached"]["wall_s"]
    main_cpu = procs["tx-bd preview-all --json"]["bytecode_cached"]["cpu_s"]
    result = {
        "benchmark": "tx-bd preview-all over a generated beads export (whole process)",
        "issues_in_export": args.count, "export_lines": lines, "open_issues_listed": listing["count"],
        "total_at_stake": str(listing["total"]), "runs": args.runs,
        "goal_s": 1.0, "preview_all_json_wall_s": main_fig, "preview_all_json_cpu_s": main_cpu,
        "meets_goal_wall": main_fig < 1.0, "meets_goal_cpu": main_cpu < 1.0,
        "processes": procs,
        "in_process_cpu_s": {"read_and_validate_jsonl": round(t_read, 4), "plan_issue_each": round(t_plans, 4),
                             "json_encode": round(t_json, 4)},
        "sync": {"first_run_paid_issues": len(first_doc["paid"]), "first_run_total": str(first_doc["total_paid"]),
                 "first_run": sync_first, "rerun_noop": sync_again,
                 "rerun_paid": len(again_doc["paid"]), "rerun_already_paid": again_doc["already_paid"]},
        "hook_whole_process": hooks,
        "via_bd_standin": {"issues": args.bd_count, "tx_bd_preview_all_json": via_bd,
                           "bd_standin_list_alone": bd_alone},
        "python": platform.python_version(), "platform": platform.platform(),
        "cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
