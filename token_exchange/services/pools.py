"""Team pools: agents put tokens together to afford what no single agent's limits allow.

Everything about a pool lives in the ledger, so it is derived, idempotent, and survives an index
rebuild (``tx doctor --repair``):

- metadata: zero-amount records of kind ``pool`` with ``ref = poolmeta:NAME`` and
  ``breakdown.action`` = create (with ``min``), join, leave, dissolve;
- money, all with ``ref = pool:NAME`` (summed per agent and kind in the index's ``pool_stats``):
  ``contribute`` agent -> ``pool:NAME``; ``pool_spend`` ``pool:NAME`` -> ``world:llm``;
  ``refund`` ``pool:NAME`` -> agent (leave, dissolve);
  ``credit`` ``world:credit`` -> ``world:credited`` with ``agent`` = the contributor: a *memo* entry
  (it moves no agent's or pool's money) that records each contributor's share of a pool spend, so
  ``tx balance`` shows it per agent (``by_kind.credit``).

Stakes: each contributor's stake is contributed - credited - refunded.  The stakes always sum to
the pool balance exactly.  A pool spend of C is split over the current stakes with the
largest-remainder rule (``amounts.split``: floor shares, leftover units one each to the largest
remainders, ties by agent name), so the credits sum to C and no stake goes negative.  Leaving
refunds the leaver's stake; dissolving refunds every stake (so refunds sum to the balance).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from token_exchange.amounts import Units, fmt, split, to_decimal, to_units
from token_exchange.errors import IdConflict, Refused, UserError
from token_exchange.ledger.protocols import Index
from token_exchange.ledger.timestamps import ts_text
from token_exchange.ledger.txn import LLM, Txn, make_txn
from token_exchange.rules.limits import enforce, micros
from token_exchange.services.exchange import Exchange
from token_exchange.services.spending import Price, _request_id, expire_due, parse_tokens

POOL_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
CREDIT_FROM = "world:credit"
CREDIT_TO = "world:credited"
DISSOLVED_TO = "world:pools"
CENT = Decimal("0.01")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not POOL_NAME.fullmatch(name):
        raise UserError(f"invalid pool name {str(name)[:40]!r} (1-64 of a-z 0-9 _ . - starting with a letter or digit)")
    return name


@dataclass
class PoolState:
    name: str
    creator: str
    min_contribution: Units
    created: str
    members: list[str]
    dissolved: bool
    balance: Units
    contributed: dict[str, Units] = field(default_factory=dict)
    credited: dict[str, Units] = field(default_factory=dict)
    refunded: dict[str, Units] = field(default_factory=dict)
    spent: Units = 0
    spends: int = 0
    meta_count: int = 0

    @property
    def account(self) -> str:
        return f"pool:{self.name}"

    def stakes(self) -> dict[str, Units]:
        agents = sorted(set(self.contributed) | set(self.credited) | set(self.refunded))
        return {a: self.contributed.get(a, 0) - self.credited.get(a, 0) - self.refunded.get(a, 0) for a in agents}

    def to_json(self) -> dict[str, Any]:
        stakes = self.stakes()
        total = sum(stakes.values())
        people = sorted(set(stakes) | set(self.members))
        return {"pool": self.name, "creator": self.creator, "min_contribution": to_decimal(self.min_contribution),
                "created": self.created, "members": self.members, "dissolved": self.dissolved,
                "balance": to_decimal(self.balance), "spent": to_decimal(self.spent), "spends": self.spends,
                "contributors": [{"agent": a, "member": a in self.members,
                                  "contributed": to_decimal(self.contributed.get(a, 0)),
                                  "credit": to_decimal(self.credited.get(a, 0)),
                                  "refunded": to_decimal(self.refunded.get(a, 0)),
                                  "stake": to_decimal(stakes.get(a, 0)),
                                  "share_percent": (Decimal(stakes.get(a, 0) * 100) / total).quantize(CENT)
                                  if total else Decimal(0)}
                                 for a in people]}


def load(idx: Index, name: str) -> PoolState | None:
    """A pool's state, derived from its metadata records and the indexed per-pool totals."""
    meta = [t for t in idx.by_ref(f"poolmeta:{name}") if t.kind == "pool"]
    if not meta:
        return None
    first = meta[0]
    st = PoolState(name, first.agent, int(first.breakdown.get("min", 0)), first.ts, [], False,
                   idx.account(f"pool:{name}"), meta_count=len(meta))
    for t in meta:
        action = t.breakdown.get("action")
        who = str(t.source.get("member", t.agent))
        if action in ("create", "join") and who not in st.members:
            st.members.append(who)
        elif action == "leave" and who in st.members:
            st.members.remove(who)
        elif action == "dissolve":
            st.dissolved = True
            st.members = []
    for (agent, kind), (total, count) in idx.pool_totals(f"pool:{name}").items():
        if kind == "contribute":
            st.contributed[agent] = total
        elif kind == "credit":
            st.credited[agent] = total
        elif kind == "refund":
            st.refunded[agent] = total
        elif kind == "pool_spend":
            st.spent += total
            st.spends += count
    return st


