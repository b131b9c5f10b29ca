"""``tx-bd``: pay issue-close rewards from the beads (``bd``) issue tracker.

A thin typer app: it parses, calls ``token_exchange.beads`` and prints.  Results go to
stdout, messages to stderr, ``--json`` prints one document, exit 0 done / 1 refused / 2 usage.
rich is imported only when a table is drawn, so the hook path stays light.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from token_exchange import beads
from token_exchange.cli import output as out
from token_exchange.amounts import fmt, to_decimal
from token_exchange.errors import ConfigError, UserError

from token_exchange.cli.common import Json, state

app = typer.Typer(help="tx-bd: token rewards for closing beads (bd) issues.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False,
                  context_settings={"help_option_names": ["-h", "--help"]})
AgentOpt = Annotated[Optional[str], typer.Option("--agent", help="Pay this agent when the assignee is not one.")]
JsonlOpt = Annotated[Optional[Path], typer.Option("--jsonl", help="Read this bd export instead of asking bd.")]
HOOK_MARKER = "# token-exchange on_close hook"


def _version(value: bool) -> None:
    if value:
        from token_exchange import __version__

        sys.stdout.write(f"tx-bd {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(home: Annotated[Optional[Path], typer.Option("--home", help="Exchange home (default: "
                                                        "$TOKEN_EXCHANGE_HOME, else .exchange/ in this repo).")] = None,
          debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error (for bug reports).")
                           ] = False,
          version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", callback=_version,
                                                is_eager=True)] = False) -> None:
    state.home = home
    state.debug = debug or bool(os.environ.get("TOKEN_EXCHANGE_DEBUG"))


# --------------------------------------------------------------------------- helpers

def _exchange():  # type: ignore[no-untyped-def]
    from token_exchange.cli.common import exchange

    return exchange()


def _exchange_or_defaults():  # type: ignore[no-untyped-def]
    """(config, exchange or None): previews work before `tx init`, with the default tables."""
    try:
        ex = _exchange()
        return ex.cfg, ex
    except ConfigError:
        raise
    except UserError as e:
        from token_exchange.rules import config

        out.message(f"tx-bd: {e}; using the default reward tables")
        return config.load(None), None


def _repo() -> Path:
    from token_exchange.git import toplevel

    return toplevel() or Path.cwd()


def _project(cfg: Any) -> str:
    from token_exchange.git import project_name

    return project_name(_repo(), cfg.project)


def _outcome_line(o: beads.Outcome) -> str:
    i = o.issue
    if o.already is not None:
        line = f"{i.id}: already paid {fmt(o.paid)} to {o.agent}; nothing new"
        return line + (f" ({o.note})" if o.note else "")
    if o.created:
        return (f"{i.id}: paid {fmt(o.paid)} tokens to {o.agent} ({o.reward.reason};"
                f" payee from {o.payee_source})")
    return f"{i.id}: not paid"


def _plain_rows(columns: list[str], rows: list[list[str]], right: set[str]) -> None:
    widths = [max([len(c)] + [len(r[n]) for r in rows]) for n, c in enumerate(columns)]
    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if columns[n] in right else c.ljust(w)
                         for n, (c, w) in enumerate(zip(cells, widths))).rstrip()
    w = sys.stdout.write
    w(line(columns) + "\n")
    w("\n".join(line(r) for r in rows) + ("\n" if rows else ""))


# --------------------------------------------------------------------------- commands

@app.command()
def rewards(as_json: Json = False) -> None:
    """The issue reward structure: priority tokens and type multipliers (highest applicable wins)."""
    cfg, _ex = _exchange_or_defaults()
    data = {"priority": {k: v for k, v in cfg.issue_priority.items()}, "types": dict(cfg.issue_types),
            "default_type_multiplier": cfg.default_type_multiplier,
            "rule": "reward = priority tokens x the highest multiplier of the issue's type and its labels "
                    "named after a type; other types use the default multiplier",
            "example": "P2 bug: 300 x 1.5 = 450"}
    if as_json:
        out.emit_json(data)
        return
    out.table("Issue close rewards", ["Priority", "Tokens"],
              [(k, v) for k, v in cfg.issue_priority.items()], right=["Tokens"])
    out.table("Type multipliers (type or label; highest wins)", ["Type", "Multiplier"],
              [(k, f"{v}x") for k, v in cfg.issue_types.items()]
              + [("(any other type)", f"{cfg.default_type_multiplier}x")], right=["Multiplier"])
    print("bd priority 0-4 is shown as P0-P4 (0 = critical). Example: a P2 bug earns 300 x 1.5 = 450 tokens.")


@app.command()
def preview(issue: Annotated[str, typer.Argument(help="Issue id, e.g. bd-a3f8.1")], agent: AgentOpt = None,
            jsonl: JsonlOpt = None, as_json: Json = False) -> None:
    """What closing ISSUE would pay, to whom, and why."""
    src = beads.open_source(jsonl)
    cfg, ex = _exchange_or_defaults()
    i = src.issue(issue)
    reward = beads.reward_for(cfg, i)
    payee = beads.payee_for(cfg, i, agent, beads.actor())
    paid = beads.paid_ids(ex).get(i.id) if ex is not None else None
    data = beads.issue_json(i, reward)
    data.update(agent=payee.agent, payee_from=payee.source or None, payee_detail=payee.detail,
                work=i.is_work, already_paid=paid is not None, source=src.name)
    if paid is not None:
        data.update(paid_to=paid.agent, paid_amount=to_decimal(paid.amount), paid_at=paid.ts)
    if as_json:
        out.emit_json(data)
        return
    print(f"{i.id}  {i.title}")
    print(f"  [{i.status}] {reward.reason} = {fmt(reward.amount)} tokens")
    if not i.is_work:
        print(f"  not work ({i.issue_type}{', template' if i.is_template else ''}): closing it pays nothing")
    elif paid is not None:
        print(f"  already paid {fmt(paid.amount)} to {paid.agent} at {paid.ts}: closing again pays nothing")
    elif payee.agent:
        print(f"  -> {payee.agent} (from {payee.source} {payee.detail})")
    else:
        print(f"  -> nobody: {payee.detail}")


@app.command("preview-all")
def preview_all(jsonl: JsonlOpt = None, as_json: Json = False) -> None:
    """Every open issue with its reward, highest first, and the total at stake."""
    src = beads.open_source(jsonl)
    cfg, ex = _exchange_or_defaults()
    issues = src.open_issues()
    paid = beads.paid_ids(ex) if ex is not None else {}
    from token_exchange.rules.identities import agent_for

    agents: dict[str, str | None] = {}
    rows = []
    for i, r in zip(issues, beads.rewards_for(cfg, issues)):
        if i.assignee not in agents:
            agents[i.assignee] = agent_for(cfg, i.assignee) if i.assignee else None
        rows.append((i, r, agents[i.assignee], paid.get(i.id)))
    rows.sort(key=lambda t: (-t[1].amount, t[0].priority_label, t[0].id))
    total = sum(r.amount for _i, r, _a, p in rows if p is None)
    if as_json:
        items = []
        parts: dict[int, dict[str, Any]] = {}  # rewards are shared by many issues: encode each once
        for i, r, a, p in rows:
            part = parts.get(id(r))
            if part is None:
                part = parts[id(r)] = beads.reward_json(r)
            d = beads.issue_json(i, r, part)
            d.update(agent=a, already_paid=p is not None)
            items.append(d)
        out.emit_json({"issues": items, "count": len(items), "total": to_decimal(total), "source": src.name})
        return
    table_rows = [[i.id, i.priority_label, r.issue_type, i.status, fmt(r.amount) + (" (paid)" if p else ""),
                   a or "-", i.title[:60]] for i, r, a, p in rows]
    cols = ["Issue", "Pri", "Type", "Status", "Reward", "Agent", "Title"]
    if sys.stdout.isatty() and len(table_rows) <= 2000:
        out.table("Open issues", cols, table_rows, right=["Reward"])
    else:
        _plain_rows(cols, table_rows, {"Reward"})
    print(f"{len(rows)} open issues, {fmt(total)} tokens at stake")


@app.command()
def close(issues: Annotated[list[str], typer.Argument(help="Issue ids to close.")],
          reason: Annotated[Optional[str], typer.Option("--reason", "-r", help="Close reason.")] = None,
          agent: AgentOpt = None, as_json: Json = False) -> None:
    """Close issues through `bd close --json`, then pay each issue bd actually closed."""
    ex = _exchange()
    cfg = ex.cfg
    src = beads.open_source(need_bd=True, cwd=Path.cwd())
    assert src.client is not None
    if agent:
        cfg.agent(agent)
    closer = beads.actor()
    fallback = agent or (closer and beads.agent_for(cfg, closer))
    if not fallback:  # make sure every issue has a payee BEFORE closing anything
        for ident in issues:
            try:
                i = src.client.show(ident)
            except UserError as e:
                raise UserError(f"{ident[:60]}: {e}; nothing closed, nothing paid") from None
            p = beads.payee_for(cfg, i, agent, closer)
            if p.agent is None and i.is_work:
                raise UserError(f"nobody to pay for {i.id} ({p.detail}): pass --agent or set BD_ACTOR;"
                                f" nothing closed, nothing paid")
    closed, stderr, error = src.client.close(issues, reason, {beads.CLOSING_ENV: "1"})
    refused = beads.refusals(issues, closed, stderr, error)
    work = [i for i in closed if i.is_work]
    try:
        plans = beads.plan(cfg, work, agent, closer)
    except UserError as e:
        raise UserError(f"bd closed {', '.join(i.id for i in closed)} but it cannot be paid: {e};"
                        f" fix it, then run `tx-bd sync`") from None
    outcomes = beads.pay(ex, plans, _project(cfg), "close")
    unpaid = [o for o in outcomes if not o.created and o.already is None]
    if as_json:
        out.emit_json({"closed": [o.to_json() for o in outcomes],
                       "not_work": [i.id for i in closed if not i.is_work],
                       "refused": [{"id": r, "reason": why} for r, why in refused],
                       "unpaid": [{"id": o.issue.id, "reason": "no agent to pay"} for o in unpaid],
                       "total_paid": to_decimal(sum(o.paid for o in outcomes if o.created))})
    else:
        for o in outcomes:
            if o.created or o.already is not None:
                out.message("tx-bd: " + _outcome_line(o))
        for i in closed:
            if not i.is_work:
                out.message(f"tx-bd: {i.id}: closed; a {i.issue_type} is not work, nothing paid")
    for o in unpaid:
        out.message(f"tx-bd: {o.issue.id}: closed but not paid: no agent to pay; run `tx-bd sync --agent A`")
    for ident, why in refused:
        out.message(f"tx-bd: {ident}: bd did not close it: {why}; not paid")
    if refused or unpaid:
        raise typer.Exit(1)


@app.command()
def sync(agent: AgentOpt = None, jsonl: JsonlOpt = None, as_json: Json = False) -> None:
    """Pay every closed issue not paid yet (closed with plain `bd close`, elsewhere, or missed by the hook)."""
    ex = _exchange()
    cfg = ex.cfg
    if agent:
        cfg.agent(agent)
    src = beads.open_source(jsonl)
    closed = src.closed_issues()  # every record validated before anything is paid
    work = [i for i in closed if i.is_work]
    paid = beads.paid_ids(ex)
    todo = [i for i in work if i.id not in paid]
    plans = beads.plan(cfg, todo, agent, beads.actor())
    outcomes = beads.pay(ex, [p for p in plans if p.payee.agent], _project(cfg), "sync") if todo else []
    unpaid = [p for p in plans if p.payee.agent is None]
    new = [o for o in outcomes if o.created]
    total = sum(o.paid for o in new)
    if as_json:
        out.emit_json({"paid": [o.to_json() for o in new], "already_paid": len(work) - len(todo),
                       "unpaid": [{"id": p.issue.id, "reward": to_decimal(p.reward.amount), "reason": p.payee.detail}
                                  for p in unpaid],
                       "not_work": len(closed) - len(work), "total_paid": to_decimal(total), "source": src.name})
    else:
        for o in new:
            out.message("tx-bd: " + _outcome_line(o))
    for p in unpaid:
        out.message(f"tx-bd: {p.issue.id}: not paid ({p.payee.detail}); assign it to an agent or pass --agent")
    out.message(f"tx-bd: synced {len(closed)} closed issues from {src.name}: paid {len(new)} ({fmt(total)} tokens),"
                f" {len(work) - len(todo)} already paid, {len(unpaid)} without an agent")


@app.command("install-hook")
def install_hook(force: Annotated[bool, typer.Option("--force", help="Replace an existing on_close hook.")] = False,
                 as_json: Json = False) -> None:
    """Write .beads/hooks/on_close so closing an issue with plain `bd close` pays at once."""
    repo = _repo()
    beads_dir = Path(os.environ["BEADS_DIR"]).expanduser() if os.environ.get("BEADS_DIR") else repo / ".beads"
    if not beads_dir.is_dir():
        raise UserError(f"no beads directory at {beads_dir} (run `bd init` first, or set BEADS_DIR)")
    path = beads_dir / "hooks" / "on_close"
    if path.exists() and not force:
        try:
            ours = HOOK_MARKER in path.read_text("utf-8", "replace")
        except OSError:
            ours = False
        if not ours:
            raise UserError(f"{path} exists and is not ours; pass --force to replace it")
    home = ["--home", str(Path(state.home).absolute())] if state.home else []
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "token_exchange.cli.bd", *home, "hook"])
    script = f"""#!/bin/sh
{HOOK_MARKER} (written by `tx-bd install-hook`; rerun it to update).
# bd runs this as `on_close <issue-id> close` with the issue JSON on stdin. bd fires hooks
# asynchronously with a short timeout and may cut them off when it exits, so a close can be
# missed: run `tx-bd sync` (cron, CI) to pay those. Paying is idempotent by issue id.
[ "${{{beads.CLOSING_ENV}:-}}" = 1 ] && exit 0  # `tx-bd close` is paying this one itself
cd {shlex.quote(str(repo))} || exit 0
exec {cmd} "$@"
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".on_close.tmp")
    tmp.write_text(script, "utf-8")
    tmp.chmod(0o755)
    tmp.replace(path)
    if as_json:
        out.emit_json({"hook": str(path), "repo": str(repo)})
    else:
        out.message(f"tx-bd: installed {path}; bd fires it asynchronously, so also run `tx-bd sync` from cron/CI")


