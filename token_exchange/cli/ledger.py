"""Commands on the ledger and the config: init, balance, history, agents, rewards, commit, award, export,
import, doctor, status."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from token_exchange.amounts import fmt, to_units
from token_exchange.cli import output as out
from token_exchange.cli.common import Agent, Amount, Json, exchange, state
from token_exchange.errors import UserError
from token_exchange.ledger.backends import DEFAULT as DEFAULT_BACKEND
from token_exchange.ledger.backends import NAMES as BACKENDS
from token_exchange.services.exchange import CommitResult

commands = typer.Typer()
agent_app = typer.Typer(help="Manage agents in config.toml.", no_args_is_help=True)


@commands.command()
def init(backend: Annotated[str, typer.Option(help=f"Ledger backend: {' or '.join(BACKENDS)}.")
                            ] = DEFAULT_BACKEND,
         as_json: Json = False) -> None:
    """Create the exchange home with a commented config.toml holding the seed defaults."""
    from token_exchange.services.setup import init_home

    result = init_home(state.home, backend)
    if as_json:
        out.emit_json(result)
    else:
        out.message(result["message"])


@commands.command()
def balance(agent: Annotated[Optional[str], typer.Argument(help="Agent name; all agents when omitted.")] = None,
            as_json: Json = False) -> None:
    """Show wallet balances derived from the ledger (settled and provisional apart)."""
    from token_exchange.rules.limits import open_provisional

    ex = exchange()
    bals = [ex.balance(agent)] if agent else ex.balances()
    pending = {b.agent: open_provisional(b.by_kind) for b in bals}

    def doc(b: Any) -> dict[str, Any]:
        # balance = settled + provisional: provisional awards are in the wallet until they settle or expire
        return {**b.to_json(), "settled": out.amount(b.balance - pending[b.agent]),
                "provisional": out.amount(pending[b.agent])}

    if as_json:
        out.emit_json(doc(bals[0]) if agent else [doc(b) for b in bals])
        return
    show = ex.cfg.on_merge or any(pending.values())
    rows = [(b.agent, fmt(b.balance), *((fmt(b.balance - pending[b.agent]), fmt(pending[b.agent])) if show else ()),
             fmt(b.earned), fmt(b.spent), fmt(b.by_kind.get("contribute", 0)), fmt(b.by_kind.get("credit", 0)))
            for b in bals]
    cols = ["Agent", "Balance", *(("Settled", "Provisional") if show else ()), "Earned", "Spent", "Pooled",
            "Pool credit"]
    out.table("Balances", cols, rows, right=cols[1:])


@commands.command()
def history(agent: Agent,
            limit: Annotated[int, typer.Option(min=1, max=100000, help="How many transactions.")] = 20,
            as_json: Json = False) -> None:
    """An agent's most recent transactions, newest first."""
    ex = exchange()
    ex.cfg.agent(agent)
    txns = ex.ledger.fresh().history(agent, limit)
    if as_json:
        out.emit_json([_txn_json(t) for t in txns])
        return
    sign = lambda t: fmt(t.amount) if t.payee == agent else f"-{fmt(t.amount)}"  # noqa: E731
    out.table(f"History of {agent}", ["Time (UTC)", "Kind", "Amount", "Project", "Description", "Id"],
              [(t.ts[:19].replace("T", " "), t.kind, sign(t), t.project, t.description[:60], t.id[:40])
               for t in txns], right=["Amount"])


def _txn_json(t: Any) -> dict[str, Any]:
    d = t.to_json()
    d["amount"] = out.amount(t.amount)
    return d


