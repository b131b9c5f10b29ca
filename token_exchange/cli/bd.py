"""``tx-bd``: pay issue-close rewards from the beads (``bd``) issue tracker.

Long because it is a whole command-line program (every command with its help, ``--json`` and
table output); the decisions it prints are made below it.

A thin typer app: it parses, calls ``token_exchange.beads`` and prints.  Results go to stdout,
messages to stderr, ``--json`` prints one document, exit 0 done / 1 refused / 2 usage.  rich is
imported only when a table is drawn, so the hook path stays light.  Every payment decision is
``rules.engine.plan_issue``'s, written by ``beads.payments.apply``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from token_exchange.amounts import Units, fmt, to_decimal
from token_exchange.beads import client as bdc
from token_exchange.beads import hooks as bdhooks
from token_exchange.beads import issues as bdi
from token_exchange.beads import payee as bdp
from token_exchange.beads import payments as pay
from token_exchange.beads import workspace
from token_exchange.cli import output as out
from token_exchange.cli.common import Json, state
from token_exchange.errors import ConfigError, UserError

if TYPE_CHECKING:
    from token_exchange.rules.config import Config
    from token_exchange.services.exchange import Exchange

app = typer.Typer(help="tx-bd: token rewards for closing beads (bd) issues.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False,
                  context_settings={"help_option_names": ["-h", "--help"]})
AgentOpt = Annotated[str | None, typer.Option("--agent", help="Pay this agent when the assignee is not one.")]
ActorOpt = Annotated[str | None, typer.Option("--actor", help="bd's --actor: who is acting (else bd's own order:"
                                              " BD_ACTOR, config.yaml actor, BEADS_ACTOR, git user.name, $USER).")]
JsonlOpt = Annotated[Path | None, typer.Option("--jsonl", help="Read this bd export instead of asking bd.")]
AGENT_ENV = "TX_BD_AGENT"  # the hook's --agent


def _version(value: bool) -> None:
    if value:
        from token_exchange import __version__

        sys.stdout.write(f"tx-bd {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(home: Annotated[Path | None, typer.Option("--home", help="Exchange home (default: "
                                                     "$TOKEN_EXCHANGE_HOME, else .exchange/ in this repo).")] = None,
          debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error (for bug reports).")
                           ] = False,
          version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", callback=_version,
                                                is_eager=True)] = False) -> None:
    state.home = home
    state.debug = debug or bool(os.environ.get("TOKEN_EXCHANGE_DEBUG"))


# --------------------------------------------------------------------------- helpers

def _exchange() -> Exchange:
    from token_exchange.cli.common import exchange

    return exchange()


def _exchange_or_defaults() -> tuple[Config, Exchange | None]:
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
    """The repository's main work tree (every worktree is one project, one ledger), else the cwd."""
    from token_exchange import git

    w = git.where(Path.cwd())
    top = (git.main_worktree(w) or w.toplevel) if w else None
    return top or Path.cwd()


def _project(cfg: Config) -> str:
    from token_exchange.git import project_name

    return project_name(_repo(), cfg.project)


def _actor(flag: str | None) -> bdp.Actor:
    found = workspace.resolve(Path.cwd())
    return bdp.bd_actor(found.path if found else None, flag=flag, cwd=Path.cwd())


def _view(ex: Exchange | None, ids: list[str] | None = None) -> pay.PaidIssues:
    if ex is None:
        return pay.PaidIssues({})
    idx = ex.ledger.fresh()
    return pay.PaidIssues.load(idx) if ids is None else pay.PaidIssues.of(idx, ids)


def _stdin(limit: int) -> str:
    """At most ``limit`` characters of stdin, whatever its bytes (invalid UTF-8 is replaced, never raised)."""
    if sys.stdin is None or sys.stdin.isatty():
        return ""
    raw = getattr(sys.stdin, "buffer", None)
    if raw is None:  # a text stream without bytes under it (tests)
        return sys.stdin.read(limit)
    data: bytes = raw.read(limit * 4)
    return data.decode("utf-8", "replace")[:limit]


