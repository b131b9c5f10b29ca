"""CLI for corrections: `tx reverse TXN_ID --reason TEXT` and `tx transfer FROM TO AMOUNT`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from token_exchange.amounts import fmt
from token_exchange.cli import output as out
from token_exchange.cli.common import Amount, Json

# Negative numbers ("-5") reach our validators (one clear line, exit 1) instead of being read as options.
NUMBERS_OK = {"ignore_unknown_options": True}


def register(app: typer.Typer) -> None:
    """Add this module's commands to `tx`."""

    @app.command()
    def reverse(txn_id: Annotated[str, typer.Argument(help="Id of the transaction to reverse (`tx history AGENT`).")],
                reason: Annotated[str, typer.Option("--reason", help="Why (kept in the ledger).")],
                as_json: Json = False) -> None:
        """Append a reversing transaction (the original stays); reversing twice is one reversal."""
        from token_exchange.cli.common import exchange
        from token_exchange.services.corrections import reverse as do_reverse

        r = do_reverse(exchange(), txn_id, reason)
        if as_json:
            out.emit_json(r.to_json())
        elif r.created:
            out.message(f"reversed {txn_id}: {fmt(r.txn.amount)} back from {r.txn.payer} to {r.txn.payee} "
                        f"({r.txn.id})")
        else:
            out.message(f"{txn_id} is already reversed ({r.txn.id}); nothing new")

    @app.command(context_settings=NUMBERS_OK)
    def transfer(payer: Annotated[str, typer.Argument(help="Agent paying (its spending limits apply).")],
                 payee: Annotated[str, typer.Argument(help="Agent receiving.")],
                 amount: Amount,
                 id: Annotated[Optional[str], typer.Option("--id", help="Idempotency id: the same id twice "
                                                           "transfers once.")] = None,
                 description: Annotated[str, typer.Option(help="What the transfer is for.")] = "",
                 as_json: Json = False) -> None:
        """Move tokens from one agent to another, under the payer's limits."""
        from token_exchange.cli.common import exchange
        from token_exchange.services.corrections import transfer as do_transfer

        r = do_transfer(exchange(), payer, payee, amount, id=id, description=description)
        if as_json:
            out.emit_json(r.to_json())
        elif r.created:
            out.message(f"transferred {fmt(r.txn.amount)} from {payer} to {payee} ({r.txn.id})")
        else:
            out.message(f"transfer {r.txn.id} already done; nothing new")