@commands.command()
def agents(as_json: Json = False) -> None:
    """The configured agents (level, base rate, models, identities)."""
    cfg = exchange().cfg
    data: list[dict[str, Any]] = [{"agent": a.name, "level": a.level, "base_rate": a.base_rate,
                                   "primary_llm": a.primary_llm, "preferred_llm": a.preferred_llm,
                                   "emails": list(a.emails)} for a in cfg.agents.values()]
    if as_json:
        out.emit_json(data)
        return
    out.table("Agents", ["Agent", "Level", "Base rate", "Primary LLM", "Preferred", "Emails"],
              [(d["agent"], f"L{d['level']}", d["base_rate"], d["primary_llm"],
                ", ".join(f"{k}: {v}" for k, v in d["preferred_llm"].items()), ", ".join(d["emails"]))
               for d in data], right=["Base rate"])


@agent_app.command("add")
def agent_add(name: Annotated[str, typer.Argument(help="New agent name (a-z 0-9 _ . -).")],
              base_rate: Annotated[str, typer.Option(help="Tokens per commit before multipliers.")],
              primary_llm: Annotated[str, typer.Option(help="Model used when no task preference applies.")],
              level: Annotated[int, typer.Option(min=0, max=100, help="Agent level (informational).")] = 5,
              email: Annotated[Optional[list[str]], typer.Option(help="Author email (repeatable).")] = None,
              as_json: Json = False) -> None:
    """Add an agent to config.toml (comments and layout are kept) and open its wallet."""
    from token_exchange.services.setup import add_agent

    ex = exchange()
    add_agent(ex, name, base_rate, primary_llm, level, email or [])
    ex = exchange()
    ex.open_all()
    if as_json:
        out.emit_json(ex.balance(name).to_json())
    else:
        out.message(f"added agent {name} (base rate {base_rate}, {primary_llm})")


@commands.command()
def rewards(as_json: Json = False) -> None:
    """The reward rule tables: contracts, keyword bonuses, issue priorities and types, models, limits."""
    cfg = exchange().cfg
    data: dict[str, Any] = {
        "contracts": [{"name": c.name, "pattern": c.pattern, "multiplier": c.multiplier,
                       "budget": out.amount(c.budget)} for c in cfg.contracts],
        "bonuses": [{"name": b.name, "keywords": list(b.keywords), "multiplier": b.multiplier} for b in cfg.bonuses],
        "issue_priority": cfg.issue_priority, "issue_types": cfg.issue_types,
        "default_type_multiplier": cfg.default_type_multiplier,
        "models": {m.name: {"cost_per_1k": m.cost_per_1k, "input_per_1k": m.input_per_1k,
                            "output_per_1k": m.output_per_1k} for m in cfg.models.values()},
        "limits": {k: out.amount(getattr(cfg.limits, k)) for k in ("hourly", "daily", "burst", "reserve")},
    }
    if as_json:
        out.emit_json(data)
        return
    out.table("Contracts (first full match wins)", ["Contract", "Pattern", "Multiplier", "Budget"],
              [(c["name"], c["pattern"] or "(everything)", f"{c['multiplier']}x", c["budget"])
               for c in data["contracts"]], right=["Multiplier", "Budget"])
    out.table("Commit keyword bonuses (highest match wins)", ["Keywords", "Multiplier"],
              [(", ".join(b["keywords"]), f"{b['multiplier']}x") for b in data["bonuses"]], right=["Multiplier"])
    out.table("Issue rewards", ["Priority", "Tokens"], list(cfg.issue_priority.items()), right=["Tokens"])
    out.table("Issue type multipliers", ["Type", "Multiplier"],
              [(k, f"{v}x") for k, v in cfg.issue_types.items()] + [("(other)", f"{cfg.default_type_multiplier}x")],
              right=["Multiplier"])
    out.table("Models (tokens per 1K)", ["Model", "Cost/1K"],
              [(m.name, m.cost_per_1k) for m in cfg.models.values()], right=["Cost/1K"])


