"""LLM spending: prices, direct spends, and the lazy expiry of reservations.

Two-phase reservations (reserve -> settle | void | expire) are ``services.reservations``; they
share this module's prices, request ids and expiry.

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
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from token_exchange.amounts import Units, fmt, round_cost, to_decimal
from token_exchange.errors import IdConflict, UserError
from token_exchange.ledger.protocols import Index
from token_exchange.ledger.timestamps import ts_text
from token_exchange.ledger.txn import LLM, Txn, make_txn
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
    if isinstance(value, int):
        n = value  # (str() of an int over 4,300 digits raises: compare, never convert)
        if n < 0:
            raise UserError(f"{what}: a negative count")
    else:
        text = str(value).strip()
        if text.startswith("-") and text[1:].strip().isdigit():
            raise UserError(f"{what}: {text[:30]} is negative")
        if not text.isascii() or not text.isdigit():
            raise UserError(f"{what}: {text[:30]!r} is not a whole number of tokens")
        if len(text.lstrip("0")) > len(str(MAX_INFERENCE_TOKENS)):  # int() refuses over 4,300 digits
            raise UserError(f"{what}: {text[:30]}... is more than the maximum {MAX_INFERENCE_TOKENS}")
        n = int(text.lstrip("0") or "0")
    if n == 0:
        raise UserError(f"{what}: must be greater than 0")
    if n > MAX_INFERENCE_TOKENS:
        raise UserError(f"{what}: more than the maximum {MAX_INFERENCE_TOKENS}")
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
def expire_due(ex: Exchange, idx: Index, now: tuple[str, int] | None = None) -> list[Txn]:
    """Release every reservation whose time is up (call inside ``ledger.locked()``); ``now``: the caller's
    ``_now(ex)``, when it has it."""
    ts, now_us = now or _now(ex)
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
    from token_exchange.ledger.timestamps import ts_micros

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
        now = ts, now_us = _now(ex)
        txn = make_txn(f"llm:{rid}", "spend", agent, LLM, amount, agent=agent, project=project,
                       description=description or f"{task_type} on {m.name}", source=source, breakdown=bd,
                       ref=f"llm:{rid}", ts=ts)
        old = idx.get(txn.id)
        if old is not None:
            _same_or_conflict(old, txn, f"request id {rid}")
            return SpendResult(old, False, idx.account(agent))
        if idx.get(f"llm:{rid}:hold") is not None:
            raise IdConflict(f"request id {rid} is already used by a reservation")
        expire_due(ex, idx, now)
        enforce(idx, a.limits, agent, amount, now_us)
        appended = ex.ledger.append(txn)
        return SpendResult(appended.txn, True, idx.account(agent))


def _output_tokens(value: int | str) -> int:
    text = str(value).strip()
    if text == "0":
        return 0
    return parse_tokens(text, "output tokens")
