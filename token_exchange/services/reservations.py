"""Two-phase LLM spending: hold the worst case, then settle the real cost, void it, or let it expire.

``reserve`` holds the most ``max_tokens`` can cost (agent -> ``hold:RID``, under the same limits as
a direct spend); ``settle`` charges the actual cost at the prices stored on the hold and releases
the rest; ``void`` releases it all; a reservation that is neither is released by the next spending
operation after its ``ttl`` (``services.spending.expire_due``, where the money-flow table is).
Each reservation resolves once: settling twice, or after void or expiry, is an error.

Agent code uses the context manager::

    from token_exchange.services.exchange import Exchange
    from token_exchange.services.reservations import reservation

    ex = Exchange.open()
    with reservation(ex, "claude", "coding", max_tokens=8000) as r:
        reply = call_the_model(max_tokens=8000)
        r.use(reply.usage.total_tokens)        # settled on exit; nothing used -> voided
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from token_exchange.amounts import Units, fmt, to_decimal
from token_exchange.errors import IdConflict, Refused, UserError
from token_exchange.ledger.protocols import Index
from token_exchange.ledger.txn import LLM, make_txn
from token_exchange.rules.limits import enforce, iso
from token_exchange.services.exchange import Exchange
from token_exchange.services.spending import (
    Price,
    _now,
    _output_tokens,
    _request_id,
    _same_or_conflict,
    expire_due,
    micros_of,
    parse_tokens,
)


@dataclass
class ReservationState:
    """A reservation read back from the ledger."""

    id: str
    agent: str
    model: str
    task: str
    max_tokens: int
    held: Units
    ts: str
    expires: str
    state: str  # open, settled, voided, expired
    cost: Units = 0
    tokens: int = 0
    released: Units = 0
    over: Units = 0  # charged above the hold (``settle(..., allow_over=True)``), included in ``cost``

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "agent": self.agent, "model": self.model, "task": self.task,
                "max_tokens": self.max_tokens, "held": to_decimal(self.held), "since": self.ts,
                "expires": self.expires, "state": self.state, "cost": to_decimal(self.cost), "tokens": self.tokens,
                "released": to_decimal(self.released)}


def reservation_state(idx: Index, rid: str) -> ReservationState:
    hold = idx.get(f"llm:{rid}:hold")
    if hold is None:
        raise UserError(f"unknown reservation {rid[:60]!r}")
    ttl = int(hold.breakdown.get("ttl", 0))
    expires = iso(micros_of(hold.ts) + ttl * 1_000_000) if ttl else ""
    r = ReservationState(rid, hold.agent, str(hold.source.get("model")), str(hold.source.get("task", "")),
                         int(hold.source.get("max_tokens", 0)), hold.amount, hold.ts, expires, "open")
    settle = idx.get(f"llm:{rid}:settle")
    if settle is not None:
        r.state, r.cost, r.tokens = "settled", settle.amount, int(settle.source.get("tokens", 0))
        rel = idx.get(f"llm:{rid}:release")
        r.released = rel.amount if rel else 0
        over = idx.get(f"llm:{rid}:over")
        if over is not None:
            r.over = over.amount
            r.cost += over.amount
        return r
    for suffix, state in (("void", "voided"), ("expire", "expired")):
        t = idx.get(f"llm:{rid}:{suffix}")
        if t is not None:
            r.state, r.released = state, t.amount
            return r
    return r


def _closed_error(r: ReservationState, verb: str) -> UserError:
    if r.state == "settled":
        return UserError(f"cannot {verb} reservation {r.id}: already settled ({fmt(r.cost)} for {r.tokens} tokens)")
    if r.state == "voided":
        return UserError(f"cannot {verb} reservation {r.id}: it was voided")
    return UserError(f"cannot {verb} reservation {r.id}: it expired at {r.expires}")


def reserve(ex: Exchange, agent: str, task_type: str, max_tokens: int | str, *, model: str | None = None,
            id: str | None = None, ttl: int | None = None) -> ReservationState:
    """Hold the most ``max_tokens`` can cost (counts against balance and limits until resolved)."""
    a = ex.cfg.agent(agent)
    n = parse_tokens(max_tokens, "max tokens")
    m = ex.cfg.model(model or a.model_for(task_type))
    price = Price.of(m)
    amount = price.max_cost(n)
    rid = _request_id(id)
    ttl = ex.cfg.reservation_ttl if ttl is None else ttl
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= 7 * 86400:
        raise UserError(f"ttl must be whole seconds between 1 and 604800, got {ttl!r}")
    with ex.ledger.locked() as idx:
        ex.ensure_open(idx, agent)
        ts, now_us = _now(ex)
        txn = make_txn(f"llm:{rid}:hold", "hold", agent, f"hold:{rid}", amount, agent=agent,
                       description=f"reservation: up to {n} tokens of {m.name} ({task_type[:60]})",
                       source={"type": "llm-reserve", "model": m.name, "task": task_type[:100], "max_tokens": n,
                               "request": rid},
                       breakdown={**price.breakdown(), "ttl": ttl, "rule": "ceil(max_tokens/1000 x max price)"},
                       ref=f"llm:{rid}", ts=ts)
        old = idx.get(txn.id)
        if old is not None:
            _same_or_conflict(old, txn, f"reservation id {rid}")
            return reservation_state(idx, rid)
        if idx.get(f"llm:{rid}") is not None:
            raise IdConflict(f"reservation id {rid} is already used by a direct spend")
        expire_due(ex, idx)
        enforce(idx, a.limits, agent, amount, now_us)
        ex.ledger.append(txn)
        return reservation_state(idx, rid)


def settle(ex: Exchange, rid: str, tokens: int | str, *, output_tokens: int | str | None = None,
           allow_over: bool = False) -> ReservationState:
    """Charge the actual cost of an open reservation (at the prices stored on it); release the rest.

    Usage above the reservation's maximum is refused unless ``allow_over``: then the hold is charged in
    full and the rest is a ``spend`` (id ``llm:RID:over``) outside the limits, because those tokens were
    already consumed (a gateway learns the real prompt size only after the call).  The overage never
    takes the wallet below zero; what it could not charge is recorded as ``uncharged``."""
    n = parse_tokens(tokens)
    out_n = None if output_tokens is None else _output_tokens(output_tokens)
    with ex.ledger.locked() as idx:
        expire_due(ex, idx)
        r = reservation_state(idx, rid)
        if r.state != "open":
            raise _closed_error(r, "settle")
        if n > r.max_tokens and not allow_over:
            raise Refused(f"cannot settle reservation {rid}: {n} tokens is more than its maximum {r.max_tokens}")
        hold = idx.get(f"llm:{rid}:hold")
        assert hold is not None
        price = Price.from_breakdown(r.model, hold.breakdown)
        full = price.cost(n, out_n)
        amount = min(full, r.held)
        ts, _ = _now(ex)
        source: dict[str, str | int] = {"type": "llm", "model": r.model, "task": r.task, "tokens": n, "request": rid}
        if out_n is not None:
            source["output_tokens"] = out_n
        bd = {**price.breakdown(), "held": fmt(r.held), "rule": "ceil(tokens/1000 x price)"}
        txns = [make_txn(f"llm:{rid}:settle", "settle", f"hold:{rid}", LLM, amount, agent=r.agent,
                         description=f"{r.task} on {r.model}", source=source, breakdown=bd, ref=f"llm:{rid}", ts=ts)]
        if r.held > amount:
            txns.append(make_txn(f"llm:{rid}:release", "release", f"hold:{rid}", r.agent, r.held - amount,
                                 agent=r.agent, description=f"reservation {rid}: unused part released",
                                 source={"type": "llm-release", "request": rid}, breakdown={"reason": "settled"},
                                 ref=f"llm:{rid}", ts=ts))
        if full > amount:
            over = min(full - amount, max(0, idx.account(r.agent)))
            over_bd: dict[str, str | int] = {**price.breakdown(), "tokens_reserved": r.max_tokens,
                                             "rule": "usage above the reservation"}
            if over < full - amount:
                over_bd["uncharged"] = fmt(full - amount - over)
            txns.append(make_txn(f"llm:{rid}:over", "spend", r.agent, LLM, over, agent=r.agent,
                                 description=f"{r.task} on {r.model}: usage above reservation {rid}",
                                 source={"type": "llm-over", "model": r.model, "task": r.task, "tokens": n,
                                         "request": rid}, breakdown=over_bd, ref=f"llm:{rid}", ts=ts))
        ex.ledger.append_many(txns)
        return reservation_state(idx, rid)


def void(ex: Exchange, rid: str) -> ReservationState:
    """Release all of an open reservation."""
    with ex.ledger.locked() as idx:
        expire_due(ex, idx)
        r = reservation_state(idx, rid)
        if r.state != "open":
            raise _closed_error(r, "void")
        ts, _ = _now(ex)
        ex.ledger.append(make_txn(f"llm:{rid}:void", "release", f"hold:{rid}", r.agent, r.held, agent=r.agent,
                                  description=f"reservation {rid} voided", source={"type": "llm-void", "request": rid},
                                  breakdown={"reason": "void"}, ref=f"llm:{rid}", ts=ts))
        return reservation_state(idx, rid)


def show(ex: Exchange, rid: str) -> ReservationState:
    with ex.ledger.locked() as idx:
        expire_due(ex, idx)
        return reservation_state(idx, rid)


class Reservation:
    """Handle given by ``reservation()``: call ``use(tokens)`` with the real usage."""

    def __init__(self, ex: Exchange, state: ReservationState) -> None:
        self.ex = ex
        self.state = state
        self.used: tuple[int, int | None] | None = None

    @property
    def id(self) -> str:
        return self.state.id

    @property
    def held(self) -> Units:
        return self.state.held

    def use(self, tokens: int, output_tokens: int | None = None) -> None:
        """Record the tokens actually used; the reservation is settled with them on exit."""
        parse_tokens(tokens)
        if tokens > self.state.max_tokens:
            raise Refused(f"{tokens} tokens is more than reservation {self.id}'s maximum {self.state.max_tokens}")
        self.used = (tokens, output_tokens)

    def settle(self, tokens: int, output_tokens: int | None = None) -> ReservationState:
        self.state = settle(self.ex, self.id, tokens, output_tokens=output_tokens)
        return self.state

    def void(self) -> ReservationState:
        self.state = void(self.ex, self.id)
        return self.state

    def _finish(self) -> None:
        if self.state.state != "open":
            return
        current = show(self.ex, self.id)
        if current.state != "open":  # expired meanwhile (or resolved elsewhere)
            self.state = current
            return
        if self.used is not None:
            self.settle(*self.used)
        else:
            self.void()


@contextmanager
def reservation(ex: Exchange, agent: str, task_type: str, max_tokens: int, *, model: str | None = None,
                id: str | None = None, ttl: int | None = None) -> Iterator[Reservation]:
    """Reserve, run the block, then settle what ``use()`` recorded, or void if nothing was used.

    If the block raises, recorded usage is still settled (those tokens were consumed) and an unused
    reservation is voided; the exception propagates.  Raises ``LimitRefused`` before the block if
    the reservation is refused.
    """
    r = Reservation(ex, reserve(ex, agent, task_type, max_tokens, model=model, id=id, ttl=ttl))
    try:
        yield r
    except BaseException:
        try:
            r._finish()
        except UserError:
            pass  # the block's exception matters more; an unresolved hold expires anyway
        raise
    r._finish()