@commands.command()
def commit(author_email: Annotated[str, typer.Argument(help="Author email (maps to an agent).")],
           project: Annotated[str, typer.Argument(help="Project name (picks the contract).")],
           message: Annotated[str, typer.Argument(help="Commit message (keywords give bonuses).")],
           sha: Annotated[Optional[str], typer.Option(help="Commit SHA (the idempotency key).")] = None,
           id: Annotated[Optional[str], typer.Option("--id", help="Reward id (overrides --sha).")] = None,
           parents: Annotated[int, typer.Option(min=0, max=1000, help="Parent count (merges earn nothing).")] = 1,
           as_json: Json = False) -> None:
    """Pay a commit: base rate x contract multiplier x keyword bonus (the seed's command)."""
    ex = exchange()
    result = ex.commit(author_email, project, message, reward_id=id, sha=sha or "", parents=parents)
    if as_json:
        out.emit_json(commit_json(result))
    else:
        out.message(result.describe())


def commit_json(result: CommitResult) -> dict[str, Any]:
    plan = result.plan
    r = plan.reward
    data: dict[str, Any] = {"reward_id": result.reward_id, "amount": out.amount(result.amount),
                            "paid": any(a.created for a in result.shares), "already_paid": bool(plan.already),
                            "unmatched": plan.facts.author if plan.status == "unmatched" else None}
    shares = [(a.txn.agent, a.txn.amount, a.txn.id) for a in result.shares] or \
        [(p.agent, p.amount, f"{p.ref}:{p.agent}") for p in plan.already]
    data["agent"] = shares[0][0] if shares else None
    data["shares"] = [{"agent": a, "amount": out.amount(v), "id": i} for a, v, i in shares]
    if r is not None:
        data.update(project=r.project, contract=r.contract, multiplier=r.multiplier, base_rate=r.base_rate,
                    keyword=r.keyword or None, bonus=r.bonus, gross=out.amount(r.gross), capped=r.capped,
                    budget_left=out.amount(r.budget_left), excluded=r.excluded, reason=r.reason)
    return data


@commands.command(context_settings={"ignore_unknown_options": True})  # "-5" reaches the check below
def award(agent: Agent, amount: Amount,
          source: Annotated[str, typer.Argument(help="Where the award comes from (e.g. beads-integration).")],
          description: Annotated[str, typer.Argument(help="What it is for.")],
          id: Annotated[Optional[str], typer.Option("--id", help="Idempotency id.")] = None,
          project: Annotated[str, typer.Option(help="Project the award is for.")] = "",
          as_json: Json = False) -> None:
    """Award tokens directly (for integrations).  Same --id twice pays once."""
    if amount.strip().startswith("-"):
        raise UserError(f"amount {amount.strip()[:20]} is negative: an award only pays; to take tokens back, reverse "
                        "the award with `tx reverse TXN_ID --reason TEXT` (`tx history AGENT` lists ids)")
    ex = exchange()
    units = to_units(amount, what="amount")
    result = ex.award(agent, units, source, description, id=id, project=project)
    if as_json:
        out.emit_json({"agent": agent, "amount": out.amount(result.txn.amount), "id": result.txn.id,
                       "created": result.created})
    elif result.created:
        out.message(f"awarded {fmt(units)} tokens to {agent} ({source}: {description[:80]})")
    else:
        out.message(f"already awarded ({result.txn.id}); nothing new")


@commands.command()
def export(format: Annotated[str, typer.Option("--format", help="csv or json.")] = "json",
           since: Annotated[Optional[str], typer.Option(help="Only transactions at or after this ISO time.")] = None,
           as_json: Json = False) -> None:
    """Export every transaction (CSV or JSON) to stdout."""
    from token_exchange.services import export as exporting

    if format not in ("csv", "json"):
        raise UserError(f"--format must be csv or json, not {format[:20]!r}")
    txns = exporting.exported(exchange(), since)
    if as_json or format == "json":
        out.emit_json(exporting.export_json(txns))
    else:
        exporting.write_csv(txns, sys.stdout)


