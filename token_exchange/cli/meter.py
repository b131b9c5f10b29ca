"""``tx meter claude-code | codex | aider | install | uninstall`` and ``tx guard claude-code``.

The hooks Claude Code runs are the lean ``tx-meter`` / ``tx-guard`` programs (``hooks.meter``); these
commands do the same through ``tx`` (for a hand run, a backfill, scripts) and install the hooks.
Everything is in the services: ``meter_sources`` (charging), ``prompt_guard`` (refusing) and
``meter_install`` (the settings).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Literal, NoReturn, Optional

import typer

from token_exchange.cli import output as out
from token_exchange.cli.common import Json, state
from token_exchange.errors import UserError

meter_app = typer.Typer(no_args_is_help=True, help=(
    "Charge the LLM usage agents' own files report: Claude Code transcripts (as a hook), Codex rollouts, "
    "aider analytics logs. Idempotent and incremental."))
guard_app = typer.Typer(no_args_is_help=True, help="Refuse work before it starts (Claude Code UserPromptSubmit hook).")

AgentOpt = Annotated[Optional[str], typer.Option("--agent", help="The agent to charge (default: $TOKEN_EXCHANGE_AGENT, "
                                                 "then [[meter.sessions]] rules, then meter.default_agent).")]
Target = Annotated[str, typer.Argument(help="What to install the hooks into: claude-code.")]


def _target(value: str) -> None:
    if value != "claude-code":
        raise UserError(f"unknown hook target {value[:40]!r} (known: claude-code)")


def _hook_reply(code: int, stdout: str, stderr: str) -> NoReturn:
    if stdout:
        sys.stdout.write(stdout)
    if stderr:
        sys.stderr.write(stderr)
    raise typer.Exit(code)


def _finish(code: int, failure: str) -> NoReturn:
    """Exit ``code``; a failure (1) ends with the one ``tx: error:`` line every command ends with (after
    the --json document, if any: stdout stays one document)."""
    if code == 1:
        if not state.json:
            raise UserError(failure)
        out.error("tx", failure, 1, False)
    raise typer.Exit(code)


def _strip(text: str) -> str:
    return " ".join(line.removeprefix("token-exchange: ") for line in text.splitlines())


@meter_app.command("claude-code")
def claude_code(transcripts: Annotated[Optional[list[Path]], typer.Argument(
                    help="Transcripts to charge by hand (each as if its session ended); none: read a hook's "
                         "JSON on stdin.")] = None,
                agent: AgentOpt = None, as_json: Json = False) -> None:
    """The Claude Code Stop / SubagentStop / SessionEnd hook (JSON on stdin), or charge TRANSCRIPTS."""
    from token_exchange.services import meter_sources

    if not transcripts:
        from token_exchange.meter.claude_code import MAX_HOOK_INPUT

        run = meter_sources.claude_code_hook(sys.stdin.buffer.read(MAX_HOOK_INPUT + 1), home=state.home, agent=agent)
        code = run.reply.exit_code
        if as_json:
            out.emit_json({"exit_code": code, "agent": run.agent,
                           "charge": run.charged.to_json() if run.charged else None,
                           "skipped": run.read.skipped if run.read else 0})
        if code == 1:
            _finish(1, _strip(run.reply.stderr))
        _hook_reply(code, "" if as_json else run.reply.stdout, run.reply.stderr)
    results = []
    failed = 0
    for path in transcripts:
        run = meter_sources.claude_code_hook(meter_sources.transcript_hook_input(path), home=state.home, agent=agent)
        ok = run.reply.exit_code == 0 and run.agent is not None
        failed += not ok
        results.append({"transcript": str(path), "agent": run.agent, "ok": ok,
                        "charge": run.charged.to_json() if run.charged else None,
                        "skipped": run.read.skipped if run.read else 0, "message": _strip(run.reply.stderr)})
        if not as_json:
            out.message(f"{path}: {_strip(run.reply.stderr) or 'nothing new'}")
    if as_json:
        out.emit_json(results)
    _finish(1 if failed else 0, f"{failed} of {len(transcripts)} transcripts not charged")


def _files(source: Literal["codex", "aider"], paths: list[Path], agent: str | None, as_json: bool) -> None:
    from token_exchange.services.meter_charge import Meter
    from token_exchange.services.meter_sources import meter_files
    from token_exchange.services.meter_state import find_home

    m = Meter(find_home(state.home, None, os.environ))
    try:
        runs = meter_files(m, source, paths, agent=agent)
    finally:
        m.close()
    if as_json:
        out.emit_json([r.to_json() for r in runs])
    else:
        for r in runs:
            out.message(r.line())
        if not runs:
            out.message(f"no {source} files found")
    failed = sum(not r.ok for r in runs)
    _finish(1 if failed else 0, f"{failed} of {len(runs)} {source} files not charged")


Paths = Annotated[list[Path], typer.Argument(help="Files, or directories searched recursively.")]


@meter_app.command("codex")
def codex_cmd(paths: Paths, agent: AgentOpt = None, as_json: Json = False) -> None:
    """Charge Codex CLI rollouts (~/.codex/sessions/...): token_count events, cached input and reasoning
    accounted as Codex does."""
    _files("codex", paths, agent, as_json)


@meter_app.command("aider")
def aider_cmd(paths: Paths, agent: AgentOpt = None, as_json: Json = False) -> None:
    """Charge an aider analytics log (aider --analytics-log FILE): its message_send events."""
    _files("aider", paths, agent, as_json)


Scope = Annotated[str, typer.Option("--scope", help=(
    "project (.claude/settings.json of this repository, shared), local (.claude/settings.local.json, "
    "yours only) or user (~/.claude/settings.json)."))]
Settings = Annotated[Optional[Path], typer.Option("--settings", help="A settings file to use instead of --scope's.")]


def _installed(result: object, as_json: bool, verb: str) -> None:
    from token_exchange.services.meter_install import Installed

    assert isinstance(result, Installed)
    if as_json:
        out.emit_json(result.to_json())
        return
    for w in result.warnings:
        out.message(f"warning: {w}")
    if result.changed:
        out.message(f"{verb} token-exchange hooks in {result.path}: {', '.join(result.events)}")
    else:
        out.message(f"{result.path}: nothing to change")


@meter_app.command("install")
def install_cmd(target: Target, scope: Scope = "project", settings: Settings = None,
                guard: Annotated[bool, typer.Option(help="Also install the UserPromptSubmit guard.")] = True,
                agent: Annotated[Optional[str], typer.Option("--agent", help="Charge every session of these "
                                                              "settings to this agent.")] = None,
                on_path: Annotated[bool, typer.Option("--on-path", help=(
                    "Write the bare program names (tx-meter, tx-guard: found on PATH when Claude Code runs them) "
                    "instead of this installation's absolute paths, for a settings file shared in git."))] = False,
                as_json: Json = False) -> None:
    """Merge the meter (Stop, SubagentStop, SessionEnd) and guard (UserPromptSubmit) hooks into Claude
    Code's settings; what is there is kept."""
    from token_exchange.services import meter_install

    _target(target)
    if agent is not None:
        from token_exchange.cli.common import exchange

        exchange().cfg.agent(agent)  # a typo here would leave every session uncharged
    path = meter_install.settings_file(scope, settings)
    programs = {"meter_program": "tx-meter", "guard_program": "tx-guard"} if on_path else {}
    meter_cmd, guard_cmd = meter_install.hook_commands(home=state.home, agent=agent, **programs)
    _installed(meter_install.install_claude_code(path, meter_cmd, guard_cmd if guard else None), as_json, "installed")


