"""`tx mcp`: the MCP server over stdio (extra ``mcp``), for agents that reach the exchange as tools."""

from __future__ import annotations

from typing import Annotated

import typer

from token_exchange.cli.common import Json
from token_exchange.errors import UserError

AGENT_ENV = "TOKEN_EXCHANGE_AGENT"


def mcp_cmd(agent: Annotated[str | None, typer.Option(
        "--agent", envvar=AGENT_ENV, show_envvar=True,
        help="The agent this server acts for: tools default to it and spend only for it.")] = None,
            as_json: Json = False) -> None:
    """Serve the exchange's tools over MCP on stdin/stdout (balance, limits, quotes, reserve/settle...).

    Once serving, stdout carries only the protocol; --json only shapes an error before it starts."""
    from token_exchange import api
    from token_exchange.cli.common import state

    # A missing exchange or an unknown agent fails first: loading the MCP SDK takes seconds (pydantic
    # builds its protocol models), which a misconfigured server should not make its client wait for.
    with api.open(state.home) as tx:
        if agent:
            tx.cfg.agent(agent)
        try:
            from token_exchange.agents import mcp_server
        except ImportError as e:
            if (e.name or "").split(".")[0] not in ("mcp", "pydantic"):
                raise
            raise UserError("the MCP server needs the mcp extra: pip install 'token-exchange[mcp]'") from None
        mcp_server.serve(tx, agent=agent or None)


def register(app: typer.Typer) -> None:
    """Add `tx mcp` to `tx`."""
    app.command("mcp")(mcp_cmd)
