"""``tx dashboard``: one self-contained HTML page from any ledger (or a simulation).

The page has no scripts and no external resources: inline CSS and inline SVG
charts only, so it opens offline, in a mail attachment or a CI artifact, and
cannot leak anything.  Every piece of agent-supplied text (names, projects,
descriptions, models) is HTML-escaped.  It draws the ``Summary`` that
``summary.collect`` folds from the ledger.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from token_exchange.amounts import SCALE, Units, fmt
from token_exchange.ledger.protocols import Index
from token_exchange.viz.summary import MAX_CHART_AGENTS, PALETTE, Summary, collect, downsample

MAX_POOL_ROWS = 50


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _tok(units: Units) -> float:
    """Units -> tokens as a float, for drawing coordinates only (never for amounts shown as text)."""
    return units / SCALE


def _when(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, UTC).strftime("%Y-%m-%d %H:%M")


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 1
    step = min((m * mag for m in (1, 2, 2.5, 5, 10)), key=lambda st: abs((hi - lo) / st - n))
    start = (lo // step) * step
    ticks = []
    v = start
    while v <= hi + step * 0.001:
        if v >= lo - step * 0.001:
            ticks.append(v)
        v += step
    return ticks


def _num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 10 or v == int(v) else f"{v:,.2f}"


def svg_lines(series: dict[str, list[tuple[int, Units]]], names: Sequence[str], width: int = 1100,
              height: int = 360, reserve: Units | None = None) -> str:
    """Balances over time: one polyline per agent, exact final values in the legend."""
    ml, mr, mt, mb = 70, 170, 16, 40
    pts = {a: downsample(series.get(a, [])) for a in names if series.get(a)}
    if not pts:
        return '<p class="empty">No balances to draw.</p>'
    xs = [p[0] for ps in pts.values() for p in ps]
    ys = [_tok(p[1]) for ps in pts.values() for p in ps]
    if reserve is not None:
        ys.append(_tok(reserve))
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.05 or 1
    y0, y1 = max(y0 - pad, 0) if y0 >= 0 else y0 - pad, y1 + pad
    pw, ph = width - ml - mr, height - mt - mb

    def X(t: int) -> float:
        return ml + (t - x0) / max(x1 - x0, 1) * pw

    def Y(v: float) -> float:
        return mt + ph - (v - y0) / (y1 - y0) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" role="img" aria-label="Balances over time per agent">']
    for v in _nice_ticks(y0, y1):
        y = Y(v)
        out.append(f'<line x1="{ml}" y1="{y:.1f}" x2="{ml + pw}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{ml - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_num(v)}</text>')
    for frac in (0, 0.25, 0.5, 0.75, 1):
        t = int(x0 + (x1 - x0) * frac)
        out.append(f'<text x="{X(t):.1f}" y="{height - 12}" class="tick" text-anchor="middle">{esc(_when(t))}'
                   '</text>')
    if reserve is not None:
        y = Y(_tok(reserve))
        out.append(f'<line x1="{ml}" y1="{y:.1f}" x2="{ml + pw}" y2="{y:.1f}" class="reserve"/>'
                   f'<text x="{ml + 4}" y="{y - 4:.1f}" class="tick">reserve {esc(fmt(reserve))}</text>')
    out.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" class="frame"/>')
    for i, (a, ps) in enumerate(pts.items()):
        color = PALETTE[i % len(PALETTE)]
        # step line: a balance holds until the next transaction
        coords = []
        prev_y = None
        for t, u in ps:
            x, y = X(t), Y(_tok(u))
            if prev_y is not None:
                coords.append(f"{x:.1f},{prev_y:.1f}")
            coords.append(f"{x:.1f},{y:.1f}")
            prev_y = y
        if prev_y is not None:
            coords.append(f"{ml + pw:.1f},{prev_y:.1f}")
        out.append(f'<polyline points="{" ".join(coords)}" fill="none" stroke="{color}" stroke-width="1.8">'
                   f'<title>{esc(a)}</title></polyline>')
        ly = mt + 14 + i * 20
        out.append(f'<rect x="{ml + pw + 14}" y="{ly - 9}" width="12" height="12" fill="{color}"/>'
                   f'<text x="{ml + pw + 32}" y="{ly + 1}" class="legend">{esc(a)} '
                   f'{esc(fmt(ps[-1][1]))}</text>')
    out.append("</svg>")
    return "".join(out)


def svg_bars(rows: Sequence[tuple[str, Sequence[Units]]], series_names: Sequence[str], colors: Sequence[str],
             width: int = 1100, label: str = "bars") -> str:
    """Horizontal grouped bars; each value labelled with its exact amount."""
    if not rows:
        return '<p class="empty">Nothing to draw.</p>'
    ml, mr, bar, gap = 160, 110, 14, 10
    group = bar * len(series_names) + gap
    height = 30 + group * len(rows) + 10
    vmax = max((v for _, vals in rows for v in vals), default=0) or 1
    pw = width - ml - mr
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" role="img" aria-label="{esc(label)}">']
    x = ml
    for name, color in zip(series_names, colors, strict=False):  # colours cycle past the last series
        out.append(f'<rect x="{x}" y="6" width="12" height="12" fill="{color}"/>'
                   f'<text x="{x + 17}" y="16" class="legend">{esc(name)}</text>')
        x += 30 + 9 * len(name)
    for i, (name, vals) in enumerate(rows):
        y = 30 + i * group
        out.append(f'<text x="{ml - 8}" y="{y + bar * len(vals) / 2 + 4:.1f}" class="label" '
                   f'text-anchor="end">{esc(name)}</text>')
        for j, v in enumerate(vals):
            w = max(v, 0) / vmax * pw
            out.append(f'<rect x="{ml}" y="{y + j * bar}" width="{w:.1f}" height="{bar - 2}" '
                       f'fill="{colors[j % len(colors)]}"><title>{esc(name)} {esc(series_names[j])}: '
                       f'{esc(fmt(v))}</title></rect>'
                       f'<text x="{ml + w + 5:.1f}" y="{y + j * bar + bar - 4}" class="value">{esc(fmt(v))}</text>')
    out.append("</svg>")
    return "".join(out)


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#666;font-size:13px}section{background:#fff;border:1px solid #e4e4e4;border-radius:6px;
padding:8px 16px 14px;
margin-bottom:18px}table{border-collapse:collapse;font-size:13px}th,td{padding:3px 10px;border-bottom:1px solid #eee;
text-align:left}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}.neg{color:#c0392b}.pos{color:#1e8449}
svg{max-width:100%;height:auto}.grid{stroke:#eee}.frame{fill:none;stroke:#bbb}.tick{font-size:11px;fill:#666}
.legend{font-size:12px;fill:#333}.label{font-size:12px;fill:#333}.value{font-size:11px;fill:#555}
.reserve{stroke:#c0392b;stroke-dasharray:4 3}.empty{color:#888;font-style:italic}
pre{background:#f4f4f4;padding:8px;font-size:12px;overflow-x:auto}.desc{max-width:420px;overflow:hidden;
text-overflow:ellipsis;white-space:nowrap}
"""


