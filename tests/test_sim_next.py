"""The README's first command ends with what to do next, and every command it shows works.

`tx simulate` (text) ends with a "next:" block: put the exchange in a real repository (tx init, tx hooks
install, a commit, tx balance).  Here those exact lines run, in order, in a fresh git repository (real
git, the real hooks, the real `tx` entry point in a subprocess), and do what their comments say.  Also:
the progress bar knows its total from the first frame (it used to read "0/None h").
"""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from rich.console import Console

from tests.conftest import git
from token_exchange.cli.sim import NEXT_STEPS, _progress


def shown_steps(out: str) -> list[str]:
    """The commands of the "next:" block at the end of the output (comments dropped)."""
    lines = out.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("next:"))
    block = [line for line in lines[start + 1:] if line.strip()]
    assert all(line.startswith("  ") for line in block), block
    return [line.strip() for line in block]


def test_demo_ends_with_the_next_steps(cli) -> None:
    r = cli("simulate", "--hours", "24", "--seed", "1")
    assert r.code == 0, r.err
    assert r.out.rstrip().splitlines()[-len(NEXT_STEPS):] == list(NEXT_STEPS)
    assert [s.split()[0] for s in shown_steps(r.out)] == ["tx", "tx", "git", "tx"]
    assert "next:" not in cli("simulate", "--hours", "2", "--json").out  # one JSON document, nothing else


def test_every_shown_command_works_in_a_fresh_repository(cli, tmp_path: Path) -> None:
    steps = shown_steps(cli("simulate", "--hours", "1").out)
    repo = tmp_path / "myproject"  # no contract pattern matches: the default contract (1.0x)
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    # the developer's own identity is not an agent: only the shown --author makes claude earn
    env = {"GIT_AUTHOR_NAME": "Dev", "GIT_AUTHOR_EMAIL": "dev@example.com",
           "GIT_COMMITTER_NAME": "Dev", "GIT_COMMITTER_EMAIL": "dev@example.com"}
    outputs = []
    for step in steps:
        argv = shlex.split(step, comments=True)
        if argv[0] == "tx":
            argv = [sys.executable, "-m", "token_exchange", *argv[1:]]
        proc = subprocess.run(argv, cwd=repo, capture_output=True, text=True, check=False,
                              env={**os.environ, **env})
        assert proc.returncode == 0, (step, proc.stdout, proc.stderr)
        outputs.append(proc.stdout + proc.stderr)
    assert (repo / ".exchange" / "config.toml").exists()  # tx init
    assert "token-exchange: claude 225 tokens on myproject" in outputs[2]  # the post-commit hook paid it
    assert "claude" in outputs[3] and "10225" in outputs[3]  # tx balance shows it
    balance = json.loads(subprocess.run([sys.executable, "-m", "token_exchange", "balance", "claude", "--json"],
                                        cwd=repo, capture_output=True, text=True, check=True).stdout,
                         parse_float=Decimal)
    assert balance["earned"] == 225 and balance["balance"] == 10225  # what the comment promises
    assert git(repo, "log", "--format=%ae").split() == ["claude@example.com"]


def test_progress_bar_shows_the_real_total() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100)
    update, stop = _progress(True, 8760, console)
    assert update is not None
    update(1, 8760)
    stop()
    text = buf.getvalue()
    assert "None" not in text and "/8760 h" in text
    assert _progress(False, 24)[0] is None  # --json: no bar