@commands.command("import")
def import_(file: Annotated[Path, typer.Argument(help="A JSON or CSV export of `tx export`.")],
            unverified: Annotated[bool, typer.Option("--unverified", help="Also import transactions whose hashes "
                                                     "and chain do not verify (hand-written); says what they mint.")
                                  ] = False,
            as_json: Json = False) -> None:
    """Import transactions from a JSON or CSV export; idempotent by id; refuses what does not verify."""
    from token_exchange.services.export import import_ledger

    r = import_ledger(exchange(), file, allow_unverified=unverified)
    if as_json:
        out.emit_json({"imported": r.created, "already_present": r.existing, "verified": r.verified,
                       "minted": {k: out.amount(v) for k, v in sorted(r.minted.items())}})
        return
    out.message(f"imported {r.created} transactions ({r.existing} already present)"
                + ("" if r.verified else "; UNVERIFIED (--unverified)"))
    if r.minted:
        out.message("minted from world:* accounts: "
                    + ", ".join(f"{acct} {fmt(v)}" for acct, v in sorted(r.minted.items())))


@commands.command()
def doctor(repair: Annotated[bool, typer.Option(help="Rebuild derived state and move a tail that does not verify "
                                                "to a quarantine file; never deletes a transaction.")] = False,
           remote: Annotated[Optional[str], typer.Option("--remote", help="Fetch this remote's checkpoints first "
                                                         "and verify against them too.")] = None,
           as_json: Json = False) -> None:
    """Replay the ledger and check every invariant (and every checkpoint recorded in git)."""
    from token_exchange.git.remote import check_remote
    from token_exchange.ledger.doctor import check

    if remote is not None:
        check_remote(remote)
    from token_exchange.services import duplicates

    ex = exchange()
    report = check(ex.ledger, repair=repair, remote=remote)
    if report.ok:  # a readable, consistent ledger: is any change paid twice (two clones, before they synced)?
        if repair:
            for d in duplicates.resolve(ex):
                report.repaired.append(f"reversed {d.loser}: {d.reason}")
        for d in duplicates.unresolved(ex.ledger.fresh()):
            report.problems.append(f"{d.loser}: {d.reason}; `tx sync` or `tx doctor --repair` reverses it")
    if as_json:
        out.emit_json(report.to_json())
    else:
        for line in report.repaired:
            out.message(f"repaired: {line}")
        for line in report.notes:
            out.message(f"note: {line}")
        for line in report.problems:
            out.message(f"problem: {line}")
        verdict = "consistent" if report.ok else "NOT consistent"
        cps = f", {report.checkpoints} checkpoints verified" if report.checkpoints else ""
        print(f"ledger {verdict}: {report.transactions} transactions, {report.agents} agents{cps}")
    if not report.ok:
        raise typer.Exit(1)


@commands.command()
def checkpoint(push: Annotated[Optional[str], typer.Option("--push", help="Push the checkpoint branch to this "
                                                           "remote (never forced).")] = None,
               as_json: Json = False) -> None:
    """Record the ledger's head in git (branch token-exchange/checkpoints) so `tx doctor` can prove it later."""
    from token_exchange.ledger import checkpoint as cp

    result = cp.record(exchange().ledger, push=push)
    if as_json:
        out.emit_json(result)
        return
    what = "recorded" if result["created"] else "already recorded"
    out.message(f"checkpoint {what}: {result['count']} transactions (commit {result['commit'][:12]} on "
                f"{cp.BRANCH})" + (f", pushed to {push}" if push else ""))


@commands.command()
def status(as_json: Json = False) -> None:
    """Where the exchange lives, its backend and size, and every balance."""
    ex = exchange()
    idx = ex.ledger.fresh()
    bals = ex.balances()
    data = {"home": str(ex.home), "backend": ex.cfg.backend, "transactions": idx.count(),
            "balances": [b.to_json() for b in bals]}
    if as_json:
        out.emit_json(data)
        return
    out.message(f"exchange at {ex.home} ({ex.cfg.backend} backend), {data['transactions']} transactions")
    balance(None, False)


def register(app: typer.Typer) -> None:
    """Add these commands to `tx`."""
    for cmd in commands.registered_commands:
        app.registered_commands.append(cmd)
    app.add_typer(agent_app, name="agent")
