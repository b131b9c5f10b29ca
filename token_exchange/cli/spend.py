"""CLI for spending: `tx llm ...`, `tx llm reserve|settle|void|show`, `tx limits AGENT`, `tx pool ...`.

Every command is a thin layer over ``token_exchange.api`` (parse, call, print).

`tx llm AGENT TASK_TYPE TOKENS` (the seed's spelling) and `tx llm reserve ...` share one name: the
`llm` group treats a first word that is not one of its subcommands as `tx llm spend ...`.  (An agent
literally named like a subcommand is reachable as `tx llm spend NAME ...`.)
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from token_exchange.cli import output as out

if TYPE_CHECKING:  # pragma: no cover
    from token_exchange.api import Exchange
    from token_exchange.api import Pool as PoolInfo

from token_exchange.cli.common import (
    Agent,
    Amount,
    Json,
    Pool,
    Reservation,
    TaskType,
    Tokens,
)

ModelOpt = Annotated[Optional[str], typer.Option("--model", help="Model to use (default: the agent's preferred "
                                                 "model for the task type, else its primary LLM).")]
OutputOpt = Annotated[Optional[str], typer.Option("--output-tokens", help="How many of the tokens were output "
                                                  "tokens (priced with output_per_1k, the rest input_per_1k).")]


class _LlmGroup(TyperGroup):
    """`tx llm AGENT TASK TOKENS` is `tx llm spend AGENT TASK TOKENS`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["spend", *args]
        return super().parse_args(ctx, args)


llm_app = typer.Typer(cls=_LlmGroup, no_args_is_help=True, help=(
    "Charge LLM requests: `tx llm AGENT TASK_TYPE TOKENS` spends now; reserve/settle/void for two-phase "
    "spending."))
pool_app = typer.Typer(no_args_is_help=True, help="Team pools: contribute together, spend together, share credit.")


def _ex() -> Exchange:
    from token_exchange import api
    from token_exchange.cli.common import state

    return api.open(state.home)


def fmt(amount: Decimal) -> str:
    """An amount as the CLI prints it (plain decimal, no exponent)."""
    return format(amount, "f")


# --- tx llm ----------------------------------------------------------------------------------
# Negative numbers ("-5") reach our validators (one clear line, exit 1) instead of being read as options.
NUMBERS_OK = {"ignore_unknown_options": True}


@llm_app.command("spend", context_settings=NUMBERS_OK)
def llm_spend(agent: Agent, task_type: TaskType, tokens: Tokens, model: ModelOpt = None,
              id: Annotated[Optional[str], typer.Option("--id", help="Request id: the same id twice charges once.")]
              = None,
              output_tokens: OutputOpt = None,
              description: Annotated[str, typer.Option(help="What the request was for.")] = "",
              project: Annotated[str, typer.Option(help="Project the spend is for.")] = "",
              as_json: Json = False) -> None:
    """Spend now: TOKENS/1000 x the model's price, under the agent's limits (also `tx llm AGENT TASK TOKENS`)."""
    s = _ex().spend(agent, model, tokens, output_tokens=output_tokens, task=task_type, id=id,
                    description=description, project=project)
    if as_json:
        out.emit_json(s.to_json())
    elif not s.created:
        out.message(f"already recorded ({s.id}): {s.agent} used {fmt(s.cost)} for {s.tokens} tokens")
    else:
        out.message(f"✅ {s.agent} used {fmt(s.cost)} for {s.tokens} tokens ({s.model} at {fmt(s.price_per_1k)}/1K, "
                    f"{s.task}); balance {fmt(s.balance)}")


@llm_app.command("reserve", context_settings=NUMBERS_OK)
def llm_reserve(agent: Agent, task_type: TaskType,
                max_tokens: Annotated[str, typer.Argument(help="Most inference tokens the request may use.")],
                model: ModelOpt = None,
                id: Annotated[Optional[str], typer.Option("--id", help="Reservation id (default: generated).")]
                = None,
                ttl: Annotated[Optional[int], typer.Option(help="Seconds before it expires "
                                                           "(default: limits.reservation_ttl).")] = None,
                as_json: Json = False) -> None:
    """Hold the most MAX_TOKENS can cost; prints the reservation id (settle or void it)."""
    r = _ex().reserve(agent, model, max_tokens, task=task_type, id=id, ttl=ttl).info
    if as_json:
        out.emit_json(r.to_json())
        return
    print(r.id)
    out.message(f"reserved {fmt(r.held)} for {agent}: up to {r.max_tokens} tokens of {r.model} "
                f"(reservation {r.id}, expires {r.expires})")