def _get(idx: Index, name: str) -> PoolState:
    st = load(idx, _check_name(name))
    if st is None:
        raise UserError(f"unknown pool {name!r}")
    return st


def _live(idx: Index, name: str) -> PoolState:
    st = _get(idx, name)
    if st.dissolved:
        raise UserError(f"pool {name} is dissolved")
    return st


def _meta(name: str, id_suffix: str, action: str, agent: str, ts: str, payer: str, payee: str,
          extra: dict[str, str | int] | None = None, description: str = "") -> Txn:
    return make_txn(f"pool:{name}:{id_suffix}", "pool", payer, payee, 0, agent=agent,
                    description=description or f"pool {name}: {action}",
                    source={"type": "pool", "pool": name, "member": agent} if agent else {"type": "pool", "pool": name},
                    breakdown={"action": action, **(extra or {})}, ref=f"poolmeta:{name}", ts=ts)


def _now(ex: Exchange) -> tuple[str, int]:
    moment = ex.clock()
    return ts_text(moment), micros(moment)


# --- operations ------------------------------------------------------------------------------
def create(ex: Exchange, name: str, creator: str, min_contribution: str | Units) -> tuple[PoolState, bool]:
    """Create a pool (the creator is its first member).  Same name, creator and minimum again: no-op."""
    _check_name(name)
    ex.cfg.agent(creator)
    minimum = min_contribution if isinstance(min_contribution, int) else \
        to_units(min_contribution, what="minimum contribution", allow_zero=True)
    with ex.ledger.locked() as idx:
        ex.ensure_open(idx, creator)
        existing = load(idx, name)
        if existing is not None:
            if existing.creator == creator and existing.min_contribution == minimum and not existing.dissolved:
                return existing, False
            if existing.dissolved:
                raise IdConflict(f"pool {name} existed and was dissolved; pick another name")
            raise IdConflict(f"pool {name} already exists (created by {existing.creator}, "
                             f"minimum {fmt(existing.min_contribution)})")
        ts, _ = _now(ex)
        ex.ledger.append(_meta(name, "create", "create", creator, ts, creator, f"pool:{name}",
                               {"min": minimum}, f"pool {name} created by {creator}"))
        return _get(idx, name), True


def join(ex: Exchange, name: str, agent: str) -> tuple[PoolState, bool]:
    ex.cfg.agent(agent)
    with ex.ledger.locked() as idx:
        st = _live(idx, name)
        if agent in st.members:
            return st, False
        ex.ensure_open(idx, agent)
        ts, _ = _now(ex)
        ex.ledger.append(_meta(name, f"join:{agent}:{st.meta_count}", "join", agent, ts, agent, f"pool:{name}",
                               description=f"{agent} joined pool {name}"))
        return _get(idx, name), True


