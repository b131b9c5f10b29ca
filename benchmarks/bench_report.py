"""Benchmark: `tx report` over a 10,000-commit range against `git log` over the same range.

Builds two 10,000-commit repositories with `git fast-import` (seconds): one whose commits carry
`Reward-Id:` trailers (the commit-msg hook installed: no patch-id needed) and one without (every
reward id needs the batched patch-id pipeline).  Times, in the same run, median of --runs:

* `git log` (default format) over merge-base..head: the baseline;
* the whole `tx report` process (Python start-up and imports included), from a regular install of this
  checkout in a fresh venv (as CI installs it), taking turns with `git log` so both see the same load;
* the report in-process (collect + compute + render; the interpreter already started);

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


def interleaved(cmds: dict[str, list[str]], cwd: Path, runs: int) -> dict[str, float]:
    """Median whole-process seconds per command, taking turns so load changes hit every command alike."""
    samples: dict[str, list[float]] = {k: [] for k in cmds}
    for i in range(runs + 1):
        for name, cmd in cmds.items():
            t = time.perf_counter()
            sh(cmd, cwd)
            if i:  # the first round warms the page cache
                samples[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in samples.items()}


def install_venv(base: Path) -> Path:
    """A venv with a regular install of this checkout (no editable finder, no dev site .pth files), as CI has."""
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(ROOT)], check=True,
                   env={**os.environ, "PIP_CACHE_DIR": str(base / "pip-cache")})
    return venv / "bin" / "tx"


def bench_repo(repo: Path, runs: int, tx_bin: Path) -> dict[str, float]:
    from token_exchange import git
    from token_exchange.cli.output import dumps
    from token_exchange.report import build as rep
    from token_exchange.report import range as history
    from token_exchange.report import render

    mb = subprocess.run(["git", "merge-base", "main", "feature"], cwd=repo, capture_output=True, text=True,
                        check=True).stdout.strip()
    rng = f"{mb}..feature"
    shas = [c.sha for c in history.read_range(repo, "main", "feature").commits]
    tx = [str(tx_bin), "report", "--base", "main", "--head", "feature", "--no-ledger"]
    res = interleaved({"git_log_s": ["git", "log", rng],
                       "git_log_report_format_s": ["git", "log", "--format=%H%x00%P%x00%aE%x00%aN%x00%B", rng],
                       "cli_markdown_s": [*tx, "--format", "markdown"],
                       "cli_text_s": [*tx, "--format", "text"],
                       "cli_json_with_ids_s": [*tx, "--format", "json"]}, repo, runs)
    res.update({
        "read_range_s": timed(lambda: history.read_range(repo, "main", "feature"), runs),
        "patch_ids_all_s": timed(lambda: git.patch_ids(shas, repo), runs),
        "inprocess_markdown_s": timed(lambda: render.render_markdown(
            rep.build(repo, "main", "feature", use_ledger=False)), runs),
        "inprocess_json_with_ids_s": timed(lambda: dumps(render.to_json(
            rep.build(repo, "main", "feature", use_ledger=False))), runs),
    })
    base = res["git_log_s"]
    for k in ("inprocess_markdown_s", "inprocess_json_with_ids_s", "cli_markdown_s", "cli_text_s",
              "cli_json_with_ids_s"):
        res[k.replace("_s", "_x_git_log")] = round(res[k] / base, 2)
    return {k: round(v, 4) for k, v in res.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--commits", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    result: dict[str, object] = {"commits": args.commits, "runs": args.runs, "statistic": "median seconds",
                                 "python": platform.python_version(), "cpus": os.cpu_count(),
                                 "git": subprocess.run(["git", "--version"], capture_output=True, text=True)
                                 .stdout.strip(), "load_average_1m": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        tx_bin = install_venv(Path(tmp))
        for name, trailers in (("with_trailers", True), ("without_trailers", False)):
            repo = Path(tmp) / name
            t = time.perf_counter()
            build_repo(repo, args.commits, trailers)
            result[f"build_{name}_s"] = round(time.perf_counter() - t, 2)
            result[name] = bench_repo(repo, args.runs, tx_bin)
            print(name, json.dumps(result[name], indent=1), file=sys.stderr)
    result["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
