"""``tx plot`` / ``tx simulate --plot``: a PNG with matplotlib (the optional ``plot`` extra).

Three panels from the ledger summary (``summary.collect``): balances over time
per agent, earnings by source per agent, spend by model.  Floats appear only as
drawing coordinates here; every amount printed anywhere else stays exact.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from token_exchange.amounts import SCALE, Units
from token_exchange.errors import UserError
from token_exchange.viz.summary import MAX_CHART_AGENTS, PALETTE, Summary, downsample

MISSING = "plotting needs matplotlib: pip install 'token-exchange[plot]' (or pip install matplotlib)"


def _matplotlib():  # type: ignore[no-untyped-def]
    try:
        import matplotlib
    except ImportError:
        raise UserError(MISSING) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _tok(units: Units) -> float:
    return units / SCALE


def plot_summary(s: Summary, path: Path, title: str = "token-exchange", reserve: Units | None = None) -> Path:
    """Draw the three panels into ``path`` (PNG); returns the path."""
    plt = _matplotlib()
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UserError(f"{path.name}: the plot is a PNG; give a FILE.png")
    if path.parent and not path.parent.exists():
        raise UserError(f"directory {path.parent} does not exist")
    agents = s.agents[:MAX_CHART_AGENTS]
    fig, axes = plt.subplots(3, 1, figsize=(11, 13), gridspec_kw={"height_ratios": [3, 2, 2]})
    fig.suptitle(title, fontsize=14)

    ax = axes[0]
    for i, a in enumerate(agents):
        pts = downsample(s.series.get(a, []), 1000)
        if not pts:
            continue
        xs = [datetime.fromtimestamp(t / 1_000_000, UTC) for t, _ in pts]
        ax.step(xs, [_tok(u) for _, u in pts], where="post", color=PALETTE[i % len(PALETTE)], label=a, lw=1.6)
    if reserve is not None:
        ax.axhline(_tok(reserve), color="#c0392b", ls="--", lw=1, label="reserve")
    ax.set_title("Balances over time per agent")
    ax.set_ylabel("tokens")
    loc = AutoDateLocator()
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(loc))
    ax.grid(alpha=0.3)
    if agents:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9)
    if len(s.agents) > len(agents):
        ax.text(0.01, 0.02, f"{len(s.agents) - len(agents)} more agents not drawn", transform=ax.transAxes,
                fontsize=8, color="#666")

    ax = axes[1]
    sources = sorted({k for a in agents for k in s.by_source[a]})
    left = [0.0] * len(agents)
    for j, src in enumerate(sources):
        vals = [_tok(s.by_source[a].get(src, 0)) for a in agents]
        ax.barh(agents, vals, left=left, label=src, color=PALETTE[(j + 2) % len(PALETTE)])
        left = [x + v for x, v in zip(left, vals, strict=True)]
    ax.set_title("Earnings by source (contract or award type)")
    ax.set_xlabel("tokens")
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    if sources:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9)

    ax = axes[2]
    models = sorted(s.by_model.items(), key=lambda kv: -kv[1]["units"])
    names = [m for m, _ in models]
    vals = [_tok(d["units"]) for _, d in models]
    ax.barh(names, vals, color="#1f77b4")
    for y, v in enumerate(vals):
        ax.text(v, y, f" {v:,.1f}", va="center", fontsize=9)
    ax.set_title("Spend by model")
    ax.set_xlabel("tokens")
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    if not models:
        ax.text(0.5, 0.5, "no spending", transform=ax.transAxes, ha="center", color="#888")

    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
