"""Spending as the agents do it: an adapter over the real engine (llm, limits, pools).

Nothing here decides whether a spend is allowed; the engine's refusals (``LimitRefused``) are turned into
outcomes with a kind (burst, hourly, daily, reserve, balance) and the engine's own message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from token_exchange.amounts import SCALE, Units, to_decimal
from token_exchange.errors import UserError
from token_exchange.rules.limits import LimitRefused
from token_exchange.services import pools
from token_exchange.services import spending as llm
from token_exchange.services.exchange import Exchange

POOL_MIN = 50 * 10_000  # units: a pool job's minimum contribution (50 tokens)


@dataclass
class SpendOutcome:
    ok: bool
    model: str
    cost: Units
    kind: str = ""       # refusal kind: burst | hourly | daily | reserve | balance | other
    message: str = ""
    cap: Units = 0       # the refusing limit (burst: the largest single spend allowed)
    frees_at_us: int | None = None  # hourly/daily: when the engine says enough capacity frees up


@dataclass
class PoolJob:
    pool: str
    lead: str
    model: str
    tokens: int
    contributions: dict[str, Units] = field(default_factory=dict)
    refusals: list[tuple[str, SpendOutcome]] = field(default_factory=list)
    spent: Units = 0
    refunded: Units = 0
    outcome: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"pool": self.pool, "lead": self.lead, "model": self.model, "tokens": self.tokens,
                "contributions": {a: to_decimal(v) for a, v in self.contributions.items()},
                "refused": [{"agent": a, "kind": r.kind, "message": r.message} for a, r in self.refusals],
                "spent": to_decimal(self.spent), "refunded": to_decimal(self.refunded), "outcome": self.outcome}


REFUSAL_KINDS = {"burst": "burst", "hourly": "hourly", "daily": "daily", "reserve": "reserve", "funds": "balance"}


def refusal_outcome(e: Any, model: str) -> SpendOutcome:
    """A ``limits.LimitRefused`` as an outcome: kind, and the engine's own message (first clause)."""
    r = e.refusal
    return SpendOutcome(False, model, r.amount, REFUSAL_KINDS.get(r.limit, "other"), r.message, r.cap,
                        e.frees_at_us)


class Spending:
    """Calls the real spending engine; turns its refusals into (kind, message) limit events."""

    def __init__(self, ex: Exchange) -> None:
        self.ex = ex

    def llm(self, agent: str, task: str, tokens: int, model: str | None, id: str) -> SpendOutcome:
        name = model or self.ex.cfg.agents[agent].model_for(task)
        try:
            res = llm.spend(self.ex, agent, task, tokens, model=name, id=id)
        except LimitRefused as e:
            return refusal_outcome(e, name)
        return SpendOutcome(True, name, res.cost)

    def pool_job(self, id: str, lead: str, members: list[str], model: str, tokens: int,
                 description: str) -> PoolJob:
        """Create a pool, members join and chip in equal shares (under their own limits), the pool pays
        for the job if the shares cover it, then the pool is dissolved (unspent stakes refunded)."""
        ex = self.ex
        name = id.lower()
        job = PoolJob(name, lead, model, tokens)
        cost = llm.cost(ex.cfg.model(model), tokens)
        share = -(-cost // len(members) // SCALE) * SCALE  # equal shares, whole tokens, rounded up
        pools.create(ex, name, lead, POOL_MIN)
        for a in members[1:]:
            pools.join(ex, name, a)
        for i, a in enumerate(members):
            try:
                c = pools.contribute(ex, name, a, share, id=f"{id}-c{i}")
                job.contributions[a] = c.txn.amount
            except LimitRefused as e:
                job.refusals.append((a, refusal_outcome(e, model)))
            except UserError as e:  # pragma: no cover - e.g. below the pool minimum
                job.refusals.append((a, SpendOutcome(False, model, share, "other", str(e))))
        funded = sum(job.contributions.values())
        payers = [a for a in members if a in job.contributions]
        if funded < cost and payers:  # one top-up round: those who could pay cover the gap
            extra = -(-(cost - funded) // len(payers) // SCALE) * SCALE
            for i, a in enumerate(payers):
                try:
                    c = pools.contribute(ex, name, a, max(extra, POOL_MIN), id=f"{id}-t{i}")
                    job.contributions[a] += c.txn.amount
                except LimitRefused as e:
                    job.refusals.append((a, refusal_outcome(e, model)))
            funded = sum(job.contributions.values())
        if funded >= cost:
            res = pools.spend(ex, name, model, tokens, description, id=f"{id}-s", by=lead)
            job.spent = res.txn.amount
            job.outcome = "spent"
        else:
            job.outcome = "underfunded"
        job.refunded = sum(pools.dissolve(ex, name, by=lead).refunds.values())
        return job