def _plain_rows(columns: list[str], rows: list[list[str]], right: set[str]) -> None:
    widths = [max([len(c)] + [len(r[n]) for r in rows]) for n, c in enumerate(columns)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if columns[n] in right else c.ljust(w)
                         for n, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()
    w = sys.stdout.write
    w(line(columns) + "\n")
    w("\n".join(line(r) for r in rows) + ("\n" if rows else ""))


def _stale_export(src: bdc.Source) -> str:
    """A warning when the export read is older than bd's data ("" when it is not, or nobody can tell)."""
    assert src.jsonl is not None
    binary = bdc.find_bd()
    here = workspace.resolve(Path.cwd())
    ours = here is not None and here.database and here.path == src.jsonl.absolute().parent.resolve()
    if binary and ours:  # bd is here and the file is its export: compare what bd holds with the file
        try:
            live = bdc.BdClient(binary, cwd=Path.cwd()).list_issues("--all")
        except UserError:
            live = []
        written = {i.id: i for i in src.all_issues()}
        from token_exchange.rules.engine import instant

        changed = [i.id for i in live if i.is_work and (
            i.id not in written or written[i.id].status != i.status
            or (instant(written[i.id].updated_at) or (0, 0)) < (instant(i.updated_at) or (0, 0)))]
        if changed:
            shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            return (f"{src.jsonl} is older than bd's data: {len(changed)} issue(s) changed since it was"
                    f" exported ({shown}); run `bd export -o {src.jsonl}` first, or sync without --jsonl")
        return ""
    db = workspace.database_path(src.jsonl.absolute().parent)  # the database next to the export, if any
    if db is not None:
        try:
            written_at = src.jsonl.stat().st_mtime
        except OSError:
            return ""
        if workspace.newest_change(db) > written_at + 1:
            return (f"bd's database ({db}) changed after {src.jsonl} was exported: closes since then are"
                    f" not in it (run `bd export -o {src.jsonl}` where bd is installed)")
    return ""


# --------------------------------------------------------------------------- commands

@app.command()
def rewards(as_json: Json = False) -> None:
    """The issue reward structure: priority tokens and type multipliers (highest applicable wins)."""
    cfg, _ex = _exchange_or_defaults()
    data = {"priority": dict(cfg.issue_priority.items()), "types": dict(cfg.issue_types),
            "default_type_multiplier": cfg.default_type_multiplier,
            "rule": "reward = priority tokens x the highest multiplier of the issue's type and its labels "
                    "named after a type; other types use the default multiplier",
            "example": "P2 bug: 300 x 1.5 = 450"}
    if as_json:
        out.emit_json(data)
        return
    out.table("Issue close rewards", ["Priority", "Tokens"],
              list(cfg.issue_priority.items()), right=["Tokens"])
    out.table("Type multipliers (type or label; highest wins)", ["Type", "Multiplier"],
              [(k, f"{v}x") for k, v in cfg.issue_types.items()]
              + [("(any other type)", f"{cfg.default_type_multiplier}x")], right=["Multiplier"])
    print("bd priority 0-4 is shown as P0-P4 (0 = critical). Example: a P2 bug earns 300 x 1.5 = 450 tokens.")


@app.command()
def preview(issue: Annotated[str, typer.Argument(help="Issue id, e.g. bd-a3f8.1")], agent: AgentOpt = None,
            actor: ActorOpt = None, jsonl: JsonlOpt = None, as_json: Json = False) -> None:
    """What closing ISSUE would pay, to whom, and why."""
    src = bdc.open_source(jsonl, actor=actor)
    cfg, ex = _exchange_or_defaults()
    i = src.issue(issue)
    payee = bdp.payee_for(cfg, i, agent, _actor(actor))
    p = pay.plan(cfg, i, payee, _view(ex, [i.id]), as_closed=True)
    data = bdi.issue_json(i, p.reward)
    data.update(agent=p.standing.agent if p.standing else payee.agent, payee_from=payee.source or None,
                payee_detail=payee.detail, work=i.is_work, already_paid=p.action == "paid", source=src.name)
    if not i.is_work:
        data.update(reward=0, not_work=i.not_work)
    if p.standing is not None and p.action == "paid":
        data.update(paid_to=p.standing.agent, paid_amount=to_decimal(p.standing.amount), paid_at=p.standing.ts)
    if p.action == "pay":
        data.update(pays=to_decimal(p.amount), cut=p.cut or None)
    if as_json:
        out.emit_json(data)
        return
    print(f"{i.id}  {i.title}")
    if p.reward is None:
        print(f"  [{i.status}] {i.not_work} is not work: closing it pays nothing")
        return
    print(f"  [{i.status}] {p.reward.reason} = {fmt(p.reward.amount)} tokens")
    if p.action == "pay" and p.cut:
        print(f"  capped: {p.cut} -> pays {fmt(p.amount)} tokens")
    if p.action == "paid" and p.standing is not None:
        print(f"  already paid {fmt(p.standing.amount)} to {p.standing.agent} at {p.standing.ts}:"
              " closing again pays nothing")
    elif payee.agent:
        print(f"  -> {payee.agent} (from {payee.source} {payee.detail})")
    else:
        print(f"  -> nobody: {payee.detail}")


def _at_stake(p: Any) -> Units:
    """What closing pays: the plan's amount (caps applied) when it would pay, else the reward's figure."""
    if p.action == "pay":
        return int(p.amount)
    return p.reward.amount if p.reward is not None else 0


@app.command("preview-all")
def preview_all(jsonl: JsonlOpt = None, as_json: Json = False) -> None:
    """Every open issue with its reward, highest first, and the total at stake."""
    src = bdc.open_source(jsonl)
    cfg, ex = _exchange_or_defaults()
    issues = src.open_issues()
    view = _view(ex)
    payees: dict[str, Any] = {}  # the payee depends only on the assignee here (no --agent, no actor)
    rows = []
    for i in issues:
        payee = payees.get(i.assignee)
        if payee is None:
            payee = payees[i.assignee] = bdp.payee_for(cfg, i, None, None)
        p = pay.plan(cfg, i, payee, view, as_closed=True)
        assert p.reward is not None
        rows.append((i, p))
    rows.sort(key=lambda t: (-_at_stake(t[1]), t[0].priority_label, t[0].id))
    total = sum(_at_stake(p) for _i, p in rows if p.action != "paid")
    if as_json:
        items = []
        parts: dict[Any, dict[str, Any]] = {}  # equal rewards are shared by many issues: encode each once
        for i, p in rows:
            assert p.reward is not None
            part = parts.get(p.reward)
            if part is None:
                part = parts[p.reward] = bdi.reward_json(p.reward)
            d = bdi.issue_json(i, p.reward, part)
            d.update(agent=p.payee.agent, already_paid=p.action == "paid", pays=to_decimal(_at_stake(p)))
            items.append(d)
        out.emit_json({"issues": items, "count": len(items), "total": to_decimal(total), "source": src.name})
        return
    table_rows = [[i.id, i.priority_label, p.reward.issue_type if p.reward else i.issue_type, i.status,
                   fmt(_at_stake(p)) + (" (paid)" if p.action == "paid" else " (capped)" if p.cut else ""),
                   p.payee.agent or "-", i.title[:60]] for i, p in rows]
    cols = ["Issue", "Pri", "Type", "Status", "Reward", "Agent", "Title"]
    if sys.stdout.isatty() and len(table_rows) <= 2000:
        out.table("Open issues", cols, table_rows, right=["Reward"])
    else:
        _plain_rows(cols, table_rows, {"Reward"})
    print(f"{len(rows)} open issues, {fmt(total)} tokens at stake")


@app.command()
def close(issues: Annotated[list[str], typer.Argument(help="Issue ids to close.")],
          reason: Annotated[str | None, typer.Option("--reason", "-r", help="Close reason.")] = None,
          agent: AgentOpt = None, actor: ActorOpt = None, as_json: Json = False) -> None:
    """Close issues through `bd close --json`, then pay each issue bd actually closed (and only those)."""
    ex = _exchange()
    cfg = ex.cfg
    src = bdc.open_source(need_bd=True, cwd=Path.cwd(), actor=actor)
    assert src.client is not None
    if agent:
        cfg.agent(agent)
    who = _actor(actor)
    from token_exchange.rules.identities import agent_for

    if not (agent or agent_for(cfg, who.name)):  # make sure every issue has a payee BEFORE closing anything
        for ident in issues:
            try:
                i = src.client.show(ident)
            except UserError as e:
                raise UserError(f"{ident[:60]}: {e}; nothing closed, nothing paid") from None
            p = bdp.payee_for(cfg, i, agent, who)
            if p.agent is None and i.is_work:
                raise UserError(f"nobody to pay for {i.id} ({p.detail}): pass --agent or set BD_ACTOR;"
                                f" nothing closed, nothing paid")
    returned, stderr, error = src.client.close(issues, reason, {bdc.CLOSING_ENV: "1"})
    mine, extra = bdc.answered(issues, returned)
    still_open = [i for i in mine if i.status != "closed"]
    closed = [i for i in mine if i.status == "closed"]
    refused = bdc.refusals(issues, mine, stderr, error) + [
        (i.id, f"bd answered with it {i.status}, not closed") for i in still_open]
    try:
        outcomes = pay.apply(ex, [(i, bdp.payee_for(cfg, i, agent, who)) for i in closed], _project(cfg), "close")
    except UserError as e:
        raise UserError(f"bd closed {', '.join(i.id for i in closed)} but it cannot be paid: {e};"
                        f" fix it, then run `tx-bd sync`") from None
    work = [o for o in outcomes if o.action != "not-work"]
    unpaid = [o for o in work if o.action == "unpaid"]
    if as_json:
        out.emit_json({"closed": [o.to_json() for o in work],
                       "not_work": [o.issue.id for o in outcomes if o.action == "not-work"],
                       "refused": [{"id": r, "reason": why} for r, why in refused],
                       "unpaid": [{"id": o.issue.id, "reason": "no agent to pay"} for o in unpaid],
                       "ignored": [i.id for i in extra],
                       "total_paid": to_decimal(sum(o.plan.amount for o in work if o.created))})
    else:
        for o in outcomes:
            if o.action != "unpaid":
                out.message("tx-bd: " + (o.line() if o.action != "not-work" else
                                         f"{o.issue.id}: closed; {o.issue.not_work} is not work, nothing paid"))
    for o in unpaid:
        out.message(f"tx-bd: {o.issue.id}: closed but not paid: no agent to pay; run `tx-bd sync --agent A`")
    for ident, why in refused:
        out.message(f"tx-bd: {ident}: bd did not close it: {why}; not paid")
    for i in extra:
        out.message(f"tx-bd: {i.id}: bd returned it but it was not asked for; not paid here"
                    " (`tx-bd sync` pays real closes)")
    if refused or unpaid:
        raise typer.Exit(1)


@app.command()
def sync(agent: AgentOpt = None, actor: ActorOpt = None, jsonl: JsonlOpt = None,
         verbose: Annotated[bool, typer.Option("--verbose", "-v", help="One line per issue paid, reversed or"
                                               " left unpaid.")] = False,
         as_json: Json = False) -> None:
    """Pay every closed issue not paid yet (plain `bd close`, elsewhere, or missed by a hook); reverse the
    payment of an issue reopened after it was paid.  Quiet: one summary line (--verbose lists)."""
    ex = _exchange()
    cfg = ex.cfg
    if agent:
        cfg.agent(agent)
    src = bdc.open_source(jsonl, actor=actor)
    issues = src.all_issues()  # every record validated before anything is paid
    warning = _stale_export(src) if src.jsonl is not None else ""
    who = _actor(actor)
    view = _view(ex)
    closed = [i for i in issues if i.status == "closed"]
    work = [i for i in closed if i.is_work]
    standing = {i.id for i in issues if view.standing(i.id) is not None}
    todo = [i for i in work if i.id not in standing] + [i for i in issues if i.status != "closed" and i.id in standing]
    outcomes = pay.apply(ex, [(i, bdp.payee_for(cfg, i, agent, who)) for i in todo], _project(cfg), "sync") \
        if todo else []
    new = [o for o in outcomes if o.action == "pay" and o.created]
    reversed_ = [o for o in outcomes if o.action == "reverse" and o.created]
    unpaid = [o for o in outcomes if o.action == "unpaid"]
    kept = [o for o in outcomes if o.action == "reverse" and o.note]
    total = sum(o.plan.amount for o in new)
    already = len([i for i in work if i.id in standing])
    if warning:
        out.message("tx-bd: warning: " + warning)
    if as_json:
        out.emit_json({"paid": [o.to_json() for o in new], "already_paid": already,
                       "unpaid": [{"id": o.issue.id, "reward": to_decimal(o.plan.reward.amount if o.plan.reward
                                                                           else 0),
                                   "reason": o.plan.payee.detail} for o in unpaid],
                       "reversed": [o.to_json() for o in reversed_ + kept],
                       "not_work": len(closed) - len(work), "total_paid": to_decimal(total), "source": src.name,
                       **({"warning": warning} if warning else {})})
        return
    if verbose:
        for o in new + reversed_ + kept:
            out.message("tx-bd: " + o.line())
        for o in unpaid:
            out.message(f"tx-bd: {o.issue.id}: not paid ({o.plan.payee.detail}); assign it to an agent or pass"
                        " --agent")
    extras = "".join([f", {len(reversed_)} reopened and reversed" if reversed_ else "",
                      f", {len(kept)} reopened but not reversible" if kept else ""])
    hint = " (--verbose lists them)" if unpaid and not verbose else ""
    out.message(f"tx-bd: synced {len(closed)} closed issues from {src.name}: paid {len(new)} ({fmt(total)} tokens),"
                f" {already} already paid, {len(unpaid)} without an agent{hint}{extras}")


@app.command("install-hook")
def install_hook(force: Annotated[bool, typer.Option("--force", help="Replace existing hooks that are not ours.")
                                  ] = False,
                 pre_write: Annotated[bool, typer.Option("--pre-write", help="Also install bd's synchronous"
                                                         " pre_write hook: refuse a claim by an agent below its"
                                                         " reserve.")] = False,
                 as_json: Json = False) -> None:
    """Write on_close and on_update into bd's hooks dir, so `bd close` and `bd update --status closed` pay at once."""
    found = workspace.resolve(Path.cwd())
    if found is None or not found.path.is_dir():
        raise UserError("no beads directory here (run `bd init` first, or set BEADS_DIR)")
    repo = _repo()
    home = Path(state.home).absolute() if state.home else None
    scripts = {f"on_{e}": bdhooks.event_script(e, repo, home, bdc.CLOSING_ENV) for e in bdhooks.EVENTS}
    if pre_write:
        from token_exchange.services.home import find_home

        gate_home = home or find_home(None, Path.cwd())
        if not (gate_home / "config.toml").exists():
            raise UserError(f"no exchange at {gate_home} (run `tx init`): the pre_write hook needs one")
        scripts[bdhooks.PRE_WRITE] = bdhooks.pre_write_script(repo, gate_home)
    for name in scripts:
        path = found.hooks / name
        if (path.exists() or path.is_symlink()) and not force and not bdhooks.is_ours(path):
            raise UserError(f"{path} exists and is not ours; pass --force to replace it (nothing installed)")
    for name, text in scripts.items():
        path = found.hooks / name
        if force and path.is_symlink():
            path.unlink()
        bdhooks.write_script(path, text)
    if as_json:
        out.emit_json({"hooks": [str(found.hooks / n) for n in scripts], "beads_dir": str(found.path),
                       "found_by": found.how, "repo": str(repo)})
    else:
        out.message(f"tx-bd: installed {', '.join(scripts)} in {found.hooks} (bd's beads dir, from {found.how});"
                    " bd fires on_close/on_update asynchronously, so also run `tx-bd sync` from cron/CI")


@app.command(hidden=True)
def hook(issue: Annotated[str, typer.Argument(help="Issue id bd passes to the hook.")],
         event: Annotated[str, typer.Argument(help="Hook event bd passes (close, update).")] = "close",
         as_json: Json = False) -> None:
    """Called by bd as `on_close <id> close` / `on_update <id> update` with the issue JSON on stdin: pay a
    close at once (or reverse the payment of a reopened issue)."""
    if event not in bdhooks.EVENTS or os.environ.get(bdc.CLOSING_ENV) == "1":
        return
    i = bdhooks.issue_from_hook(issue, _stdin(bdi.MAX_LINE + 1))
    if i is None:
        src = bdc.open_source(need_bd=True)
        assert src.client is not None
        i = src.client.show(issue)
    if i.ephemeral:
        return  # wisps are never paid (nor reversed)
    ex = _exchange()
    payee = bdp.payee_for(ex.cfg, i, os.environ.get(AGENT_ENV) or None, _actor(None))
    (o,) = pay.apply(ex, [(i, payee)], _project(ex.cfg), "hook")
    if o.action == "unpaid":
        raise UserError(f"nobody to pay for {i.id} ({payee.detail}); `tx-bd sync --agent A` can pay it later")
    if o.action in ("open", "not-work"):
        if event == "close" and o.action == "open":
            out.message(f"tx-bd: {i.id} is {i.status}, not closed; nothing paid")
        return
    if as_json:
        out.emit_json(o.to_json())
    else:
        out.message("tx-bd: " + o.line())


@app.command("pre-write", hidden=True)
def pre_write_hook(as_json: Json = False) -> None:
    """Called by bd as `pre_write` before a write: answer {"allow": ...}; refuse only a claim by an agent
    whose balance is below its reserve.  Always answers, in JSON (our own trouble allows the write and
    says why on stderr)."""
    allow, reason = True, ""
    try:
        req = bdhooks.parse_pre_write(_stdin(bdhooks.MAX_PRE_WRITE_REQUEST + 1))
        if bdhooks.is_claim(req.operation):
            allow, reason = _claim_allowed(req)
    except (UserError, OSError) as e:
        out.message(f"tx-bd: pre_write: {e}; allowing the write")
    sys.stdout.write(bdhooks.answer(allow, reason) + "\n")


def _claim_allowed(req: bdhooks.PreWriteRequest) -> tuple[bool, str]:
    from token_exchange.rules.identities import agent_for

    beads_dir = Path(req.beads_dir) if req.beads_dir else None
    cwd = Path(req.root) if req.root and Path(req.root).is_dir() else Path.cwd()
    who = bdp.bd_actor(beads_dir, cwd=cwd)
    ex = _exchange()
    name = agent_for(ex.cfg, who.name)
    if name is None:
        return True, ""
    balance = ex.balance(name).balance
    reserve = ex.cfg.agents[name].limits.reserve
    if balance < reserve:
        return False, (f"{name} (bd actor, from {who.source}) has {fmt(balance)} tokens, below its reserve of"
                       f" {fmt(reserve)}: it cannot take new work until it earns or is given tokens")
    return True, ""


def run(argv: list[str] | None = None) -> int:
    state.reset()
    return out.run_app(app, "tx-bd", list(sys.argv[1:] if argv is None else argv), state)


def main() -> None:
    raise SystemExit(run())


if __name__ == "__main__":
    main()