@llm_app.command("settle")
def llm_settle(reservation: Reservation,
               tokens: Annotated[str, typer.Option("--tokens", help="Tokens actually used.")],
               output_tokens: OutputOpt = None, as_json: Json = False) -> None:
    """Charge the actual cost of a reservation and release the rest."""
    r = _ex().settle(reservation, tokens, output_tokens=output_tokens, allow_over=False)
    if as_json:
        out.emit_json(r.to_json())
    else:
        out.message(f"✅ {r.agent} used {fmt(r.cost)} for {r.tokens} tokens ({r.model}, reservation {r.id}); "
                    f"released {fmt(r.released)}")


@llm_app.command("void")
def llm_void(reservation: Reservation, as_json: Json = False) -> None:
    """Release all of a reservation (the request did not happen)."""
    r = _ex().void(reservation)
    if as_json:
        out.emit_json(r.to_json())
    else:
        out.message(f"voided reservation {r.id}: released {fmt(r.released)} to {r.agent}")


@llm_app.command("show")
def llm_show(reservation: Reservation, as_json: Json = False) -> None:
    """A reservation's state: open, settled, voided or expired."""
    r = _ex().reservation(reservation)
    if as_json:
        out.emit_json(r.to_json())
    else:
        print(f"{r.id}: {r.state}; {r.agent}, up to {r.max_tokens} tokens of {r.model}, held {fmt(r.held)}"
              + (f", cost {fmt(r.cost)} for {r.tokens} tokens" if r.state == "settled" else "")
              + (f", expires {r.expires}" if r.state == "open" else ""))


# --- tx limits -------------------------------------------------------------------------------
def limits_cmd(agent: Agent, as_json: Json = False) -> None:
    """Each limit: the limit, used in its window, remaining, reserved, and when more frees up."""
    from token_exchange.rules import limits as lim
    from token_exchange.services.settlement import earning_status

    ex = _ex()
    data = ex.limits(agent).to_json()
    data.update(earning_status(ex.svc, agent))  # provisional tokens held back, earning caps ([caps])
    if as_json:
        out.emit_json(data)
        return

    def nxt(key: str) -> str:
        d = data[key]
        if d["next_frees_at"] is None:
            return "-"
        return (f"{d['next_frees_amount']} at {d['next_frees_at']} "
                f"(in {lim.duration(d['next_frees_in_seconds'] * 10**6)})")

    rows = [("burst (per spend)", data["burst"]["limit"], "-", "-", "-"),
            ("reserve (floor)", data["reserve"]["limit"], "-", data["reserve"]["above_reserve"], "-"),
            ("hourly (last 60 min)", data["hourly"]["limit"], data["hourly"]["used"], data["hourly"]["remaining"],
             nxt("hourly")),
            ("daily (last 24 h)", data["daily"]["limit"], data["daily"]["used"], data["daily"]["remaining"],
             nxt("daily"))]
    rows += [(f"earning cap: {c['source']} {c['window']}", c["limit"], c["earned"], c["remaining"], "-")
             for c in data["caps"]]
    held = data["provisional_held_back"]
    out.table(f"Limits of {agent}", ["Limit", "Value", "Used", "Remaining", "Next frees up"], rows,
              right=["Value", "Used", "Remaining"],
              caption=f"balance {data['balance']}{f' ({held} provisional, not spendable yet)' if held else ''}, "
                      f"reserved {data['reserved']} ({len(data['reservations'])} open), can spend now "
                      f"{data['available']}")


# --- tx pool ---------------------------------------------------------------------------------
@pool_app.command("create", context_settings=NUMBERS_OK)
def pool_create(name: Annotated[str, typer.Argument(help="New pool name.")],
                creator: Annotated[str, typer.Argument(help="Agent creating the pool (its first member).")],
                min_contribution: Annotated[str, typer.Argument(help="Smallest contribution accepted (tokens).")],
                as_json: Json = False) -> None:
    """Create a pool; the creator is its first member."""
    res = _ex().pool_create(name, creator, min_contribution)
    if as_json:
        out.emit_json({**res.pool.to_json(), "created_now": res.changed})
    else:
        out.message(f"created pool {name} (creator {creator}, minimum contribution {fmt(res.pool.min_contribution)})"
                    if res.changed else f"pool {name} already exists with these settings; nothing new")


@pool_app.command("join")
def pool_join(pool: Pool, agent: Agent, as_json: Json = False) -> None:
    """Join a pool (members may contribute)."""
    res = _ex().pool_join(pool, agent)
    if as_json:
        out.emit_json({**res.pool.to_json(), "joined_now": res.changed})
    else:
        out.message(f"{agent} joined pool {pool} ({len(res.pool.members)} members)" if res.changed
                    else f"{agent} is already a member of pool {pool}; nothing new")


