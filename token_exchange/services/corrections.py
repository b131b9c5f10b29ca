"""Corrections as users expect them: reverse a transaction, transfer between agents.

The ledger is append-only, so a mistake is corrected by a new transaction, never by an edit:

* ``reverse(ex, id, reason)`` appends a ``reversal`` that moves the original amount back
  (payee -> payer).  Its id is derived from the original (``reversal:ID``), so reversing twice is one
  reversal; a reversal is never reversed (record the original again, with a new id, instead), and
  two-phase reservation and pool internals are corrected with their own commands.
* ``transfer(ex, payer, payee, amount)`` moves tokens agent to agent under the payer's spending
  limits (burst, reserve, hourly/daily windows: ``rules.limits``; transfers count in the windows).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, NamedTuple

from token_exchange.amounts import Units, fmt, to_decimal, to_units
from token_exchange.errors import UserError, clean_text
from token_exchange.ledger.timestamps import ts_text
from token_exchange.ledger.txn import Appended, Txn, make_txn
from token_exchange.rules import limits as lim
from token_exchange.services.exchange import Exchange
from token_exchange.services.spending import REQUEST_RE

REVERSIBLE = ("open", "earn", "award", "spend", "transfer")
WHY_NOT = {"reversal": "it is itself a reversal; to undo it, record the original again under a new id",
           "hold": "it is part of a reservation: use `tx llm settle` or `tx llm void`",
           "settle": "it is part of a reservation: settled costs are corrected with a reversal of nothing; "
                     "ask the operator to award the difference",
           "release": "it is part of a reservation (a release already gave the tokens back)",
           "pool": "it is a pool record: use the `tx pool` commands",
           "contribute": "it is a pool transaction: use `tx pool refund` or `tx pool dissolve`",
           "pool_spend": "it is a pool transaction: pool spends are shared by the members' credits",
           "refund": "it is a pool transaction: use the `tx pool` commands",
           "credit": "it is a pool transaction: use the `tx pool` commands"}
MAX_REASON = 300


class Correction(NamedTuple):
    """What a correction wrote (``created`` False: it was already there)."""

    txn: Txn
    created: bool
    original: Txn | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.txn.id, "kind": self.txn.kind, "from": self.txn.payer,
                             "to": self.txn.payee, "amount": to_decimal(self.txn.amount), "created": self.created,
                             "ts": self.txn.ts}
        if self.original is not None:
            d["reverses"] = self.original.id
        return d


def reversal_id(txn_id: str) -> str:
    rid = f"reversal:{txn_id}"
    return rid if len(rid) <= 200 else f"reversal:sha256:{hashlib.sha256(txn_id.encode()).hexdigest()[:40]}"


def reverse(ex: Exchange, txn_id: str, reason: str) -> Correction:
    """Append the reversal of ``txn_id`` (idempotent by id); refuses what cannot or must not be reversed."""
    reason = clean_text(reason, limit=MAX_REASON).strip()
    if not reason:
        raise UserError("--reason is required: say why the transaction is reversed (it is kept in the ledger)")
    with ex.ledger.locked() as idx:
        original = idx.get(txn_id) if isinstance(txn_id, str) and len(txn_id) <= 200 else None
        if original is None:
            raise UserError(f"no transaction {txn_id[:80]!r} in this ledger (`tx history AGENT` lists ids)")
        if original.kind not in REVERSIBLE:
            raise UserError(f"{txn_id} cannot be reversed: {WHY_NOT.get(original.kind, 'not a reversible kind')}")
        rid = reversal_id(txn_id)
        done = idx.get(rid)
        if done is not None:
            return Correction(done, False, original)
        if original.amount == 0:
            raise UserError(f"{txn_id} moved nothing; there is nothing to reverse")
        have = idx.account(original.payee)
        if not original.payee.startswith("world:") and have < original.amount:
            raise UserError(f"reversing {txn_id} takes {fmt(original.amount)} back from {original.payee}, which "
                            f"has {fmt(have)}: a reversal never makes a wallet negative")
        t = make_txn(rid, "reversal", original.payee, original.payer, original.amount, agent=original.agent,
                     project=original.project, description=f"reversal of {txn_id}: {reason}",
                     source={"type": "reversal", "reverses": txn_id[:200]},
                     breakdown={"reason": reason, "original_kind": original.kind})
        result: Appended = ex.ledger.append(t)
        return Correction(result.txn, result.created, original)


def transfer(ex: Exchange, payer: str, payee: str, amount: str | Units, *, id: str | None = None,
             description: str = "") -> Correction:
    """Move ``amount`` from agent ``payer`` to agent ``payee`` under the payer's limits; ``id`` makes it
    idempotent (the same id twice transfers once)."""
    a = ex.cfg.agent(payer)
    ex.cfg.agent(payee)
    if payer == payee:
        raise UserError("a transfer needs two different agents")
    units = amount if isinstance(amount, int) else to_units(amount, what="amount")
    if id is not None and not REQUEST_RE.fullmatch(id):
        raise UserError(f"--id: {id[:40]!r} is not a valid id (1-100 of A-Z a-z 0-9 _ . @ + = -)")
    tid = f"transfer:{id or uuid.uuid4().hex[:20]}"
    description = clean_text(description, limit=300) or f"transfer from {payer} to {payee}"
    with ex.ledger.locked() as idx:
        ex.ensure_open(idx, payer)
        ex.ensure_open(idx, payee)
        moment = ex.clock()
        t = make_txn(tid, "transfer", payer, payee, units, agent=payer, description=description,
                     source={"type": "transfer", "to": payee}, ts=ts_text(moment))
        old = idx.get(tid)
        if old is not None:
            if old.fingerprint() != t.fingerprint():
                raise UserError(f"transfer id {id} was already used for a different transfer ({old.id})")
            return Correction(old, False)
        lim.enforce(idx, a.limits, payer, units, lim.micros(moment))
        result = ex.ledger.append(t)
        return Correction(result.txn, result.created)
