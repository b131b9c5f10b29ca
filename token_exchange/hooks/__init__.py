"""Git hook entry points: ``tx-hook commit-msg PATH``, ``tx-hook post-commit``, ``tx-hook post-rewrite KIND``.

These run on every commit, so they stay lean: the standard library, the engine, the ledger and a few
``git`` processes; never typer, rich, tomlkit or GitPython (a test checks the imports).

A hook never blocks, breaks or stalls a commit: every problem is one line on stderr and exit status 0.
The ledger lock is waited for at most ``LOCK_WAIT`` seconds; a commit that could not be paid then (or
whose hook did not run at all) is paid once by the next post-commit or ``tx catch-up``.  No hook
touches a tracked file: the ledger lives in the home, the hooks' own state in the git directory.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable

USAGE = "usage: tx-hook commit-msg [--msg-file] PATH | tx-hook post-commit | tx-hook post-rewrite amend|rebase"
PREFIX = "token-exchange"


def without_gc(run: Callable[[], int]) -> int:
    """``run()`` with the cyclic garbage collector off (every hook program's body: tx-hook, tx-meter, tx-guard).

    A hook is one short process whose objects nearly all live until it exits: the collector would only walk the
    modules' objects again and again while they load (~4 ms a git hook, ~10 ms CPU a meter hook), and what it
    could free is freed at exit anyway."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return run()
    finally:
        if collecting:
            gc.enable()


class HookError(Exception):
    """A problem worth one line (the commit itself is never affected)."""


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def warn(text: str) -> None:
    sys.stderr.write(" ".join(text.split())[:300] + "\n")


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        sys.stderr.write(USAGE + "\n")
        raise SystemExit(0 if args else 2)
    if args[0] in ("-V", "--version"):
        from token_exchange import __version__

        sys.stdout.write(f"tx-hook {__version__}\n")
        raise SystemExit(0)
    cmd, rest = args[0], args[1:]
    if cmd not in ("commit-msg", "post-commit", "post-rewrite"):
        sys.stderr.write(f"tx-hook: unknown hook {cmd[:40]!r}\n{USAGE}\n")
        raise SystemExit(2)
    if os.environ.get("TOKEN_EXCHANGE_SKIP"):
        raise SystemExit(0)
    raise SystemExit(without_gc(lambda: _run(cmd, rest)))


def _run(cmd: str, rest: list[str]) -> int:
    if cmd == "commit-msg":
        from token_exchange.hooks.commit_msg import run
    elif cmd == "post-commit":
        from token_exchange.hooks.post_commit import run
    else:
        from token_exchange.hooks.post_rewrite import run
    try:
        run(rest)
    except HookError as e:
        warn(f"{PREFIX}: {cmd}: {e}")
    except Exception as e:  # noqa: BLE001 - a hook must never break the commit
        if os.environ.get("TOKEN_EXCHANGE_DEBUG"):
            raise
        from token_exchange.errors import UserError

        detail = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
        warn(f"{PREFIX}: {cmd}: {detail}; commit kept, nothing recorded")
    return 0  # a hook never blocks the commit
