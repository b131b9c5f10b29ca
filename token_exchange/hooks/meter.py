"""``tx-meter`` and ``tx-guard``: the programs Claude Code runs as hooks, kept lean.

    tx-meter claude-code [--home DIR] [--agent NAME]            Stop / SubagentStop / SessionEnd (JSON on stdin)
    tx-meter codex|aider [--home DIR] [--agent NAME] PATH...    a rollout / analytics log, or a directory of them
    tx-guard claude-code [--home DIR] [--agent NAME]            UserPromptSubmit (JSON on stdin)

The same as ``tx meter ...`` and ``tx guard claude-code`` (both call ``services.meter_sources`` and
``services.prompt_guard``), but without the CLI stack: Claude Code starts a new process for every
hook event (after every response), and typer + rich cost more start-up than the whole hook's work.
The standard library, the config, the ledger and the meter parsers only; never typer, rich, tomlkit
or GitPython (a test checks it).

Exit codes follow Claude Code's hook protocol (``meter.guard``): the meter never exits 2 (on Stop that
keeps Claude running); the guard exits 2 only to block a prompt.  Any failure is one line on stderr.
``TOKEN_EXCHANGE_SKIP=1`` makes both do nothing.
"""

from __future__ import annotations

import os
import sys
from typing import Literal

from token_exchange.hooks import without_gc

METER_USAGE = ("usage: tx-meter claude-code [--home DIR] [--agent NAME] < hook-input.json\n"
               "       tx-meter codex|aider [--home DIR] [--agent NAME] PATH...")
GUARD_USAGE = "usage: tx-guard claude-code [--home DIR] [--agent NAME] < hook-input.json"


class _Usage(Exception):
    pass


def _options(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """``--home DIR`` / ``--agent NAME`` (also ``--opt=value``) and the positional arguments."""
    opts: dict[str, str] = {}
    rest: list[str] = []
    it = iter(args)
    for a in it:
        name, eq, value = a.partition("=")
        if name in ("--home", "--agent"):
            if not eq:
                value = next(it, "")
            if not value:
                raise _Usage(f"{name} needs a value")
            opts[name[2:]] = value
        elif a == "--":
            rest.extend(it)
        elif a.startswith("-"):
            raise _Usage(f"unknown option {a[:40]!r}")
        else:
            rest.append(a)
    return opts, rest


def _stdin() -> bytes:
    from token_exchange.meter.claude_code import MAX_HOOK_INPUT

    return sys.stdin.buffer.read(MAX_HOOK_INPUT + 1)


def _reply(code: int, out: str, err: str) -> int:
    if out:
        sys.stdout.write(out)
        sys.stdout.flush()
    if err:
        sys.stderr.write(err)
    return code


def _run(prog: str, usage: str, args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        sys.stderr.write(usage + "\n")
        return 0 if args else 2
    if os.environ.get("TOKEN_EXCHANGE_SKIP"):
        return 0
    cmd, rest = args[0], args[1:]
    try:
        opts, positional = _options(rest)
        if prog == "tx-guard":
            if cmd != "claude-code" or positional:
                raise _Usage(f"unknown command {cmd[:40]!r}" if cmd != "claude-code" else "no arguments expected")
            from token_exchange.services.prompt_guard import claude_code_guard

            r = claude_code_guard(_stdin(), home=opts.get("home"), agent=opts.get("agent")).reply
            return _reply(r.exit_code, r.stdout, r.stderr)
        if cmd == "claude-code":
            if positional:
                raise _Usage("claude-code reads the hook input on stdin (use `tx meter claude-code FILE` "
                             "to charge a transcript by hand)")
            from token_exchange.services.meter_sources import claude_code_hook

            r = claude_code_hook(_stdin(), home=opts.get("home"), agent=opts.get("agent")).reply
            return _reply(r.exit_code, r.stdout, r.stderr)
        if cmd == "codex" or cmd == "aider":
            if not positional:
                raise _Usage(f"{cmd} needs a PATH")
            return _files("codex" if cmd == "codex" else "aider", opts, positional)
        raise _Usage(f"unknown command {cmd[:40]!r}")
    except _Usage as e:
        sys.stderr.write(f"{prog}: {e}\n{usage}\n")
        return 2
    except Exception as e:  # noqa: BLE001 - a hook never shows a traceback to the agent's session
        if os.environ.get("TOKEN_EXCHANGE_DEBUG"):
            raise
        from token_exchange.errors import UserError

        detail = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
        sys.stderr.write(f"token-exchange: {' '.join(detail.split())[:600]}\n")
        return 1


def _files(cmd: Literal["codex", "aider"], opts: dict[str, str], paths: list[str]) -> int:
    from token_exchange.services.meter_charge import Meter
    from token_exchange.services.meter_sources import meter_files
    from token_exchange.services.meter_state import find_home

    m = Meter(find_home(opts.get("home"), None, os.environ))
    try:
        runs = meter_files(m, cmd, paths, agent=opts.get("agent"))
    finally:
        m.close()
    for run in runs:
        if not run.ok or run.charged is not None or run.skipped or run.notes:
            sys.stderr.write(f"token-exchange: {run.line()}\n")
    return 0 if all(run.ok for run in runs) else 1


def meter_main(argv: list[str] | None = None) -> None:
    """``tx-meter``."""
    args = list(sys.argv[1:] if argv is None else argv)
    raise SystemExit(without_gc(lambda: _run("tx-meter", METER_USAGE, args)))


def guard_main(argv: list[str] | None = None) -> None:
    """``tx-guard``."""
    args = list(sys.argv[1:] if argv is None else argv)
    raise SystemExit(without_gc(lambda: _run("tx-guard", GUARD_USAGE, args)))