@dataclass
class Contribution:
    txn: Txn
    created: bool
    pool: PoolState

    def to_json(self) -> dict[str, Any]:
        return {"id": self.txn.id, "pool": self.pool.name, "agent": self.txn.agent,
                "amount": to_decimal(self.txn.amount), "created": self.created,
                "pool_balance": to_decimal(self.pool.balance)}


def contribute(ex: Exchange, name: str, agent: str, amount: str | Units, *, id: str | None = None) -> Contribution:
    """Move tokens from a member's wallet into the pool, under the member's burst/reserve/window limits."""
    a = ex.cfg.agent(agent)
    units = amount if isinstance(amount, int) else to_units(amount, what="amount")
    if units <= 0:
        raise UserError("amount: must be greater than 0")
    rid = _request_id(id)
    with ex.ledger.locked() as idx:
        st = _live(idx, name)
        ts, now_us = _now(ex)
        txn = make_txn(f"pool:{name}:contribute:{rid}", "contribute", agent, f"pool:{name}", units, agent=agent,
                       description=f"contribution to pool {name}", source={"type": "pool", "pool": name,
                                                                           "request": rid},
                       ref=f"pool:{name}", ts=ts)
        old = idx.get(txn.id)
        if old is not None:
            if old.fingerprint() != txn.fingerprint():
                raise IdConflict(f"contribution id {rid} already used with different content")
            return Contribution(old, False, st)
        if agent not in st.members:
            raise UserError(f"{agent} is not a member of pool {name} (run `tx pool join {name} {agent}`)")
        if units < st.min_contribution:
            raise Refused(f"contribution {fmt(units)} is below pool {name}'s minimum {fmt(st.min_contribution)}")
        expire_due(ex, idx)
        enforce(idx, a.limits, agent, units, now_us)
        appended = ex.ledger.append(txn)
        return Contribution(appended.txn, True, _get(idx, name))


@dataclass
class PoolSpend:
    txn: Txn
    credits: dict[str, Units]
    created: bool
    pool: PoolState

    def to_json(self) -> dict[str, Any]:
        t = self.txn
        return {"id": t.id, "pool": self.pool.name, "model": t.source.get("model"), "tokens": t.source.get("tokens"),
                "cost": to_decimal(t.amount), "description": t.description, "created": self.created,
                "credits": {a: to_decimal(v) for a, v in sorted(self.credits.items())},
                "pool_balance": to_decimal(self.pool.balance)}


def spend(ex: Exchange, name: str, model: str, tokens: int | str, description: str, *,
          id: str | None = None, by: str | None = None, output_tokens: int | None = None) -> PoolSpend:
    """Spend pool tokens on a model call (limited by the pool balance only); credit contributors by stake."""
    n = parse_tokens(tokens)
    m = ex.cfg.model(model)
    if by is not None:
        ex.cfg.agent(by)
    price = Price.of(m)
    cost = price.cost(n, output_tokens)
    rid = _request_id(id)
    with ex.ledger.locked() as idx:
        st = _live(idx, name)
        ts, _ = _now(ex)
        source: dict[str, str | int] = {"type": "pool", "pool": name, "model": m.name, "tokens": n, "request": rid}
        if by:
            source["by"] = by
        txn = make_txn(f"pool:{name}:spend:{rid}", "pool_spend", f"pool:{name}", LLM, cost, agent="",
                       description=description or f"pool {name} on {m.name}", source=source,
                       breakdown={**price.breakdown(), "rule": "ceil(tokens/1000 x price)"}, ref=f"pool:{name}",
                       ts=ts)
        old = idx.get(txn.id)
        if old is not None:
            if old.fingerprint() != txn.fingerprint():
                raise IdConflict(f"pool spend id {rid} already used with different content")
            credits = {t.agent: t.amount for t in idx.by_ref(f"pool:{name}")
                       if t.kind == "credit" and t.id.startswith(txn.id + ":credit:")}
            return PoolSpend(old, credits, False, st)
        if by is not None and by not in st.members:
            raise UserError(f"{by} is not a member of pool {name}")
        if cost > st.balance:
            raise Refused(f"Insufficient pool funds (pool {name} has {fmt(st.balance)}, need {fmt(cost)})")
        stakes = st.stakes()
        credits = {a: v for a, v in split(cost, stakes).items() if v > 0}
        txns = [txn] + [make_txn(f"{txn.id}:credit:{a}", "credit", CREDIT_FROM, CREDIT_TO, v, agent=a,
                                 description=f"credit for pool {name} spend on {m.name}",
                                 source={"type": "pool-credit", "pool": name, "spend": txn.id},
                                 breakdown={"stake": stakes[a], "stakes_total": sum(stakes.values()),
                                            "rule": "largest remainder"},
                                 ref=f"pool:{name}", ts=ts) for a, v in sorted(credits.items())]
        ex.ledger.append_many(txns)
        return PoolSpend(txn, credits, True, _get(idx, name))