@pool_app.command("contribute", context_settings=NUMBERS_OK)
def pool_contribute(pool: Pool, agent: Agent, amount: Amount,
                    id: Annotated[Optional[str], typer.Option("--id", help="Idempotency id.")] = None,
                    as_json: Json = False) -> None:
    """Move tokens from a member's wallet into the pool (under the member's limits)."""
    c = _ex().pool_contribute(pool, agent, amount, id=id)
    if as_json:
        out.emit_json(c.to_json())
    elif c.created:
        out.message(f"{agent} contributed {fmt(c.amount)} to pool {pool} (pool balance {fmt(c.pool_balance)})")
    else:
        out.message(f"already recorded ({c.id}); nothing new")


@pool_app.command("spend", context_settings=NUMBERS_OK)
def pool_spend(pool: Pool, model: Annotated[str, typer.Argument(help="Model to call (see `tx rewards`).")],
               tokens: Tokens,
               description: Annotated[str, typer.Argument(help="What the spend is for.")],
               id: Annotated[Optional[str], typer.Option("--id", help="Idempotency id.")] = None,
               by: Annotated[Optional[str], typer.Option("--by", help="Member making the request.")] = None,
               as_json: Json = False) -> None:
    """Spend pool tokens on a model call; contributors are credited in proportion to their stakes."""
    s = _ex().pool_spend(pool, model, tokens, description, id=id, by=by)
    if as_json:
        out.emit_json(s.to_json())
        return
    if not s.created:
        out.message(f"already recorded ({s.id}); nothing new")
        return
    credit = ", ".join(f"{a} {fmt(v)}" for a, v in sorted(s.credits.items())) or "nobody"
    out.message(f"✅ pool {pool} used {fmt(s.cost)} for {s.tokens} tokens of {model}; "
                f"credit: {credit}; pool balance {fmt(s.pool_balance)}")


def _pool_table(st: PoolInfo) -> None:
    d = st.to_json()
    state = "dissolved" if d["dissolved"] else f"{len(d['members'])} members"
    out.table(f"Pool {d['pool']} ({state})", ["Agent", "Member", "Contributed", "Credit", "Refunded", "Stake",
                                              "Share %"],
              [(c["agent"], "yes" if c["member"] else "no", c["contributed"], c["credit"], c["refunded"],
                c["stake"], c["share_percent"]) for c in d["contributors"]],
              right=["Contributed", "Credit", "Refunded", "Stake", "Share %"],
              caption=f"creator {d['creator']}, minimum {d['min_contribution']}, balance {d['balance']}, "
                      f"spent {d['spent']} in {d['spends']} spends")


@pool_app.command("show")
def pool_show(pool: Pool, as_json: Json = False) -> None:
    """A pool: members, contributions, credit, stakes, balance."""
    st = _ex().pool(pool)
    if as_json:
        out.emit_json(st.to_json())
    else:
        _pool_table(st)


@pool_app.command("list")
def pool_list(as_json: Json = False) -> None:
    """Every pool."""
    all_ = _ex().pools()
    if as_json:
        out.emit_json([p.to_json() for p in all_])
        return
    out.table("Pools", ["Pool", "Creator", "Members", "Minimum", "Balance", "Spent", "State"],
              [(p.name, p.creator, ", ".join(p.members), fmt(p.min_contribution), fmt(p.balance), fmt(p.spent),
                "dissolved" if p.dissolved else "open") for p in all_], right=["Minimum", "Balance", "Spent"])


@pool_app.command("leave")
def pool_leave(pool: Pool, agent: Agent, as_json: Json = False) -> None:
    """Leave a pool: the agent's unspent stake is refunded."""
    r = _ex().pool_leave(pool, agent)
    if as_json:
        out.emit_json(r.to_json())
    else:
        out.message(f"{agent} left pool {pool}; refunded {fmt(r.refunds.get(agent, Decimal(0)))}")


@pool_app.command("dissolve")
def pool_dissolve(pool: Pool, by: Annotated[Optional[str], typer.Option("--by", help="Member dissolving it.")] = None,
                  as_json: Json = False) -> None:
    """Dissolve a pool: every unspent stake goes back to its contributor, exactly."""
    r = _ex().pool_dissolve(pool, by=by)
    if as_json:
        out.emit_json(r.to_json())
    else:
        refunds = ", ".join(f"{a} {fmt(v)}" for a, v in sorted(r.refunds.items())) or "nothing to refund"
        out.message(f"dissolved pool {pool}: {refunds}")


def register(app: typer.Typer) -> None:
    """Add `tx llm`, `tx limits` and `tx pool` to `tx`."""
    app.add_typer(llm_app, name="llm")
    app.add_typer(pool_app, name="pool")
    app.command("limits")(limits_cmd)
