"""``tx simulate``, ``tx plot`` and ``tx dashboard`` (registered on the main `tx` app)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from token_exchange.amounts import fmt
from token_exchange.cli import output as out
from token_exchange.cli.common import Json  # noqa: E402
from token_exchange.errors import UserError

TABLE_AGENTS = 30
# What to do after the demo: the exchange in a real repository.  Every line is a real command (run by
# tests/test_sim_next.py in a fresh git repository, in this order); "#" starts a comment.
NEXT_STEPS = (
    "next: put the exchange in a real repository (run these inside it)",
    "  tx init             # .exchange/config.toml with these rules: commit it",
    "  tx hooks install    # from now on every commit pays its author's agent",
    '  git commit --allow-empty -m "fix: parser" --author "claude <claude@example.com>"',
    "  tx balance          # claude has earned 225 = 150 base x 1.0 (default contract) x 1.5 (fix)",
)


def _progress(enabled: bool, total: int, console: Any = None):  # type: ignore[no-untyped-def]
    """A rich progress bar of ``total`` simulated hours on stderr (only on a terminal; ``console``: another
    one); returns (callback, closer)."""
    if not enabled or (console is None and not sys.stderr.isatty()):
        return None, lambda: None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    prog = Progress(TextColumn("simulating"), BarColumn(), TextColumn("{task.completed}/{task.total} h"),
                    TimeRemainingColumn(), console=console or Console(stderr=True), transient=True)
    prog.start()
    task = prog.add_task("sim", total=total)

    def update(done: int, total: int) -> None:
        if done == 1 or done == total or done % 24 == 0:
            prog.update(task, completed=done, total=total)

    return update, prog.stop


def _check_plot_target(path: Path | None) -> None:
    if path is None:
        return
    from token_exchange.viz.plot import _matplotlib

    _matplotlib()
    if path.suffix.lower() != ".png":
        raise UserError(f"{path.name}: the plot is a PNG; give a FILE.png")


def run_simulation(hours: int, seed: int, agents: Optional[int], config: Optional[Path], out_dir: Optional[Path],
                   show_progress: bool, summary: bool = False) -> tuple[Any, Any]:
    from token_exchange.sim.run import Simulation

    sim = Simulation(hours, seed, agents, config, out_dir, summary=summary)
    update, stop = _progress(show_progress, hours)
    sim.progress = update
    try:
        result = sim.run()
    finally:
        stop()
    return sim, result


def print_result(r: Any) -> None:
    """The seed's tables, with rich."""
    data = r.to_json()
    agents = data["balances"]
    title = f"Final balances ({r.hours} h, seed {r.seed}, {len(agents)} agents)"
    cols = ["Agent", "Start", "Earned", "Spent", "Pooled", "Final", "Net"]
    num = cols[1:]
    if len(agents) <= TABLE_AGENTS:
        rows = [(b["agent"], fmt(r.balances[b["agent"]]["start"]), fmt(r.balances[b["agent"]]["earned"]),
                 fmt(r.balances[b["agent"]]["spent"]), fmt(r.balances[b["agent"]]["pooled"]),
                 fmt(r.balances[b["agent"]]["final"]), _signed(r.balances[b["agent"]]["net"])) for b in agents]
        out.table(title, cols, rows, right=num)
    else:
        groups: dict[str, dict[str, int]] = {}
        for a in r.agents:
            g = groups.setdefault(r.templates.get(a, a), {"n": 0, "start": 0, "earned": 0, "spent": 0,
                                                           "pooled": 0, "final": 0, "net": 0, "negative": 0})
            g["n"] += 1
            for k in ("start", "earned", "spent", "pooled", "final", "net"):
                g[k] += r.balances[a][k]
            g["negative"] += r.balances[a]["net"] < 0
        out.table(title + ": totals by strategy", ["Strategy", "Agents", *num, "Net < 0"],
                  [(k, g["n"], fmt(g["start"]), fmt(g["earned"]), fmt(g["spent"]), fmt(g["pooled"]),
                    fmt(g["final"]), _signed(g["net"]), g["negative"]) for k, g in groups.items()],
                  right=["Agents", *num, "Net < 0"])
    usage = data["model_usage"][:TABLE_AGENTS]
    out.table("Model usage patterns", ["Agent", "Preferred models", "Models used (requests)", "Daily spend",
                                       "Strategy"],
              [(u["agent"], u["preferred_models"],
                ", ".join(f"{m} ({v['requests']})" for m, v in u["models"].items()) or "-",
                f"~{u['daily_spend']}", u["strategy"]) for u in usage], right=["Daily spend"])
    counts = data["limit_events"]["counts"]
    kinds = ["burst", "hourly", "daily", "reserve", "balance"]
    rows = [(a, *(c[k] for k in kinds)) for a, c in list(counts.items())[:TABLE_AGENTS] if any(c.values())]
    out.table(f"Rate-limit events ({data['limit_events']['total']} refusals)", ["Agent", *kinds], rows, right=kinds)
    for line in data["limit_events"]["log"][:8]:
        print(line)
    out.table("Hourly activity (hour of day, summed over days)", ["Hour", "Commits", "Requests", "Refusals",
                                                                  "Earned", "Spent"],
              [(f"{h['hour']:02d}", h["commits"], h["requests"], h["refusals"], h["earned"], h["spent"])
               for h in data["hourly"]], right=["Commits", "Requests", "Refusals", "Earned", "Spent"])
    out.table("Time-of-day effects", ["Hours", "Commits", "Requests", "Refusals", "Pattern"],
              [(b["hours"], b["commits"], b["requests"], b["refusals"], b["note"]) for b in data["bands"]],
              right=["Commits", "Requests", "Refusals"])
    f = data["findings"]
    print("Findings:")
    print(f"  ending net negative: {', '.join(f['net_negative']) or 'nobody'}"
          f"{' (only claude, as in the seed)' if f['only_claude_negative'] else ''}")
    print(f"  claude hit burst limits: {'yes' if f['claude_hits_burst'] else 'no'}, "
          f"hourly limits: {'yes' if f['claude_hits_hourly'] else 'no'}")
    print(f"  spends least: {f['least_spender']}")
    print(f"  reserve breaches: {', '.join(f['reserve_breaches']) or 'none'}")
    if data["pools"]:
        print(f"  pool jobs: {len(data['pools'])} ({sum(1 for p in data['pools'] if p['outcome'] == 'spent')} "
              "funded)")