@meter_app.command("uninstall")
def uninstall_cmd(target: Target, scope: Scope = "project", settings: Settings = None, as_json: Json = False) -> None:
    """Remove our hooks from Claude Code's settings (only ours)."""
    from token_exchange.services import meter_install

    _target(target)
    _installed(meter_install.uninstall_claude_code(meter_install.settings_file(scope, settings)), as_json, "removed")


@guard_app.command("claude-code")
def guard_claude_code(agent: AgentOpt = None,
                      as_json: Annotated[bool, typer.Option("--json", help=(
                          "Print the decision as one JSON document (for scripts; a hook must not use it: "
                          "Claude Code reads a hook's stdout)."))] = False) -> None:
    """The Claude Code UserPromptSubmit hook: blocks the prompt (exit 2, reason on stderr) when the agent is
    out of funds, at its reserve or over its hourly/daily limit."""
    from token_exchange.meter.claude_code import MAX_HOOK_INPUT
    from token_exchange.services.prompt_guard import claude_code_guard

    run = claude_code_guard(sys.stdin.buffer.read(MAX_HOOK_INPUT + 1), home=state.home, agent=agent)
    if as_json:
        out.emit_json({"agent": run.agent, "blocked": run.reply.exit_code == 2, "exit_code": run.reply.exit_code,
                       "message": run.reply.stderr.strip(), "charge": run.charged.to_json() if run.charged else None})
        raise typer.Exit(run.reply.exit_code)
    _hook_reply(run.reply.exit_code, run.reply.stdout, run.reply.stderr)


def register(app: typer.Typer) -> None:
    app.add_typer(meter_app, name="meter")
    app.add_typer(guard_app, name="guard")
