"""Claude Code meter benchmark: the incremental read of a hook on a 10,000-line transcript.

Run: python3 benchmarks/bench_meter.py [--lines 10000] [--new 10] [--runs 50] [--no-subprocess]
Writes benchmarks/results/meter.json.  Budget (issue 18): p95 at most 50 ms for a hook on a
10,000-line transcript with 10 new lines.

The transcript is written in Claude Code's line format (one ``assistant`` line per content
block, tool results as ``user`` lines with realistic payload sizes) with two subagent files next
to it.  A first full read creates the offsets state; then each run appends one turn of 10 lines
(a prompt, two responses of three blocks, tool results) and times what the ``Stop`` hook does:
parse the hook's stdin JSON, load the state, find the session's files, read what is new, save
the state (atomically, with fsync).  Measured in-process (what a warm hook server pays), and as a
fresh ``python`` process per run (what Claude Code spawns without one): with ``site`` as a plain
``python -c`` gets it, and with ``-S -P`` as the project's hook bootstrap (hookclient.BOOTSTRAP)
runs hooks; next to the bare interpreter start-up for comparison.  No ledger work is included:
charging the records is the caller's part.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from token_exchange.meter import claude_code as cc
from token_exchange.meter import offsets

RESULTS = Path(__file__).parent / "results"
SID = "0b5e3a52-8a8f-4d2c-9a51-3f0d3e1c2b7a"
ROOT = Path(__file__).resolve().parent.parent

HOOK_SCRIPT = """
import sys
from token_exchange.meter import claude_code as cc, offsets
hook = cc.parse_hook_input(sys.stdin.buffer.read())
state_path = sys.argv[1]
files = cc.files_for_hook(hook)
r = cc.read_session(files, offsets.load(state_path), session_id=hook.session_id,
                    final_files=cc.final_files_for(hook, files))
