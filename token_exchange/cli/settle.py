"""``tx settle``: pay what landed on the default branch (on-merge mode; see ``services.settlement``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from token_exchange.amounts import fmt
from token_exchange.cli import output as out
from token_exchange.cli.common import Json


def settle_cmd(branch: Annotated[str | None, typer.Option("--branch", help="The default branch (default: "
                                                           "[settlement] branch, e.g. main).")] = None,
               rev: Annotated[str | None, typer.Option("--rev", help="Settle up to this commit (default: the "
                                                        "branch's tip; in CI the pushed SHA).")] = None,
               config_path: Annotated[str, typer.Option("--config-path", help="The config inside the repository "
                                                        "(read from git at the settlement base).")]
               = ".exchange/config.toml",
               max_commits: Annotated[int, typer.Option("--max-commits", min=1, max=1_000_000,
                                                        help="Refuse to walk more first-parent commits.")] = 10_000,
               as_json: Json = False) -> None:
    """Settle every commit that landed on the default branch since the last settlement, once, under the
    rules the branch had before it landed; release provisional awards, claw back reverts, expire the rest."""
    from token_exchange.cli.common import exchange
    from token_exchange.services.settlement import settle

    ex = exchange()
    try:
        result = settle(ex, Path.cwd(), branch=branch, rev=rev, config_path=config_path, max_commits=max_commits)
    finally:
        ex.close()
    if as_json:
        out.emit_json(result.to_json())
        return
    for note in result.notes:
        out.message(f"note: {note}")
    if result.lines:
        out.table(f"Settled {result.branch} {result.base[:12]}..{result.tip[:12]} (rules: {result.rules})",
                  ["Commit", "Landed", "Agents", "Provisional", "Settled", "Difference", "Status"],
                  [(ln.sha[:12], ln.landed[:12], ", ".join(ln.agents) or ln.author, fmt(ln.provisional_total),
                    fmt(ln.settled_total), _signed(ln.difference), ln.flag) for ln in result.lines],
                  right=["Provisional", "Settled", "Difference"])
    if result.clawbacks:
        out.table("Clawbacks (reverted on the default branch)", ["Revert", "Reverted", "Agent", "Amount"],
                  [(c.revert[:12], c.reverted[:12], c.agent, f"-{fmt(c.amount)}") for c in result.clawbacks],
                  right=["Amount"])
    if result.expired:
        out.table("Expired provisional awards (never landed)", ["Award", "Agent", "Amount", "Since"],
                  [(e.id[:40], e.agent, f"-{fmt(e.amount)}", e.since[:19]) for e in result.expired],
                  right=["Amount"])
    data = result.to_json()["totals"]
    out.message(f"{result.branch} settled up to {result.tip[:12]}: {len(result.lines)} commits, settled "
                f"{data['settled']}, provisional released {data['provisional_released']}, clawed back "
                f"{data['clawed_back']}, expired {data['expired']}; {result.written} new records")


def _signed(units: int) -> str:
    return f"+{fmt(units)}" if units > 0 else (f"-{fmt(-units)}" if units < 0 else "0")


def register(app: typer.Typer) -> None:
    app.command("settle")(settle_cmd)
