"""The MCP server: an agent reads its wallet and limits, asks what work would earn, and reserves,
settles and spends from the tools it already works in (``tx mcp``, stdio).

Built on the MCP Python SDK 2.x (``mcp>=2.3,<3``), checked against modelcontextprotocol/python-sdk:

- ``mcp.server.mcpserver.MCPServer`` is 1.x's ``FastMCP`` renamed (docs/migration.md, "FastMCP renamed
  to MCPServer"); ``server.run("stdio")`` serves on stdin/stdout.
- A tool's return annotation is its output schema, and a dataclass return becomes
  ``structured_content`` (docs/servers/structured-output.md; ``utilities/func_metadata.py``).
- A ``ToolError`` (``mcp.server.mcpserver.exceptions``) is an anticipated failure: the call returns
  ``is_error=True`` with our message for the model to read; any other exception reaches the model only
  as "Error executing tool NAME" (``exceptions.py``, ``tools/base.py`` in mcp 2.3.0).  Every
  ``UserError`` (a refusal by the limits, insufficient funds, an unknown agent) is re-raised as a
  ``ToolError`` carrying the seed's wording and, for a window limit, when capacity frees up.
- Synchronous tools run on worker threads in 2.x ("Sync handler functions now run on a worker
  thread"): ours are ``async def`` and call the API directly, so every ledger operation runs on the
  event loop's thread, one at a time (the ledger's file lock orders them with other processes).
- The stdio transport keeps the protocol on private descriptors and points fd 1 at stderr while it
  serves (migration.md, "stdio_server keeps the protocol streams on private descriptors"); the SDK's
  logging goes to stderr.  Nothing here prints.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from functools import wraps
from typing import Annotated, ParamSpec, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from token_exchange import __version__, api
from token_exchange.errors import UserError

P = ParamSpec("P")
R = TypeVar("R")

INSTRUCTIONS = """\
token-exchange is the token economy of this repository. Agents earn tokens for commits (base rate x
project contract multiplier x commit-message keyword bonus) and for closing bd issues (priority x type),
and spend them on LLM inference under limits: burst (per spend), an emergency reserve the wallet may not
go below, and rolling hourly and daily windows. Amounts are exact decimal strings of tokens.
Before a large model call, `reserve` its worst case (max tokens) and `settle` the real usage after it
(`void` if the call did not happen); `spend` charges a call already made. A refusal is an error whose
text says which limit refused and, for a window, when enough frees up. `quote_commit` and `quote_issue`
say what work would earn before it is done."""

READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
IDEMPOTENT = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True,
                             open_world_hint=False)

Agent = Annotated[str | None, Field(description="Agent name (default: the agent this server runs for).")]
Tokens = Annotated[int, Field(ge=0, le=10**12, description="A number of inference tokens.")]
Id = Annotated[str | None, Field(description="Idempotency id: the same id twice records once.")]


def _refusals(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Every UserError becomes a ToolError: the model reads its one line and may act on it."""

    @wraps(fn)
    async def tool(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except UserError as e:
            raise ToolError(" ".join(str(e).split()) or "refused") from None

    return tool


def build_server(tx: api.Exchange, *, agent: str | None = None) -> MCPServer:
    """An MCP server over ``tx``.  With ``agent``, the server acts for that agent: tools default to it,
    and it may reserve, settle, spend and contribute only for it (reading others stays allowed)."""
    if agent is not None:
        tx.cfg.agent(agent)
    server = MCPServer("token-exchange", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING")

    def who(name: str | None, *, writes: bool = False) -> str:
        chosen = name or agent
        if chosen is None:
            raise UserError("name the agent (this server was started without --agent)")
        if writes and agent is not None and chosen != agent:
            raise UserError(f"this server acts for {agent}; it cannot spend for {chosen}")
        tx.cfg.agent(chosen)
        return chosen

    def own(reservation_id: str) -> None:
        if agent is not None:
            owner = tx.reservation(reservation_id).agent
            if owner != agent:
                raise UserError(f"reservation {reservation_id} belongs to {owner}, not {agent}")

    @server.tool(annotations=READ)
    @_refusals
    async def balance(agent: Agent = None) -> api.Wallet:
        """The agent's wallet: balance, reserved in open reservations, what it may spend now, totals."""
        return tx.wallet(who(agent))

    @server.tool(annotations=READ)
    @_refusals
    async def limits(agent: Agent = None) -> api.Limits:
        """Every spending limit: the limit, what is used in its window, what is left, and when more
        frees up; open reservations count in full until settled or voided."""
        return tx.limits(who(agent))

    @server.tool(annotations=READ)
    @_refusals
    async def history(agent: Agent = None,
                      limit: Annotated[int, Field(ge=1, le=1000, description="How many, newest first.")] = 20
                      ) -> list[api.Entry]:
        """The agent's most recent transactions (amount positive in, negative out)."""
        return list(tx.history(who(agent), limit))

    @server.tool(annotations=READ)
    @_refusals
    async def quote_commit(message: Annotated[str, Field(description="The commit message.")],
                           project: Annotated[str | None, Field(description="Project name (picks the "
                                                                "contract); default: the exchange's.")] = None,
                           agent: Agent = None) -> api.CommitQuote:
        """What a commit with this message would earn now (keyword bonus, contract, budget left)."""
        return tx.quote_commit(message, agent=who(agent), project=project)

    @server.tool(annotations=READ)
    @_refusals
    async def quote_issue(priority: Annotated[int | str, Field(description="bd priority: 0-4 or P0-P4.")],
                          issue_type: Annotated[str, Field(description="bug, feature, task, docs, ...")] = "task",
                          labels: Annotated[list[str] | None, Field(description="The issue's labels.")] = None
                          ) -> api.IssueQuote:
        """What closing a bd issue would earn: priority tokens x the type multiplier."""
        return tx.quote_issue(priority, issue_type, tuple(labels or ()))

    @server.tool(annotations=IDEMPOTENT)
    @_refusals
    async def reserve(max_tokens: Annotated[int, Field(ge=1, le=10**12, description="The most tokens the call may "
                                                       "use (input and output).")],
                      model: Annotated[str | None, Field(description="Model in the price table (default: the "
                                                         "agent's model for the task).")] = None,
                      task: Annotated[str, Field(description="Task type (coding, planning, ...).")] = "llm",
                      agent: Agent = None, id: Id = None) -> api.ReservationInfo:
        """Hold the worst-case cost of a model call before making it; refused if a limit says no."""
        return tx.reserve(who(agent, writes=True), model, max_tokens, task=task, id=id).info

    @server.tool(annotations=WRITE)
    @_refusals
    async def settle(reservation_id: str, input_tokens: Tokens, output_tokens: Tokens = 0) -> api.ReservationInfo:
        """Charge what a reserved call really used; the rest of the hold goes back to the wallet."""
        own(reservation_id)
        return tx.settle(reservation_id, input_tokens=input_tokens, output_tokens=output_tokens)

    @server.tool(annotations=WRITE)
    @_refusals
    async def void(reservation_id: str) -> api.ReservationInfo:
        """Release a whole reservation: the call did not happen."""
        own(reservation_id)
        return tx.void(reservation_id)

    @server.tool(annotations=IDEMPOTENT)
    @_refusals
    async def spend(input_tokens: Tokens, output_tokens: Tokens = 0,
                    model: Annotated[str | None, Field(description="Model in the price table (default: the "
                                                       "agent's model for the task).")] = None,
                    task: Annotated[str, Field(description="Task type (coding, planning, ...).")] = "llm",
                    agent: Agent = None, id: Id = None, description: str = "") -> api.Spend:
        """Charge a model call already made, under the agent's limits."""
        return tx.spend(who(agent, writes=True), model, input_tokens=input_tokens, output_tokens=output_tokens,
                        task=task, id=id, description=description)

    @server.tool(annotations=READ)
    @_refusals
    async def pool_show(pool: str) -> api.Pool:
        """A team pool: members, contributions, credit, stakes, balance."""
        return tx.pool(pool)

    @server.tool(annotations=IDEMPOTENT)
    @_refusals
    async def pool_contribute(pool: str,
                              amount: Annotated[Decimal, Field(gt=0, description="Tokens (at most 4 decimal places).")],
                              agent: Agent = None, id: Id = None) -> api.Contribution:
        """Move tokens from the agent's wallet into a pool it is a member of (under its limits)."""
        return tx.pool_contribute(pool, who(agent, writes=True), str(amount), id=id)

    return server


def serve(tx: api.Exchange, *, agent: str | None = None) -> None:
    """Serve on stdin/stdout until the client closes the stream."""
    build_server(tx, agent=agent).run("stdio")
