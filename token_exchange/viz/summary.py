"""The ledger folded once into a ``Summary``: what the dashboard (HTML) and ``plot.py`` (matplotlib) draw.

``collect(index)`` reads every transaction once, oldest first; amounts stay exact integer units until
they are drawn.  The palette and the chart agent cap are here because both pictures use them.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from token_exchange.amounts import Units, to_decimal
from token_exchange.ledger.protocols import Index
from token_exchange.ledger.timestamps import ts_micros
from token_exchange.ledger.txn import Txn, is_agent_account

MAX_SERIES_POINTS = 400
MAX_CHART_AGENTS = 12
PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#7f7f7f", "#393b79", "#637939")



@dataclass
class Summary:
    """Everything the pictures need, folded from the ledger in one pass (amounts in units)."""

    agents: list[str] = field(default_factory=list)
    start: dict[str, Units] = field(default_factory=lambda: defaultdict(int))
    earned: dict[str, Units] = field(default_factory=lambda: defaultdict(int))
    spent: dict[str, Units] = field(default_factory=lambda: defaultdict(int))
    pooled: dict[str, Units] = field(default_factory=lambda: defaultdict(int))
    final: dict[str, Units] = field(default_factory=lambda: defaultdict(int))
    by_source: dict[str, dict[str, Units]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    by_model: dict[str, dict[str, int]] = field(default_factory=dict)
    series: dict[str, list[tuple[int, Units]]] = field(default_factory=lambda: defaultdict(list))
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)
    recent: list[Txn] = field(default_factory=list)
    transactions: int = 0
    first_us: int = 0
    last_us: int = 0

    def net(self, agent: str) -> Units:
        return self.final[agent] - self.start[agent]

    def to_json(self) -> dict[str, Any]:
        return {
            "transactions": self.transactions,
            "agents": [{"agent": a, "start": to_decimal(self.start[a]), "earned": to_decimal(self.earned[a]),
                        "spent": to_decimal(self.spent[a]), "pooled": to_decimal(self.pooled[a]),
                        "final": to_decimal(self.final[a]), "net": to_decimal(self.net(a)),
                        "earned_by_source": {k: to_decimal(v) for k, v in sorted(self.by_source[a].items())}}
                       for a in self.agents],
            "spend_by_model": {m: {"spent": to_decimal(d["units"]), "tokens": d["tokens"], "requests": d["requests"]}
                               for m, d in sorted(self.by_model.items())},
            "pools": [{"pool": name, "balance": to_decimal(p["balance"]), "spent": to_decimal(p["spent"]),
                       "contributions": {a: to_decimal(v) for a, v in sorted(p["contributions"].items())},
                       "credits": {a: to_decimal(v) for a, v in sorted(p["credits"].items())}}
                      for name, p in sorted(self.pools.items())],
        }


def txn_model(t: Txn) -> str:
    """The model a spend was for, wherever the spending code recorded it."""
    for meta in (t.breakdown, t.source):
        m = meta.get("model")
        if isinstance(m, str) and m:
            return m
    return "(unknown)"


def txn_tokens(t: Txn) -> int:
    for meta in (t.breakdown, t.source):
        for key in ("tokens", "inference_tokens", "actual_tokens"):
            v = meta.get(key)
            if isinstance(v, int):
                return v
            if isinstance(v, str) and v.isdigit():
                return int(v)
    return 0


def earning_source(t: Txn) -> str:
    """Commit earnings by contract (the seed's project multipliers); other awards by source type."""
    if t.kind == "earn":
        return str(t.breakdown.get("contract") or "commit")
    return str(t.source.get("type") or t.kind)


def collect(index: Index, agents: Sequence[str] = (), recent: int = 40) -> Summary:
    """Fold every transaction once (oldest first) into a ``Summary``."""
    s = Summary()
    bal: dict[str, Units] = defaultdict(int)
    seen: dict[str, None] = dict.fromkeys(agents)
    last: deque[Txn] = deque(maxlen=recent)
    for t in index.iter_txns():
        s.transactions += 1
        ts = ts_micros(t.ts) if t.ts else 0
        if not s.first_us:
            s.first_us = ts
        s.last_us = max(s.last_us, ts)
        last.append(t)
        for acct, delta in ((t.payer, -t.amount), (t.payee, t.amount)):
            if is_agent_account(acct):
                seen.setdefault(acct, None)
                bal[acct] += delta
                s.series[acct].append((ts, bal[acct]))
            elif acct.startswith("pool:"):
                p = s.pools.setdefault(acct[5:], _new_pool())
                p["balance"] += delta
        k = t.kind
        if k == "open":
            s.start[t.payee] += t.amount
        elif k in ("earn", "award") and t.agent:
            s.earned[t.agent] += t.amount
            s.by_source[t.agent][earning_source(t)] += t.amount
        elif k in ("spend", "settle") and t.agent:
            s.spent[t.agent] += t.amount
            _add_model(s, txn_model(t), t.amount, txn_tokens(t))
        elif k == "contribute" and t.payer and is_agent_account(t.payer):
            s.pooled[t.payer] += t.amount
            if t.payee.startswith("pool:"):
                s.pools[t.payee[5:]]["contributions"][t.payer] += t.amount
        elif k == "refund" and is_agent_account(t.payee):
            s.pooled[t.payee] -= t.amount
            if t.payer.startswith("pool:"):
                s.pools[t.payer[5:]]["contributions"][t.payee] -= t.amount
        elif k == "credit" and t.agent:
            pool = str(t.source.get("pool") or "")
            if pool:
                s.pools.setdefault(pool, _new_pool())["credits"][t.agent] += t.amount
        elif k == "pool_spend":
            if t.payer.startswith("pool:"):
                s.pools[t.payer[5:]]["spent"] += t.amount
            _add_model(s, txn_model(t) + " (pool)", t.amount, txn_tokens(t))
    s.agents = list(seen)
    for a in s.agents:
        s.final[a] = bal[a]
    s.recent = list(reversed(last))
    return s


def _new_pool() -> dict[str, Any]:
    return {"balance": 0, "spent": 0, "contributions": defaultdict(int), "credits": defaultdict(int)}


def _add_model(s: Summary, model: str, units: Units, tokens: int) -> None:
    d = s.by_model.setdefault(model, {"units": 0, "tokens": 0, "requests": 0})
    d["units"] += units
    d["tokens"] += tokens
    d["requests"] += 1


def downsample(points: list[tuple[int, Units]], limit: int = MAX_SERIES_POINTS) -> list[tuple[int, Units]]:
    """At most ``limit`` points: the last point of each time bucket (keeps the final value exact)."""
    if len(points) <= limit:
        return points
    t0, t1 = points[0][0], points[-1][0]
    span = max(t1 - t0, 1)
    out: dict[int, tuple[int, Units]] = {}
    for p in points:
        out[min((p[0] - t0) * (limit - 1) // span, limit - 1)] = p
    return [out[k] for k in sorted(out)]
