"""LLM spending: prices, direct spends, and two-phase reservations (reserve -> settle | void | expire).

Money flows (double entry; every amount in units):

- spend:   agent -> ``world:llm``            kind ``spend``   id ``llm:REQUEST``
- reserve: agent -> ``hold:RID``              kind ``hold``    id ``llm:RID:hold``
- settle:  ``hold:RID`` -> ``world:llm``      kind ``settle``  id ``llm:RID:settle``  (the actual cost)
           ``hold:RID`` -> agent              kind ``release`` id ``llm:RID:release`` (the rest, if any)
- void:    ``hold:RID`` -> agent              kind ``release`` id ``llm:RID:void``
- expiry:  ``hold:RID`` -> agent              kind ``release`` id ``llm:RID:expire``

Cost = tokens / 1000 x price, rounded *up* to a unit (``amounts.round_cost``).  With an output
token count, input and output tokens are priced separately (``input_per_1k``/``output_per_1k``)
and rounded once.  The model, token counts and the prices used are stored on the transaction,
so a later price change never rewrites history (a settle uses the prices stored on its hold).

Every decision (limits, reservation state, expiry) is taken inside ``ledger.locked()`` with the
exchange's clock, and the write happens in the same critical section.

Agent code uses the context manager::

    from token_exchange.services.exchange import Exchange
    from token_exchange.services.spending import reservation

    ex = Exchange.open()
    with reservation(ex, "claude", "coding", max_tokens=8000) as r:
        reply = call_the_model(max_tokens=8000)
        r.use(reply.usage.total_tokens)        # settled on exit; nothing used -> voided
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from token_exchange.amounts import Units, fmt, round_cost, to_decimal
from token_exchange.errors import IdConflict, Refused, UserError
from token_exchange.ledger.protocols import Index
from token_exchange.ledger.txn import LLM, Txn, make_txn, ts_text
from token_exchange.rules.config import Model
from token_exchange.rules.limits import enforce, iso, micros
from token_exchange.services.exchange import Exchange

MAX_INFERENCE_TOKENS = 10**12
REQUEST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+=-]{0,99}")


# --- pure pricing ----------------------------------------------------------------------------
def parse_tokens(value: int | str, what: str = "tokens") -> int:
    """An inference token count: a whole number 1..10^12 (no signs, decimals, or words)."""
    if isinstance(value, bool):
        raise UserError(f"{what}: expected a whole number, got {value!r}")
    text = str(value).strip()
    if text.startswith("-") and text[1:].strip().isdigit():
        raise UserError(f"{what}: {text} is negative")
    if not text.isascii() or not text.isdigit():
        raise UserError(f"{what}: {text[:30]!r} is not a whole number of tokens")
    n = int(text)
    if n == 0:
        raise UserError(f"{what}: must be greater than 0")
    if n > MAX_INFERENCE_TOKENS:
        raise UserError(f"{what}: {n} is more than the maximum {MAX_INFERENCE_TOKENS}")
    return n


@dataclass(frozen=True)
class Price:
    """The prices of one model at one moment (tokens per 1,000 inference tokens)."""

    model: str
    per_1k: Decimal
    input_per_1k: Decimal
    output_per_1k: Decimal

    @classmethod
    def of(cls, m: Model) -> Price:
        return cls(m.name, m.cost_per_1k, m.input_per_1k, m.output_per_1k)

    @classmethod
    def from_breakdown(cls, model: str, bd: dict[str, Any]) -> Price:
        return cls(model, Decimal(bd["price_per_1k"]), Decimal(bd["input_per_1k"]), Decimal(bd["output_per_1k"]))

    def cost(self, tokens: int, output_tokens: int | None = None) -> Units:
        """tokens/1000 x price, rounded up; with ``output_tokens``, in and out priced separately."""
        if output_tokens is None:
            return round_cost(Decimal(tokens) * self.per_1k / 1000)
        if not 0 <= output_tokens <= tokens:
            raise UserError(f"output tokens ({output_tokens}) must be between 0 and the token count ({tokens})")
        return round_cost((Decimal(tokens - output_tokens) * self.input_per_1k
                           + Decimal(output_tokens) * self.output_per_1k) / 1000)

    def max_cost(self, tokens: int) -> Units:
        """The most ``tokens`` can cost however they split between input and output."""
        return round_cost(Decimal(tokens) * max(self.per_1k, self.input_per_1k, self.output_per_1k) / 1000)

    def breakdown(self) -> dict[str, str | int]:
        return {"price_per_1k": str(self.per_1k), "input_per_1k": str(self.input_per_1k),
                "output_per_1k": str(self.output_per_1k)}


def cost(m: Model, tokens: int, output_tokens: int | None = None) -> Units:
    return Price.of(m).cost(tokens, output_tokens)


def _request_id(value: str | None, what: str = "--id") -> str:
    if value is None:
        return uuid.uuid4().hex[:20]
    if not REQUEST_RE.fullmatch(value):
        raise UserError(f"{what}: {value[:40]!r} is not a valid id (1-100 of A-Z a-z 0-9 _ . @ + = -)")
    return value


def _now(ex: Exchange) -> tuple[str, int]:
    moment = ex.clock()
    return ts_text(moment), micros(moment)


def _same_or_conflict(existing: Txn, new: Txn, what: str) -> None:
    if existing.fingerprint() != new.fingerprint():
        raise IdConflict(f"{what} already used with different content ({existing.id})")


# --- expiry ----------------------------------------------------------------------------------
def expire_due(ex: Exchange, idx: Index) -> list[Txn]:
    """Release every reservation whose time is up (call inside ``ledger.locked()``)."""
    ts, now_us = _now(ex)
    out = []
    for account, agent, amount in idx.expired_holds(now_us):
        rid = account.split(":", 1)[1]
        hold = idx.get(f"llm:{rid}:hold")
        expires = iso(micros_of(hold.ts) + int(hold.breakdown.get("ttl", 0)) * 1_000_000) if hold else ""
        t = make_txn(f"llm:{rid}:expire", "release", account, agent, amount, agent=agent,
                     description=f"reservation {rid} expired", source={"type": "llm-expire", "request": rid},
                     breakdown={"reason": "expired", "expired_at": expires}, ref=f"llm:{rid}", ts=ts)
        ex.ledger.append(t)
        out.append(t)
    return out


def micros_of(ts: str) -> int:
    from token_exchange.ledger.txn import ts_micros

    return ts_micros(ts)


# --- direct spends ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SpendResult:
    txn: Txn
    created: bool
    balance: Units

    @property
    def cost(self) -> Units:
        return self.txn.amount

    def to_json(self) -> dict[str, Any]:
        t = self.txn
        return {"id": t.id, "agent": t.agent, "model": t.source.get("model"), "task": t.source.get("task"),
                "tokens": t.source.get("tokens"), "output_tokens": t.source.get("output_tokens"),
                "cost": to_decimal(t.amount), "price_per_1k": Decimal(str(t.breakdown.get("price_per_1k"))),
                "created": self.created, "balance": to_decimal(self.balance), "ts": t.ts}

    def line(self) -> str:
        t = self.txn
        if not self.created:
            return f"already recorded ({t.id}): {t.agent} used {fmt(t.amount)} for {t.source.get('tokens')} tokens"
        return (f"✅ {t.agent} used {fmt(t.amount)} for {t.source.get('tokens')} tokens "
                f"({t.source.get('model')} at {t.breakdown.get('price_per_1k')}/1K, {t.source.get('task')}); "
                f"balance {fmt(self.balance)}")


def spend(ex: Exchange, agent: str, task_type: str, tokens: int | str, *, model: str | None = None,
          output_tokens: int | str | None = None, id: str | None = None, description: str = "",
          project: str = "") -> SpendResult:
    """Charge an LLM request to ``agent`` now, under its limits.  Same ``id`` twice charges once."""
    a = ex.cfg.agent(agent)
    n = parse_tokens(tokens)
    out_n = None if output_tokens is None else _output_tokens(output_tokens)
    m = ex.cfg.model(model or a.model_for(task_type))
    price = Price.of(m)
    amount = price.cost(n, out_n)
    rid = _request_id(id)
    source: dict[str, str | int] = {"type": "llm", "model": m.name, "task": task_type[:100], "tokens": n,
                                    "request": rid}
    if out_n is not None:
        source["output_tokens"] = out_n
    bd = {**price.breakdown(), "rule": "ceil(tokens/1000 x price)"}
    with ex.ledger.locked() as idx:
        ex.ensure_open(idx, agent)
        ts, now_us = _now(ex)
        txn = make_txn(f"llm:{rid}", "spend", agent, LLM, amount, agent=agent, project=project,
                       description=description or f"{task_type} on {m.name}", source=source, breakdown=bd,
                       ref=f"llm:{rid}", ts=ts)
        old = idx.get(txn.id)
        if old is not None:
            _same_or_conflict(old, txn, f"request id {rid}")
            return SpendResult(old, False, idx.account(agent))
        if idx.get(f"llm:{rid}:hold") is not None:
            raise IdConflict(f"request id {rid} is already used by a reservation")
        expire_due(ex, idx)
        enforce(idx, a.limits, agent, amount, now_us)
        appended = ex.ledger.append(txn)
        return SpendResult(appended.txn, True, idx.account(agent))


def _output_tokens(value: int | str) -> int:
    text = str(value).strip()
    if text == "0":
        return 0
    return parse_tokens(text, "output tokens")


# --- two-phase reservations ------------------------------------------------------------------
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
