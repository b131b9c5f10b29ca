"""Whole-process `git commit` time with and without hooks (median of N), in one run.

Scenarios (each in its own temp repository, isolated HOME and git config):
  plain            git commit, no hooks
  ours-direct      our hooks installed by `tx hooks install` (a venv install of this checkout)
  gitlint          gitlint's commit-msg hook (gitlint-core in a temp venv), installed the same way
  ours-pre-commit  our two hooks through pre-commit (repo: a snapshot of this checkout)
  noop-repo-pre-commit  two no-op (`true`) hooks from the same snapshot repository and environment as ours
  pynoop-repo-pre-commit  the same two hooks with a no-op python body (`python -c pass`): the goal's anchor
  noop-pre-commit  two no-op hooks through pre-commit (commit-msg + post-commit, language: system)
  noop-py-pre-commit  the same no-op body as `language: python` hooks (pre-commit's python health check included)

Goals (issue 11), as paired ratios (each round commits once in every scenario; the median of the per-round
ratios is reported): ours-direct / gitlint <= 0.9; ours-pre-commit / pynoop-repo-pre-commit <= 1.15.

Usage: python benchmarks/bench_commit.py [-n 15] [--skip-gitlint] [--skip-pre-commit]
Writes benchmarks/results/commit.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "commit.json"
MESSAGE = ["-m", "fix: tighten the parser", "-m", "Explain what changed and why, in a body line."]


def sh(args: list[str], cwd: Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed in {cwd}:\n{proc.stdout.decode()}{proc.stderr.decode()}")
    return proc


def make_env(base: Path) -> dict[str, str]:
    home = base / "home"
    home.mkdir(parents=True, exist_ok=True)
    (home / ".gitconfig").write_text("[init]\n\tdefaultBranch = main\n[commit]\n\tgpgsign = false\n[user]\n\tname = Claude\n\temail = claude@aygp-dr.ai\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "TOKEN_EXCHANGE_", "PRE_COMMIT"))}
    env.update(HOME=str(home), GIT_CONFIG_GLOBAL=str(home / ".gitconfig"), GIT_CONFIG_NOSYSTEM="1",
               GIT_AUTHOR_NAME="Claude", GIT_AUTHOR_EMAIL="claude@aygp-dr.ai", GIT_COMMITTER_NAME="Claude",
               GIT_COMMITTER_EMAIL="claude@aygp-dr.ai", PRE_COMMIT_HOME=str(base / "pre-commit-home"),
               PIP_CACHE_DIR=str(base / "pip-cache"))
    return env


def new_repo(base: Path, name: str, env: dict[str, str]) -> Path:
    repo = base / name / "nexushive-setup"
    repo.mkdir(parents=True)
    sh(["git", "init", "-q", "-b", "main"], repo, env)
    (repo / "file.txt").write_text("0\n")
    sh(["git", "add", "file.txt"], repo, env)
    sh(["git", "commit", "-q", "--no-verify", "-m", "initial"], repo, env)
    return repo


def time_commit(repo: Path, env: dict[str, str], i: int) -> float:
    (repo / "file.txt").write_text(f"{i + 1}\n")
    sh(["git", "add", "file.txt"], repo, env)
    start = time.perf_counter()
    proc = sh(["git", "commit", "-q", *MESSAGE], repo, env)
    elapsed = time.perf_counter() - start
    if i == 0 and os.environ.get("BENCH_VERBOSE"):
        print(proc.stdout.decode() + proc.stderr.decode(), file=sys.stderr)
    return elapsed


def snapshot(base: Path, env: dict[str, str]) -> tuple[Path, str]:
    dest = base / "hook-repo"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    # Two no-op hooks in the same manifest: the same repository, environment and pre-commit code path as ours,
    # with `true` as the hook body (the cleanest measure of what our hooks themselves add).
    with (dest / ".pre-commit-hooks.yaml").open("a") as f:
        f.write("- {id: bench-noop-commit-msg, name: noop, entry: 'true', language: python, stages: [commit-msg]}\n"
                "- {id: bench-noop-post-commit, name: noop, entry: 'true', language: python, stages: [post-commit],"
                " always_run: true, pass_filenames: false}\n"
                # the same two hooks with a no-op Python body: a python process in the hook's own environment
                "- {id: bench-pynoop-commit-msg, name: noop, entry: 'python -c pass', language: python,"
                " stages: [commit-msg]}\n"
                "- {id: bench-pynoop-post-commit, name: noop, entry: 'python -c pass', language: python,"
                " stages: [post-commit], always_run: true, pass_filenames: false}\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "--no-verify", "-m", "snapshot"]):
        sh(["git", *args], dest, env)
    return dest, sh(["git", "rev-parse", "HEAD"], dest, env).stdout.decode().strip()


def write_hook(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=15, help="timed commits per scenario (median reported)")
    ap.add_argument("--skip-gitlint", action="store_true")
    ap.add_argument("--skip-pre-commit", action="store_true")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-commit-"))
    env = make_env(base)
    results: dict[str, dict[str, object]] = {}
    notes: list[str] = []

    scenarios: dict[str, tuple[Path, str, dict[str, str]]] = {}
    times: dict[str, list[float]] = {}  # per scenario, one figure per round (rounds pair the scenarios)

    def record(name: str, repo: Path, what: str, extra: dict[str, str] | None = None) -> None:
        scenarios[name] = (repo, what, {**env, **(extra or {})})

    def report(name: str, times: list[float], what: str) -> None:
        results[name] = {"median_ms": round(statistics.median(times) * 1000, 1),
                         "min_ms": round(min(times) * 1000, 1), "max_ms": round(max(times) * 1000, 1),
                         "n": len(times), "what": what}
        print(f"{name:16} median {results[name]['median_ms']:7.1f} ms  (min {results[name]['min_ms']}, "
              f"max {results[name]['max_ms']}, n={len(times)})  {what}", flush=True)

    try:
        repo = new_repo(base, "plain", env)
        record("plain", repo, "git commit, no hooks")

        # Like gitlint below (and like a user's install): a venv with a regular, byte-compiled install of
        # this checkout, so neither side pays this machine's site .pth files or the editable-install finder.
        hook_repo, sha = snapshot(base, env)
        ours_venv = base / "ours-venv"
        sh([sys.executable, "-m", "venv", str(ours_venv)], base, env)
        sh([str(ours_venv / "bin" / "pip"), "install", "-q", str(hook_repo)], base, env)
        repo = new_repo(base, "ours-direct", env)
        sh([str(ours_venv / "bin" / "tx"), "init"], repo, env)
        sh([str(ours_venv / "bin" / "tx"), "hooks", "install"], repo, env)
        record("ours-direct", repo,
               "our commit-msg + post-commit (tx hooks install, venv install), ledger write included")

        gitlint = None
        if not args.skip_gitlint:
            venv = base / "gitlint-venv"
            sh([sys.executable, "-m", "venv", str(venv)], base, env)
            pip = sh([str(venv / "bin" / "pip"), "install", "-q", "gitlint-core"], base, env, check=False)
            if pip.returncode == 0:
                gitlint = venv / "bin" / "gitlint"
            else:
                notes.append("gitlint-core could not be installed: gitlint scenario skipped")
        if gitlint is not None:
            repo = new_repo(base, "gitlint", env)
            # what `gitlint install-hook` / its pre-commit hook run: lint the message file
            write_hook(repo / ".git" / "hooks" / "commit-msg",
                       f'#!/bin/sh\nexec "{gitlint}" --staged --msg-filename "$1"\n')
            record("gitlint", repo, "gitlint commit-msg hook (gitlint-core)")

        if not args.skip_pre_commit and shutil.which("pre-commit"):
            def pre_commit_repo(name: str, config: str, what: str, init: bool = False) -> None:
                repo = new_repo(base, name, env)
                (repo / ".pre-commit-config.yaml").write_text(config)
                sh(["git", "add", ".pre-commit-config.yaml"], repo, env)
                sh(["git", "commit", "-q", "--no-verify", "-m", "config"], repo, env)
                if init:
                    sh([sys.executable, "-m", "token_exchange", "init"], repo, env)
                sh(["pre-commit", "install", "--hook-type", "commit-msg", "--hook-type", "post-commit",
                    "--hook-type", "post-rewrite"], repo, env)
                sh(["pre-commit", "install-hooks"], repo, env)
                record(name, repo, what)

            def ids(*hook_ids: str) -> str:
                return f"repos:\n- repo: {hook_repo}\n  rev: {sha}\n  hooks:\n" + "".join(
                    f"  - id: {h}\n" for h in hook_ids)

            def local_noops(language: str) -> str:
                return ("repos:\n- repo: local\n  hooks:\n"
                        f"  - {{id: noop-msg, name: noop-msg, entry: 'true', language: {language}, "
                        "stages: [commit-msg]}\n"
                        f"  - {{id: noop-post, name: noop-post, entry: 'true', language: {language}, "
                        "stages: [post-commit], always_run: true, pass_filenames: false}\n")

            pre_commit_repo("ours-pre-commit", ids("token-exchange-commit-msg", "token-exchange-post-commit"),
                            "our two hooks via pre-commit", init=True)
            pre_commit_repo("noop-repo-pre-commit", ids("bench-noop-commit-msg", "bench-noop-post-commit"),
                            "two no-op (`true`) hooks from our own hook repository and environment via pre-commit")
            pre_commit_repo("pynoop-repo-pre-commit", ids("bench-pynoop-commit-msg", "bench-pynoop-post-commit"),
                            "the same two hooks with a no-op python body (`python -c pass`) from our hook repository "
                            "and environment via pre-commit")
            pre_commit_repo("noop-pre-commit", local_noops("system"), "two no-op hooks via pre-commit")
            # The same no-op body (`true`) as a `language: python` hook: pre-commit then also pays its python
            # health check (two `python -S` processes per hook run), which any python hook pays.
            pre_commit_repo("noop-py-pre-commit", local_noops("python"),
                            "two no-op (`true`) hooks with language: python via pre-commit")
        elif not args.skip_pre_commit:
            notes.append("pre-commit is not installed: pre-commit scenarios skipped")
        # round robin: one commit per scenario per round, so load changes hit every scenario alike
        times.update({name: [] for name in scenarios})
        warmup = 2
        for i in range(warmup + args.n):
            for name, (repo, _what, scenario_env) in scenarios.items():
                elapsed = time_commit(repo, scenario_env, i)
                if i >= warmup:
                    times[name].append(elapsed)
        for name, (_repo, what, _env) in scenarios.items():
            report(name, times[name], what)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    rounds = times
    goals: dict[str, object] = {}

    def paired(ours: str, anchor: str, minus: str | None = None) -> dict[str, Any] | None:
        """Median over rounds of ours/anchor measured in the same round (optionally both minus ``minus``)."""
        if ours not in rounds or anchor not in rounds or (minus and minus not in rounds):
            return None
        ratios = []
        for i in range(len(rounds[ours])):
            a, b = rounds[ours][i], rounds[anchor][i]
            if minus:
                a, b = a - rounds[minus][i], b - rounds[minus][i]
            if b > 0:
                ratios.append(a / b)
        return {"ratio_median": round(statistics.median(ratios), 3), "ratio_min": round(min(ratios), 3),
                "ratio_max": round(max(ratios), 3), "rounds": len(ratios)}

    direct = paired("ours-direct", "gitlint")
    if direct:
        goals["hooks_vs_gitlint_whole_commit"] = {**direct, "goal": 0.9, "met": direct["ratio_median"] <= 0.9}
        added = paired("ours-direct", "gitlint", minus="plain")
        goals["hooks_vs_gitlint_added_over_plain_commit"] = added
    same = paired("ours-pre-commit", "pynoop-repo-pre-commit")
    if same:
        goals["pre_commit_vs_same_hooks_noop_python_body"] = {**same, "goal": 1.15,
                                                              "met": same["ratio_median"] <= 1.15}
    for anchor in ("noop-repo-pre-commit", "noop-py-pre-commit", "noop-pre-commit"):
        other = paired("ours-pre-commit", anchor)
        if other:
            goals[f"pre_commit_vs_{anchor}"] = other
    load = os.getloadavg()
    doc = {"load_average_after": [round(x, 2) for x in load], "python": platform.python_version(), "platform": platform.platform(),
           "git": subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip(),
           "cpus": os.cpu_count(), "results": results, "goals": goals, "notes": notes}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(goals, indent=2))
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
