"""Benchmark: `tx report` over a 10,000-commit range against `git log` over the same range.

Builds two 10,000-commit repositories with `git fast-import` (seconds): one whose commits carry
`Reward-Id:` trailers (the commit-msg hook installed: no patch-id needed) and one without (every
reward id needs the batched patch-id pipeline).  Times, in the same run, median of --runs:

* `git log` (default format) over merge-base..head: the baseline;
* the report in-process (collect + compute + render; the interpreter already started);
* the whole `tx report` CLI process (Python start-up and imports included);

and writes benchmarks/results/report.json.  Usage: python benchmarks/bench_report.py [--commits N]
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

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "report.json"
EMAILS = ["claude@aygp-dr.ai", "builder@aygp-dr.ai", "spark@aygp-dr.ai", "someone@example.com"]
SUBJECTS = ["fix: handle empty input", "feat: add exporter", "test: cover the parser", "refactor: split module",
            "docs: update readme", "chore: bump deps"]


def build_repo(path: Path, commits: int, trailers: bool) -> None:
    """main has one base commit; branch `feature` has `commits` commits on top (one file change each)."""
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=env)
    out = bytearray()
    t0 = 1_700_000_000

    def data(b: bytes) -> None:
        out.extend(b"data %d\n" % len(b))
        out.extend(b)

    for i in range(commits + 1):
        email = EMAILS[i % len(EMAILS)]
        ref = b"refs/heads/main" if i == 0 else b"refs/heads/feature"
        out.extend(b"commit %s\nmark :%d\n" % (ref, i + 1))
        out.extend(f"author Dev {i % 7} <{email}> {t0 + i} +0000\ncommitter CI <ci@example.com> {t0 + i} +0000\n"
                   .encode())
        msg = f"{SUBJECTS[i % len(SUBJECTS)]} {i}\n\nBody of change {i}.\n"
        if trailers:
            msg += f"\nReward-Id: R{i:040x}\n"
        data(msg.encode())
        if i:
            out.extend(b"from :%d\n" % i)
        out.extend(f"M 100644 inline src/mod{i % 97}.py\n".encode())
        data(f"# revision {i}\nVALUE = {i}\n".encode())
        out.extend(b"\n")
    subprocess.run(["git", "fast-import", "--quiet"], cwd=path, input=bytes(out), check=True, env=env)


def timed(fn, runs: int) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def sh(cmd: list[str], cwd: Path) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def bench_repo(repo: Path, runs: int) -> dict[str, float]:
    from token_exchange import report as rep
    from token_exchange.output import dumps

    mb = subprocess.run(["git", "merge-base", "main", "feature"], cwd=repo, capture_output=True, text=True,
                        check=True).stdout.strip()
    rng = f"{mb}..feature"
    shas = [c.sha for c in rep.read_commits(repo, mb, "feature")]
    tx = [sys.executable, "-m", "token_exchange", "report", "--base", "main", "--head", "feature", "--no-ledger"]
    res = {
        "git_log_s": timed(lambda: sh(["git", "log", rng], repo), runs),
        "git_log_report_format_s": timed(lambda: sh(["git", "log", "--format=%H%x00%P%x00%aE%x00%aN%x00%B",
                                                     rng], repo), runs),
        "read_commits_s": timed(lambda: rep.read_commits(repo, mb, "feature"), runs),
        "patch_ids_all_s": timed(lambda: rep.patch_ids(repo, shas), runs),
        "inprocess_markdown_s": timed(lambda: rep.render_markdown(
            rep.build(repo, "main", "feature", use_ledger=False, want_ids=False)), runs),
        "inprocess_json_with_ids_s": timed(lambda: dumps(rep.to_json(
            rep.build(repo, "main", "feature", use_ledger=False, want_ids=True))), runs),
        "cli_markdown_s": timed(lambda: sh([*tx, "--format", "markdown"], repo), runs),
        "cli_json_with_ids_s": timed(lambda: sh([*tx, "--format", "json"], repo), runs),
    }
    res["python_import_s"] = timed(lambda: sh([sys.executable, "-c", "import token_exchange.cli"], repo), runs)
    base = res["git_log_s"]
    for k in ("inprocess_markdown_s", "inprocess_json_with_ids_s", "cli_markdown_s", "cli_json_with_ids_s"):
        res[k.replace("_s", "_x_git_log")] = round(res[k] / base, 2)
    return {k: round(v, 4) for k, v in res.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--commits", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    result: dict[str, object] = {"commits": args.commits, "runs": args.runs, "statistic": "median seconds",
                                 "python": platform.python_version(), "cpus": os.cpu_count(),
                                 "git": subprocess.run(["git", "--version"], capture_output=True, text=True)
                                 .stdout.strip(), "load_average_1m": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        for name, trailers in (("with_trailers", True), ("without_trailers", False)):
            repo = Path(tmp) / name
            t = time.perf_counter()
            build_repo(repo, args.commits, trailers)
            result[f"build_{name}_s"] = round(time.perf_counter() - t, 2)
            result[name] = bench_repo(repo, args.runs)
            print(name, json.dumps(result[name], indent=1), file=sys.stderr)
    result["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