@dataclass
class Refunds:
    pool: PoolState
    refunds: dict[str, Units]
    created: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"pool": self.pool.name, "refunds": {a: to_decimal(v) for a, v in sorted(self.refunds.items())},
                "dissolved": self.pool.dissolved, "members": self.pool.members,
                "pool_balance": to_decimal(self.pool.balance)}


def _refund(name: str, agent: str, amount: Units, seq: int, ts: str, why: str) -> Txn:
    return make_txn(f"pool:{name}:refund:{agent}:{seq}", "refund", f"pool:{name}", agent, amount, agent=agent,
                    description=f"pool {name}: unspent stake refunded ({why})",
                    source={"type": "pool", "pool": name}, breakdown={"reason": why}, ref=f"pool:{name}", ts=ts)


def leave(ex: Exchange, name: str, agent: str) -> Refunds:
    """A member leaves and gets its unspent stake back."""
    ex.cfg.agent(agent)
    with ex.ledger.locked() as idx:
        st = _live(idx, name)
        if agent not in st.members:
            raise UserError(f"{agent} is not a member of pool {name}")
        ts, _ = _now(ex)
        stake = st.stakes().get(agent, 0)
        seq = st.meta_count
        txns = [_refund(name, agent, stake, seq, ts, "leave")] if stake > 0 else []
        txns.append(_meta(name, f"leave:{agent}:{seq}", "leave", agent, ts, f"pool:{name}", agent,
                          {"refund": stake}, f"{agent} left pool {name}"))
        ex.ledger.append_many(txns)
        return Refunds(_get(idx, name), {agent: stake} if stake else {})


def dissolve(ex: Exchange, name: str, *, by: str | None = None) -> Refunds:
    """Close the pool: every stake goes back to its contributor (the refunds sum to the balance)."""
    if by is not None:
        ex.cfg.agent(by)
    with ex.ledger.locked() as idx:
        st = _live(idx, name)
        if by is not None and by not in st.members:
            raise UserError(f"{by} is not a member of pool {name}")
        ts, _ = _now(ex)
        refunds = {a: v for a, v in st.stakes().items() if v > 0}
        assert sum(refunds.values()) == st.balance, "pool stakes out of step with its balance"
        txns = [_refund(name, a, v, st.meta_count, ts, "dissolve") for a, v in sorted(refunds.items())]
        txns.append(_meta(name, "dissolve", "dissolve", by or "", ts, f"pool:{name}", DISSOLVED_TO,
                          {"refunded": sum(refunds.values())}, f"pool {name} dissolved"))
        ex.ledger.append_many(txns)
        return Refunds(_get(idx, name), refunds)


def show(ex: Exchange, name: str) -> PoolState:
    return _get(ex.ledger.fresh(), name)


def all_pools(ex: Exchange) -> list[PoolState]:
    idx = ex.ledger.fresh()
    out = []
    for account in sorted(idx.accounts("pool:")):
        st = load(idx, account.split(":", 1)[1])
        if st is not None:
            out.append(st)
    return out


def new_id() -> str:
    return uuid.uuid4().hex[:20]