def _signed(units: int) -> str:
    return f"+{fmt(units)}" if units > 0 else fmt(units)


def register(app: typer.Typer) -> None:
    """Add `tx simulate`, `tx plot` and `tx dashboard`."""

    @app.command()
    def simulate(hours: Annotated[int, typer.Option(min=1, help="Simulated hours.")] = 24,
                 seed: Annotated[int, typer.Option(help="Random seed (same seed, same result).")] = 1,
                 agents: Annotated[Optional[int], typer.Option(min=1, help="Number of agents (the config's "
                                                               "agents, then generated ones cycling them).")] = None,
                 config: Annotated[Optional[Path], typer.Option(help="Config file (default: the seed's).")] = None,
                 out_dir: Annotated[Optional[Path], typer.Option("--out", help="Keep the simulated exchange in "
                                                                 "this new/empty directory.")] = None,
                 plot: Annotated[Optional[Path], typer.Option(help="Also draw FILE.png (matplotlib).")] = None,
                 as_json: Json = False) -> None:
        """Simulate the seed's economy in a throwaway exchange (never your ledger) with a simulated clock."""
        _check_plot_target(plot)
        sim, result = run_simulation(hours, seed, agents, config, out_dir, not as_json, plot is not None)
        if plot is not None:
            from token_exchange.viz.plot import plot_summary

            plot_summary(sim.summary, plot, f"tx simulate: {hours} h, seed {seed}",
                         reserve=sim.cfg.limits.reserve)
        if as_json:
            data = result.to_json()
            data["plot"] = str(plot) if plot else None
            out.emit_json(data)
            return
        print_result(result)
        if out_dir is not None:
            out.message(f"simulated exchange kept at {result.home} (try: tx --home {result.home} balance)")
        if plot is not None:
            out.message(f"wrote {plot}")
        print()
        print("\n".join(NEXT_STEPS))

    @app.command("plot")
    def plot_cmd(file: Annotated[Path, typer.Argument(help="PNG to write.")], as_json: Json = False) -> None:
        """Draw this exchange's ledger: balances over time, earnings by source, spend by model (PNG)."""
        from token_exchange.cli import common as cli
        from token_exchange.viz.plot import plot_summary
        from token_exchange.viz.summary import collect

        _check_plot_target(file)
        ex = cli.exchange()
        s = collect(ex.ledger.fresh(), list(ex.cfg.agents))
        plot_summary(s, file, f"token-exchange: {ex.home}", reserve=ex.cfg.limits.reserve)
        if as_json:
            out.emit_json({"plot": str(file), "transactions": s.transactions, "agents": len(s.agents)})
        else:
            out.message(f"wrote {file} ({s.transactions} transactions, {len(s.agents)} agents)")

    @app.command()
    def dashboard(out_file: Annotated[Path, typer.Option("--out", help="HTML file to write.")],
                  simulate_: Annotated[bool, typer.Option("--simulate", help="Show a fresh simulation instead "
                                                          "of this exchange's ledger.")] = False,
                  hours: Annotated[int, typer.Option(min=1, help="With --simulate: simulated hours.")] = 24,
                  seed: Annotated[int, typer.Option(help="With --simulate: random seed.")] = 1,
                  as_json: Json = False) -> None:
        """Write one self-contained HTML page (inline SVG, no scripts, no network) about a ledger."""
        from token_exchange.storage import atomic_write
        from token_exchange.viz.dashboard import render_html
        from token_exchange.viz.summary import collect

        if out_file.parent and not out_file.parent.exists():
            raise UserError(f"directory {out_file.parent} does not exist")
        if simulate_:
            sim, result = run_simulation(hours, seed, None, None, None, not as_json, True)
            s = sim.summary
            data = result.to_json()
            limits = {"counts": {a: {k: v for k, v in c.items() if v} for a, c in
                                 data["limit_events"]["counts"].items()},
                      "log": data["limit_events"]["log"],
                      "note": f"{data['limit_events']['total']} refusals in the simulation."}
            page = render_html(s, title="token-exchange simulation", subtitle=f"{hours} h, seed {seed}",
                               limits=limits, reserve=sim.cfg.limits.reserve,
                               extra_sections=[("hourly", "Hourly activity", _hourly_html(data))])
        else:
            from token_exchange.cli import common as cli

            ex = cli.exchange()
            s = collect(ex.ledger.fresh(), list(ex.cfg.agents))
            page = render_html(s, subtitle=str(ex.home), limits=_ledger_limits(ex, s.agents),
                               reserve=ex.cfg.limits.reserve)
        atomic_write(out_file, page.encode("utf-8"))
        if as_json:
            out.emit_json({"out": str(out_file), "bytes": len(page.encode("utf-8")), "transactions": s.transactions,
                           "agents": len(s.agents), "simulated": simulate_, **s.to_json()})
        else:
            out.message(f"wrote {out_file} ({s.transactions} transactions, {len(s.agents)} agents)")


