"""``tx doctor``: replay the journal and prove the ledger consistent.

Checks: every block parses and matches its hash, the hash chain is unbroken,
ids are unique, no agent/pool/hold account is negative at any point, debits
equal credits, and the derived index equals a fresh fold of the journal.
``repair`` only rebuilds derived state and moves a torn tail aside; it never
deletes or edits a transaction.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from token_exchange.amounts import fmt
from token_exchange.errors import UserError
from token_exchange.ledger.ledger import DEBT_KINDS, Index, Ledger, Txn
from token_exchange.storage import file_lock


@dataclass
class Report:
    transactions: int = 0
    agents: int = 0
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    torn_bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "transactions": self.transactions, "agents": self.agents,
                "problems": self.problems, "repaired": self.repaired, "notes": self.notes,
                "torn_bytes": self.torn_bytes}


def fold(txns: list[Txn], report: Report, chained: bool) -> dict[str, int]:
    """Replay in order; returns account balances and records every broken invariant."""
    balances: dict[str, int] = {}
    seen: dict[str, str] = {}
    prev = ""
    for n, t in enumerate(txns):
        if chained and t.prev != prev:
            report.problems.append(f"transaction {n} ({t.id}): chain broken (entry edited, removed or reordered)")
        prev = t.hash
        fp = t.fingerprint()
        if t.id in seen:
            if seen[t.id] != fp or chained:
                report.problems.append(f"transaction {n}: id {t.id} appears twice")
            continue
        seen[t.id] = fp
        balances[t.payer] = balances.get(t.payer, 0) - t.amount
        balances[t.payee] = balances.get(t.payee, 0) + t.amount
        if not t.payer.startswith("world:") and balances[t.payer] < 0 and t.kind not in DEBT_KINDS:
            report.problems.append(f"transaction {n} ({t.id}): {t.payer} goes negative ({fmt(balances[t.payer])})")
    if sum(balances.values()) != 0:
        report.problems.append("debits do not equal credits")
    return balances


def check(ledger: Ledger, repair: bool = False) -> Report:
    report = Report()
    journal = ledger.journal
    # The raw lock, not ledger.locked(): that would catch up (and cut a torn tail) before we look.
    with file_lock(journal.lock_path()) if repair else nullcontext():
        try:
            txns, torn = journal.read_all()
        except UserError as e:
            report.problems.append(str(e))
            return report
        report.transactions = len({t.id for t in txns})
        if torn is not None:
            report.torn_bytes = len(torn.data)
            if repair:
                journal.cut_torn(torn)
                report.repaired.append(f"moved a torn write of {len(torn.data)} bytes at byte {torn.offset} "
                                       "to ledger.torn (it was never acknowledged)")
            else:
                # Never acknowledged, so not part of the ledger: the next write (or --repair) moves it aside.
                report.notes.append(f"ignored a torn write of {len(torn.data)} bytes at byte {torn.offset} "
                                    "(a killed writer, never acknowledged); `tx doctor --repair` moves it aside")
        balances = fold(txns, report, journal.chained)
        report.agents = sum(1 for a in balances if ":" not in a)
        if any("chain broken" in p or "appears twice" in p or "negative" in p for p in report.problems):
            return report
        stale = _compare_index(ledger.index, balances, report.transactions, journal.end() if torn is None else None,
                               journal)
        if stale:
            if repair:
                idx = ledger.index
                idx.reset()
                idx.add(txns, journal.end(), txns[-1].hash if txns and journal.chained else None)
                report.repaired.append(f"rebuilt the index ({stale})")
            else:
                report.problems.append(f"index out of step with the journal: {stale}; `tx doctor --repair` rebuilds it")
    return report


def _compare_index(idx: Index, balances: dict[str, int], count: int, end: str | None,
                   journal: object = None) -> str:
    if end is not None and (idx.meta("position") or "") not in (end,):
        # Behind is normal (catch-up happens on the next read); compare after catching up.
        return "" if _is_behind(idx, end, journal) else "index position is past the end of the journal"
    if idx.count() != count:
        return f"index has {idx.count()} transactions, journal {count}"
    indexed = idx.accounts()
    for acct, bal in balances.items():
        if indexed.get(acct, 0) != bal:
            return f"{acct}: index {fmt(indexed.get(acct, 0))}, journal {fmt(bal)}"
    return ""


def _is_behind(idx: Index, end: str, journal: object = None) -> bool:
    behind = getattr(journal, "is_behind", None)  # journals whose positions are not offsets (git notes)
    if behind is not None:
        return bool(behind(idx.meta("position") or "", end))
    pos = idx.meta("position") or "0"
    return pos.isdigit() and end.isdigit() and int(pos) < int(end)