offsets.save(state_path, r.state)
print(len(r.records))
"""


class Writer:
    """Deterministic transcript lines in the real format."""

    def __init__(self, seed: int = 42) -> None:
        self.rng = random.Random(seed)
        self.n = 0

    def _base(self, kind: str, side: bool = False) -> dict[str, object]:
        self.n += 1
        return {"parentUuid": f"00000000-0000-4000-8000-{self.n - 1:012d}", "isSidechain": side,
                "userType": "external", "cwd": "/work/repo", "sessionId": SID, "version": "2.1.233",
                "gitBranch": "main", "type": kind, "uuid": f"00000000-0000-4000-8000-{self.n:012d}",
                "timestamp": f"2026-03-01T10:{self.n // 60 % 60:02d}:{self.n % 60:02d}.000Z"}

    def prompt(self) -> str:
        line = self._base("user")
        line["message"] = {"role": "user", "content": "Please fix the failing test in tests/test_api.py " * 3}
        return json.dumps(line)

    def response(self, mid: str, blocks: int, side: bool = False) -> list[str]:
        lines = []
        cw, cr = self.rng.randint(0, 4000), self.rng.randint(10000, 120000)
        out = self.rng.randint(50, 3000)
        for b in range(blocks):
            line = self._base("assistant", side)
            kind = ("thinking", "text", "tool_use")[b % 3]
            content = ({"type": "thinking", "thinking": "Let me look at the failing assertion. " * 8, "signature": "s" * 200}
                       if kind == "thinking" else {"type": "text", "text": "I'll run the tests first. " * 4}
                       if kind == "text" else {"type": "tool_use", "id": f"toolu_{mid}_{b}", "name": "Bash",
                                               "input": {"command": "python -m pytest -q tests/test_api.py"}})
            line["message"] = {"id": mid, "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
                               "content": [content], "stop_reason": "tool_use", "stop_sequence": None,
                               "usage": {"input_tokens": self.rng.randint(1, 20), "cache_creation_input_tokens": cw,
                                         "cache_read_input_tokens": cr,
                                         "cache_creation": {"ephemeral_5m_input_tokens": cw, "ephemeral_1h_input_tokens": 0},
                                         "output_tokens": out, "service_tier": "standard"}}
            line["requestId"] = f"req_{mid}"
            lines.append(json.dumps(line))
        return lines

    def tool_result(self) -> str:
        line = self._base("user")
        size = self.rng.choice([200, 800, 2000, 6000])
        line["message"] = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x",
                                                        "content": "x" * size, "is_error": False}]}
        line["toolUseResult"] = {"stdout": "x" * (size // 2), "stderr": "", "interrupted": False}
        return json.dumps(line)

    def turn(self, tag: str) -> list[str]:
        """Ten lines: a prompt, two three-block responses, three tool results."""
        return [self.prompt(), *self.response(f"msg_{tag}a", 3), self.tool_result(), self.tool_result(),
                *self.response(f"msg_{tag}b", 3), self.tool_result()]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def stats(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(values, 50), 2), "p95_ms": round(percentile(values, 95), 2),
            "max_ms": round(max(values), 2)}


def build(d: Path, lines: int) -> tuple[Path, Writer]:
    project = d / "projects" / "-work-repo"
    project.mkdir(parents=True)
    main = project / f"{SID}.jsonl"
    w = Writer()
    out: list[str] = []
    turn = 0
    while len(out) < lines:
        out += w.turn(f"{turn:05d}")
        turn += 1
    main.write_text("\n".join(out[:lines]) + "\n")
    sub = project / SID / "subagents"
    sub.mkdir(parents=True)
    for seed, agent in enumerate(("a1b2c3", "d4e5f6")):
        sw = Writer(seed=seed)
        body = [line for k in range(20) for line in sw.response(f"msg_{agent}_{k}", 3, side=True)]
        (sub / f"agent-{agent}.jsonl").write_text("\n".join(body) + "\n")
        (sub / f"agent-{agent}.meta.json").write_text('{"agentType": "Explore"}')
    return main, w


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=10_000)
    ap.add_argument("--new", type=int, default=10, help="lines appended before each run (multiples of 10)")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--no-subprocess", action="store_true")
    args = ap.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        transcript, writer = build(d, args.lines)
        size_mb = round(transcript.stat().st_size / 1e6, 1)
        state_path = d / "state" / f"{SID}.json"
        hook = {"session_id": SID, "transcript_path": str(transcript), "cwd": "/work/repo",
                "permission_mode": "default", "hook_event_name": "Stop", "stop_hook_active": False,
                "last_assistant_message": "Done."}
        stdin = json.dumps(hook).encode()

        split: list[tuple[float, float]] = []

        def hook_run() -> int:
            t0 = time.perf_counter()
            h = cc.parse_hook_input(stdin)
            files = cc.files_for_hook(h)
            r = cc.read_session(files, offsets.load(state_path), session_id=h.session_id,
                                final_files=cc.final_files_for(h, files))
            t1 = time.perf_counter()
            offsets.save(state_path, r.state)
            split.append(((t1 - t0) * 1000, (time.perf_counter() - t1) * 1000))
            return len(r.records)

        t0 = time.perf_counter()
        first_records = hook_run()
        first_ms = (time.perf_counter() - t0) * 1000
        turns = max(1, args.new // 10)

        inproc: list[float] = []
        split.clear()
        for run in range(args.runs):
            with transcript.open("a") as f:
                for k in range(turns):
                    f.write("\n".join(writer.turn(f"in{run}_{k}")) + "\n")
            t0 = time.perf_counter()
            n = hook_run()
            inproc.append((time.perf_counter() - t0) * 1000)
            assert n == 2 * turns, f"expected {2 * turns} new records, got {n}"

        result: dict[str, object] = {
            "benchmark": "Claude Code Stop hook: incremental transcript read",
            "machine": f"{platform.machine()} {platform.python_version()}", "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "transcript_lines": args.lines, "transcript_mb": size_mb,
            "subagent_files": 2, "new_lines_per_run": 10 * turns, "runs": args.runs,
            "first_full_read": {"records": first_records, "ms": round(first_ms, 1)},
            "in_process": stats(inproc),
            "in_process_read_only": stats([a for a, _ in split]),
            "in_process_save_with_fsync": stats([b for _, b in split]),
            "budget_p95_ms": 50,
        }
        if not args.no_subprocess:
            import orjson

            site_packages = str(Path(orjson.__file__).resolve().parent.parent)
            # Bytecode as an installed package has it (pip compiles on install): cached in a private
            # prefix, whatever PYTHONDONTWRITEBYTECODE says in the caller's environment.
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env.update(PYTHONPATH=os.pathsep.join([str(ROOT), site_packages]), PYTHONPYCACHEPREFIX=str(d / "pycache"))
            variants = {"bare_python_startup": ([sys.executable, "-c", "pass"], False),
                        "fresh_process": ([sys.executable, "-c", HOOK_SCRIPT, str(state_path)], True),
                        "fresh_process_no_site": ([sys.executable, "-S", "-P", "-c", HOOK_SCRIPT, str(state_path)], True)}
            times: dict[str, list[float]] = {name: [] for name in variants}
            for cmd, _ in variants.values():  # warm-up (nothing new to read): writes the bytecode cache
                subprocess.run(cmd, input=stdin, capture_output=True, check=True, env=env)
            for run in range(args.runs):
                for name, (cmd, reads) in variants.items():
                    if reads:
                        with transcript.open("a") as f:
                            for k in range(turns):
                                f.write("\n".join(writer.turn(f"{name}{run}_{k}")) + "\n")
                    t0 = time.perf_counter()
                    done = subprocess.run(cmd, input=stdin, capture_output=True, check=True, env=env)
                    times[name].append((time.perf_counter() - t0) * 1000)
                    if reads:
                        assert done.stdout.strip() == str(2 * turns).encode(), done.stdout
            for name, values in times.items():
                result[name] = stats(values)
        result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "meter.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
