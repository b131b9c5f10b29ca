"""``tx migrate --to postgres|toml|notes``: move the ledger to another backend (services/migrate.py)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from token_exchange.cli import output as out
from token_exchange.cli.common import Json, exchange
from token_exchange.ledger.backends import NAMES


def migrate(to: Annotated[str, typer.Option("--to", help=f"Target backend: {', '.join(NAMES)}.")],
            dsn: Annotated[Optional[str], typer.Option(
                "--dsn", help="The target database (--to postgres); default $TOKEN_EXCHANGE_DSN or [exchange] dsn. "
                "Prefer the environment: a command line is visible to other users.")] = None,
            reseal: Annotated[bool, typer.Option(
                "--reseal", help="To or from git notes (not a hash chain): re-seal every hash in the target's "
                "form; ids, dates, contents and balances are kept.")] = False,
            as_json: Json = False) -> None:
    """Copy every transaction to another backend (ids, dates and hashes kept), verify both sides with
    `tx doctor`, then switch this home's config to it.  The source is left as it was."""
    from token_exchange.services.migrate import migrate as run

    result = run(exchange(), to, dsn=dsn, reseal=reseal)
    if as_json:
        out.emit_json(result.to_json())
    else:
        for line in result.target_report.problems:
            out.message(f"problem: {line}")
        for line in result.notes:
            out.message(f"note: {line}")
        kept = "hashes kept" if result.hashes_kept else "hashes re-sealed"
        verdict = "consistent on both sides" if result.target_report.ok else "target NOT consistent"
        out.message(f"migrated {result.transactions} transactions from {result.source} to {result.target} "
                    f"({result.copied} copied, {kept}); doctor: {verdict}"
                    + (f"; this home now uses {result.target}" if result.switched else "; config unchanged"))
    if not result.target_report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add `tx migrate`."""
    app.command("migrate")(migrate)
