"""``tx hooks install|uninstall|status``: the plain git hooks (see ``token_exchange.hooks.install``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from token_exchange.cli import output as out
from token_exchange.cli.common import Json
from token_exchange.errors import UserError
from token_exchange.hooks.install import HOOK_TYPES, install, status, uninstall

hooks_app = typer.Typer(help="Install the plain git hooks (commit-msg, post-commit, post-rewrite) without pre-commit.",
                        no_args_is_help=True)
Types = Annotated[Optional[list[str]], typer.Option("--hook-type", help=f"One of {', '.join(HOOK_TYPES)} "
                                                    "(repeatable; default all).")]
Command = Annotated[Optional[str], typer.Option("--command", help="The tx-hook program the hooks run "
                                                "(default: the one installed with this tx).")]


def _types(values: list[str] | None) -> tuple[str, ...]:
    for v in values or ():
        if v not in HOOK_TYPES:
            raise UserError(f"--hook-type must be one of {', '.join(HOOK_TYPES)}, not {v[:30]!r}")
    return tuple(dict.fromkeys(values)) if values else HOOK_TYPES


@hooks_app.command("install")
def install_cmd(hook_type: Types = None, command: Command = None, as_json: Json = False) -> None:
    """Write the hooks into this repository's hooks directory (respects core.hooksPath)."""
    results = install(command=command, hook_types=_types(hook_type))
    if as_json:
        out.emit_json(results)
        return
    for r in results:
        out.message(f"{r['hook']}: {r['action']} at {r['path']}")


@hooks_app.command("uninstall")
def uninstall_cmd(hook_type: Types = None, as_json: Json = False) -> None:
    """Remove our hooks and restore any hook they chained."""
    results = uninstall(hook_types=_types(hook_type))
    if as_json:
        out.emit_json(results)
        return
    for r in results:
        out.message(f"{r['hook']}: {r['action']}")


@hooks_app.command("status")
def status_cmd(as_json: Json = False) -> None:
    """Which hooks are installed here (plain and via pre-commit)."""
    data = status()
    if as_json:
        out.emit_json(data)
        return
    for h in data["hooks"]:
        extra = f", chains {Path(h['chained']).name}" if h["chained"] else ""
        sys.stdout.write(f"{h['hook']}: {h['state']}{extra} ({h['path']})\n")
    if data["pre_commit_config"]:
        sys.stdout.write(f"pre-commit config uses: {', '.join(data['pre_commit_config'])}\n")


def catch_up(rev: Annotated[str, typer.Argument(help="Walk the history of this revision.")] = "HEAD",
             since: Annotated[Optional[str], typer.Option(help="Only commits committed since this date (default: "
                                                          "since the ledger's first transaction).")] = None,
             max_commits: Annotated[int, typer.Option("--max-commits", min=1, max=100_000,
                                                      help="Look at most at this many recent commits.")] = 500,
             as_json: Json = False) -> None:
    """Pay the commits the hooks did not pay (skipped, ledger busy), once each, as the hooks would."""
    from token_exchange.cli.common import exchange
    from token_exchange.services.catchup import catch_up as run

    ex = exchange()
    repo = Path.cwd()
    try:
        results = run(ex, repo, rev, since=since, max_commits=max_commits)
    finally:
        ex.close()
    paid = [r for r in results if r.plan.status == "pay"]
    if as_json:
        out.emit_json({"looked_at": len(results), "paid": [
            {"sha": r.plan.facts.sha, "reward_id": r.reward_id, "amount": out.amount(r.amount),
             "agents": list(r.plan.agents)} for r in paid]})
        return
    for r in paid:
        out.message(f"{r.plan.facts.sha[:12]}: {r.describe()}")
    out.message(f"looked at {len(results)} commits; paid {len(paid)}")


def register(app: typer.Typer) -> None:
    app.add_typer(hooks_app, name="hooks")
    app.command("catch-up")(catch_up)
