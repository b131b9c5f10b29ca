"""What a run returns: balances, per-agent stats, limit events (the seed's log lines), findings, JSON."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from token_exchange.amounts import Units, to_decimal
from token_exchange.rules.config import Config
from token_exchange.sim.activity import BANDS, EPOCH, strategy_for

LIMIT_KINDS = ("burst", "hourly", "daily", "reserve")
LOG_LINES = 20
EVENTS_KEPT = 500


@dataclass
class LimitEvent:
    at: datetime
    agent: str
    kind: str          # burst | hourly | daily | reserve | balance | other
    message: str
    model: str
    tokens: int
    cost: Units
    pool: str = ""

    def clock(self, multi_day: bool) -> str:
        hms = self.at.strftime("%H:%M:%S")
        if multi_day:
            return f"day {(self.at - EPOCH).days + 1} {hms}"
        return hms

    def line(self, multi_day: bool = False) -> str:
        """The seed's log form: ``[23:51:34] WARN: Transaction exceeds burst limit (660.0 > 500)``."""
        text = self.message
        if text.startswith("Exceeds "):
            text = "Transaction exceeds " + text[len("Exceeds "):]
        who = f"{self.agent}, {self.model}" + (f", {self.tokens:,} tokens" if self.tokens else "")
        if self.pool:
            who += f", pool {self.pool}"
        return f"[{self.clock(multi_day)}] WARN: {text}  ({who})"

    def to_json(self) -> dict[str, Any]:
        return {"time": self.at.strftime("%Y-%m-%dT%H:%M:%SZ"), "agent": self.agent, "kind": self.kind,
                "message": self.message, "model": self.model, "tokens": self.tokens, "cost": to_decimal(self.cost),
                "pool": self.pool or None}


@dataclass
class AgentStats:
    requests: int = 0
    accepted: int = 0
    commits: int = 0
    min_balance: Units | None = None
    by_model: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0]))
    refusals: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    pool_jobs: int = 0
    pool_contributions: int = 0
    deferred: int = 0   # requests not sent: the agent was waiting for a limit to free up (or for income)


@dataclass
class SimResult:
    seed: int
    hours: int
    start: datetime
    agents: list[str]
    templates: dict[str, str]
    cfg: Config
    balances: dict[str, dict[str, Units]]
    stats: dict[str, AgentStats]
    hourly: list[dict[str, int]]
    events: list[LimitEvent]
    event_counts: dict[str, dict[str, int]]
    pools: list[dict[str, Any]]
    transactions: int
    home: Path | None = None

    def findings(self) -> dict[str, Any]:
        """The seed's key insights, checked on this run."""
        net = {a: self.balances[a]["net"] for a in self.agents}
        negative = sorted(a for a, v in net.items() if v < 0)
        spent = {a: self.balances[a]["spent"] + self.balances[a]["pooled"] for a in self.agents}
        least = min(self.agents, key=lambda a: (spent[a], a)) if self.agents else None
        lowest = {a: self.stats[a].min_balance for a in self.agents}
        breaches = sorted(a for a, low in lowest.items() if low is not None and low < self.cfg.agents[a].limits.reserve)
        c = self.event_counts.get("claude", {})
        return {"net_negative": negative, "only_claude_negative": negative == ["claude"],
                "claude_hits_burst": c.get("burst", 0) > 0, "claude_hits_hourly": c.get("hourly", 0) > 0,
                "least_spender": least, "zero_spends_least": least == "zero",
                "reserve_breaches": breaches, "no_reserve_breach": not breaches}

    def to_json(self) -> dict[str, Any]:
        multi = self.hours > 24
        d: dict[str, Any] = {
            "seed": self.seed, "hours": self.hours, "start": self.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "agents": len(self.agents), "transactions": self.transactions,
            "home": str(self.home) if self.home else None,
            "balances": [{"agent": a, "strategy": self.templates.get(a, a),
                          **{k: to_decimal(v) for k, v in self.balances[a].items()},
                          "min_balance": to_decimal(self.stats[a].min_balance or self.balances[a]["final"])}
                         for a in self.agents],
            "model_usage": [self._usage(a) for a in self.agents],
            "limit_events": {"counts": {a: {k: self.event_counts.get(a, {}).get(k, 0) for k in
                                            (*LIMIT_KINDS, "balance", "other")} for a in self.agents},
                             "total": sum(sum(c.values()) for c in self.event_counts.values()),
                             "log": [e.line(multi) for e in self.events[:LOG_LINES]],
                             "events": [e.to_json() for e in self.events[:EVENTS_KEPT]],
                             "events_truncated": len(self.events) > EVENTS_KEPT},
            "hourly": [{"hour": h, **{k: (to_decimal(v) if k in ("earned", "spent") else v)
                                      for k, v in row.items()}} for h, row in enumerate(self.hourly)],
            "bands": self.bands(),
            "pools": self.pools,
            "findings": self.findings(),
        }
        return d

    def _usage(self, a: str) -> dict[str, Any]:
        st = self.stats[a]
        strat = strategy_for(a, self.templates.get(a))
        spent = self.balances[a]["spent"]
        return {"agent": a, "strategy": strat.label, "preferred_models": strat.models,
                "requests": st.requests, "accepted": st.accepted, "commits": st.commits,
                "daily_spend": to_decimal(int(spent * 24 // max(self.hours, 1))),
                "models": {m: {"requests": v[0], "tokens": v[1], "spent": to_decimal(v[2])}
                           for m, v in sorted(st.by_model.items())},
                "deferred": st.deferred, "pool_jobs": st.pool_jobs, "pool_contributions": st.pool_contributions}

    def bands(self) -> list[dict[str, Any]]:
        out = []
        for label, hours, note in BANDS:
            rows = [self.hourly[h] for h in hours]
            out.append({"hours": label, "note": note, "commits": sum(r["commits"] for r in rows),
                        "requests": sum(r["requests"] for r in rows),
                        "refusals": sum(r["refusals"] for r in rows)})
        return out
