"""Run every benchmark in turn (each writes benchmarks/results/NAME.json). Quick sizes with --quick."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
QUICK = {"bench_ledger.py": ["--sizes", "0,10000"], "bench_commit.py": ["-n", "5"]}


def main() -> int:
    quick = "--quick" in sys.argv
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"== {script.name}", flush=True)
        args = QUICK.get(script.name, []) if quick else []
        if subprocess.run([sys.executable, str(script), *args]).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
