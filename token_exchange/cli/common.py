"""What every command shares: the global options' state, the exchange they open, the ``--json`` option."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from token_exchange.services.exchange import Exchange


class State:
    """Global options, set by the root callback before a command runs (and read by the error handler)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.home: Path | None = None
        self.debug = False
        self.json = False


state = State()


def _want_json(value: bool) -> bool:
    if value:
        state.json = True  # errors after parsing print {"error": ...} on stdout too
    return value


Json = Annotated[bool, typer.Option("--json", help="Print one JSON document (exact decimal amounts).",
                                    callback=_want_json)]


def exchange() -> Exchange:
    """The exchange at --home, $TOKEN_EXCHANGE_HOME, or .exchange/ of this repository."""
    from token_exchange.services.exchange import Exchange

    return Exchange.open(state.home)


Agent = Annotated[str, typer.Argument(help="Agent name (see `tx agents`).")]
Pool = Annotated[str, typer.Argument(help="Pool name.")]
Reservation = Annotated[str, typer.Argument(help="Reservation id (printed by `tx llm reserve`).")]
TaskType = Annotated[str, typer.Argument(help="Task type (coding, planning, ...): picks the agent's preferred model.")]
Tokens = Annotated[str, typer.Argument(help="Inference tokens (a whole number).")]
Amount = Annotated[str, typer.Argument(help="Tokens (exact decimal, at most 4 places).")]