@app.command(hidden=True)
def hook(issue: Annotated[str, typer.Argument(help="Issue id bd passes to the hook.")],
         event: Annotated[str, typer.Argument(help="Hook event bd passes (close, update).")] = "close",
         as_json: Json = False) -> None:
    """Called by bd as `on_close <id> close` with the issue JSON on stdin: pay at once."""
    if event != "close" or os.environ.get(beads.CLOSING_ENV) == "1":
        return
    text = sys.stdin.read(beads.MAX_LINE + 1) if not sys.stdin.isatty() else ""
    i = beads.issue_from_hook(issue, text)
    if i is None:
        src = beads.open_source(need_bd=True)
        assert src.client is not None
        i = src.client.show(issue)
    if i.status != "closed":
        out.message(f"tx-bd: {i.id} is {i.status}, not closed; nothing paid")
        return
    if not i.is_work:
        return
    ex = _exchange()
    (p,) = beads.plan(ex.cfg, [i], os.environ.get("TX_BD_AGENT") or None, beads.actor())
    if p.payee.agent is None:
        raise UserError(f"nobody to pay for {i.id} ({p.payee.detail}); `tx-bd sync --agent A` can pay it later")
    (o,) = beads.pay(ex, [p], _project(ex.cfg), "hook")
    if as_json:
        out.emit_json(o.to_json())
    else:
        out.message("tx-bd: " + _outcome_line(o))


class _ExitCodes:
    """Called with standalone_mode=False, click *returns* a command's typer.Exit code instead of
    raising it; re-raise it so run_cli sees it (close/sync exit 1 on refusals)."""

    def __call__(self, **kw: Any) -> Any:
        rv = app(**kw)
        if isinstance(rv, int) and not isinstance(rv, bool) and rv != 0:
            raise typer.Exit(rv)
        return rv


def run(argv: list[str] | None = None) -> int:
    state.reset()
    return out.run_app(_ExitCodes(), "tx-bd", list(sys.argv[1:] if argv is None else argv), state)


def main() -> None:
    raise SystemExit(run())


if __name__ == "__main__":
    main()