def _table(columns: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[str] = (),
           cls: dict[str, Any] | None = None) -> str:
    head = "".join(f'<th class="n">{esc(c)}</th>' if c in numeric else f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for c, v in zip(columns, row, strict=True):
            klass = ["n"] if c in numeric else []
            if c in ("Net",) and str(v).startswith("-"):
                klass.append("neg")
            elif c in ("Net",) and str(v) not in ("0", ""):
                klass.append("pos")
            if c == "Description":
                klass.append("desc")
            attr = f' class="{" ".join(klass)}"' if klass else ""
            cells.append(f"<td{attr}>{esc(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def signed(units: Units) -> str:
    return f"+{fmt(units)}" if units > 0 else fmt(units) if units == 0 else f"-{fmt(-units)}"


def render_html(s: Summary, *, title: str = "token-exchange dashboard", subtitle: str = "",
                limits: dict[str, Any] | None = None, reserve: Units | None = None,
                extra_sections: Sequence[tuple[str, str, str]] = ()) -> str:
    """The whole page.  ``limits``: {"counts": {agent: {kind: n}}, "log": [lines], "note": str}."""
    chart_agents = s.agents[:MAX_CHART_AGENTS]
    more = len(s.agents) - len(chart_agents)
    parts = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
             f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>',
             f"<h1>{esc(title)}</h1>"]
    span = f"{_when(s.first_us)} to {_when(s.last_us)} UTC" if s.transactions else "empty ledger"
    parts.append(f'<p class="meta">{esc(subtitle)}{" · " if subtitle else ""}{s.transactions} transactions, '
                 f'{len(s.agents)} agents, {esc(span)}</p>')

    # balances table + chart
    rows = [(a, fmt(s.start[a]), fmt(s.earned[a]), fmt(s.spent[a]), fmt(s.pooled[a]), fmt(s.final[a]),
             signed(s.net(a))) for a in s.agents]
    parts.append('<section id="balances"><h2>Final balances</h2>'
                 + _table(["Agent", "Start", "Earned", "Spent", "Pooled", "Final", "Net"], rows,
                          ["Start", "Earned", "Spent", "Pooled", "Final", "Net"])
                 + '<p class="meta">Spent: LLM charges. Pooled: contributions to team pools less refunds. '
                   'Final = Start + Earned - Spent - Pooled (+ transfers, if any).</p></section>')
    note = f'<p class="meta">{more} more agents not drawn.</p>' if more > 0 else ""
    parts.append('<section id="balances-over-time"><h2>Balances over time</h2>'
                 + svg_lines(s.series, chart_agents, reserve=reserve) + note + "</section>")
    bar_rows = [(a, (s.earned[a], s.spent[a] + max(s.pooled[a], 0))) for a in chart_agents]
    parts.append('<section id="earnings-vs-spending"><h2>Earnings vs spending per agent</h2>'
                 + svg_bars(bar_rows, ["earned", "spent (LLM + pooled)"], ["#2ca02c", "#d62728"],
                            label="Earnings vs spending per agent") + note + "</section>")
    sources = sorted({k for a in s.agents for k in s.by_source[a]})
    src_rows = [(a, *(fmt(s.by_source[a].get(k, 0)) for k in sources)) for a in s.agents[:200]]
    parts.append('<section id="earnings-by-source"><h2>Earnings by source</h2>'
                 + (_table(["Agent", *sources], src_rows, sources) if sources
                    else '<p class="empty">No earnings yet.</p>') + "</section>")
    models = sorted(s.by_model.items(), key=lambda kv: -kv[1]["units"])
    parts.append('<section id="spend-by-model"><h2>Spend by model</h2>'
                 + svg_bars([(m, (d["units"],)) for m, d in models], ["spent"], ["#1f77b4"],
                            label="Spend by model")
                 + _table(["Model", "Requests", "Inference tokens", "Spent"],
                          [(m, d["requests"], f"{d['tokens']:,}", fmt(d["units"])) for m, d in models],
                          ["Requests", "Inference tokens", "Spent"]) + "</section>")
    pool_rows = [(name, fmt(p["balance"]), fmt(p["spent"]),
                  ", ".join(f"{a} {fmt(v)}" for a, v in sorted(p["contributions"].items())),
                  ", ".join(f"{a} {fmt(v)}" for a, v in sorted(p["credits"].items())))
                 for name, p in sorted(s.pools.items())]
    shown = pool_rows[-MAX_POOL_ROWS:]
    pool_note = (f'<p class="meta">Last {len(shown)} of {len(pool_rows)} pools.</p>'
                 if len(shown) < len(pool_rows) else "")
    parts.append('<section id="pools"><h2>Pools</h2>'
                 + (_table(["Pool", "Balance", "Spent", "Contributions (net of refunds)", "Credit for pool spends"],
                           shown, ["Balance", "Spent"]) + pool_note
                    if pool_rows else '<p class="empty">No pools.</p>') + "</section>")
    parts.append('<section id="limit-events"><h2>Rate-limit events</h2>' + _limits_html(limits) + "</section>")
    for sid, heading, body in extra_sections:
        parts.append(f'<section id="{esc(sid)}"><h2>{esc(heading)}</h2>{body}</section>')
    recent_rows = [(t.ts[:19].replace("T", " "), t.kind, t.agent, t.payer, t.payee, fmt(t.amount), t.project,
                    t.description[:120]) for t in s.recent]
    parts.append('<section id="recent"><h2>Recent transactions</h2>'
                 + _table(["Time (UTC)", "Kind", "Agent", "From", "To", "Amount", "Project", "Description"],
                          recent_rows, ["Amount"]) + "</section>")
    parts.append('<p class="meta">Generated by token-exchange. Self-contained: no scripts, no external '
                 "resources.</p></body></html>")
    return "\n".join(parts)


KINDS_ORDER = ("burst", "hourly", "daily", "reserve", "balance", "other")


def _limits_html(limits: dict[str, Any] | None) -> str:
    if not limits:
        return ('<p class="empty">No limit events recorded: refusals are not transactions, so a ledger alone '
                "does not show them (run with --simulate to see a simulation's).</p>")
    counts: dict[str, dict[str, int]] | None = limits.get("counts")
    body = ""
    if counts is not None:
        kinds = [k for k in KINDS_ORDER if any(c.get(k) for c in counts.values())] or list(KINDS_ORDER[:4])
        rows = [(a, *(c.get(k, 0) for k in kinds), sum(c.values())) for a, c in counts.items() if any(c.values())]
        body = _table(["Agent", *kinds, "Total"], rows, [*kinds, "Total"]) if rows else \
            '<p class="empty">No refusals.</p>'
    log = limits.get("log") or []
    if log:
        body += "<pre>" + esc("\n".join(log)) + "</pre>"
    usage = limits.get("usage") or []
    if usage:
        body += "<h3>Limit usage now</h3>" + _table(
            ["Agent", "Hourly used", "Daily used", "Reserved", "Above reserve", "Available now"], usage,
            ["Hourly used", "Daily used", "Reserved", "Above reserve", "Available now"])
    if limits.get("note"):
        body += f'<p class="meta">{esc(limits["note"])}</p>'
    return body


def build(index: Index, agents: Sequence[str] = (), **kw: Any) -> tuple[str, Summary]:
    s = collect(index, agents)
    return render_html(s, **kw), s
