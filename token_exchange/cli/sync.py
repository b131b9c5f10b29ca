"""``tx sync [REMOTE]``: share a git-notes ledger through an ordinary git remote (see docs/notes.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from token_exchange.cli import output as out


def register(app: typer.Typer) -> None:
    """Add this module's commands to `tx`."""

    @app.command()
    def sync(remote: Annotated[str, typer.Argument(help="Git remote to share the notes ledger with.")] = "origin",
             as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False) -> None:
        """Fetch, union-merge and push the git-notes ledger (never forced; retried when a push races)."""
        from token_exchange.cli.common import exchange
        from token_exchange.services.duplicates import resolve

        ex = exchange()
        result = ex.ledger.journal.sync(ex.ledger, remote)
        doubles = resolve(ex)  # a change two clones both paid: the later payment is reversed, everywhere alike
        if doubles:
            pushed = result.pushed
            result = ex.ledger.journal.sync(ex.ledger, remote)
            result.pushed += pushed
        if as_json:
            out.emit_json({**result.to_json(), "doubles_reversed": [
                {"reversed": d.loser, "kept": d.winner, "shares": list(d.shares)} for d in doubles]})
            return
        for d in doubles:
            out.message(f"reversed {d.loser}: {d.reason}")
        fetched = f"fetched {result.fetched} new transaction{'s' if result.fetched != 1 else ''}"
        if not result.remote_had_notes:
            fetched = f"{remote} had no {result.ref} yet"
        pushed = f"pushed {result.pushed}" if result.pushed else "nothing to push"
        tries = f" ({result.attempts} attempts)" if result.attempts > 1 else ""
        print(f"{remote}: {fetched}; {pushed}{tries}; ledger has {result.transactions} transactions")