def _hourly_html(data: dict[str, Any]) -> str:
    from token_exchange.viz.dashboard import _table

    return _table(["Hour", "Commits", "Requests", "Refusals", "Earned", "Spent"],
                  [(f"{h['hour']:02d}", h["commits"], h["requests"], h["refusals"], h["earned"], h["spent"])
                   for h in data["hourly"]], ["Commits", "Requests", "Refusals", "Earned", "Spent"])


def _ledger_limits(ex: Any, agents: list[str]) -> dict[str, Any]:
    """Refusals are not transactions, so for a real ledger show each agent's limit usage now."""
    from token_exchange.amounts import fmt
    from token_exchange.rules import limits as limits_mod

    idx = ex.ledger.fresh()
    now = limits_mod.micros(ex.clock())
    rows = []
    for a in agents:
        if a not in ex.cfg.agents:
            continue
        lim = ex.cfg.agents[a].limits
        u = limits_mod.usage(idx, a, now)
        rows.append((a, f"{fmt(u.hourly)} / {fmt(lim.hourly)}", f"{fmt(u.daily)} / {fmt(lim.daily)}", fmt(u.held),
                     fmt(max(0, u.balance - lim.reserve)), fmt(limits_mod.available(lim, u))))
    return {"usage": rows, "note": "Refusals are not ledger transactions; `tx simulate` and `tx dashboard "
                                   "--simulate` show limit events. Windows are rolling (last 60 min / 24 h)."}
