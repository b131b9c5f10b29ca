"""``tx doctor``: replay the journal and prove the ledger consistent.

Checks: every block parses and matches its hash, the hash chain is unbroken, every batch is whole,
ids are unique, no agent/pool/hold account is negative at any point, debits equal credits, the
derived index equals a fresh fold of the journal, and the journal still holds every checkpoint
recorded in git (``checkpoint.py``: an agent that recomputes the chain cannot rewrite those).

``repair`` never deletes or edits a transaction: it rebuilds derived state, and moves a tail that
does not verify (from the first bad block to the end) into a quarantine file it names, with the
command that puts it back.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from token_exchange.amounts import fmt
from token_exchange.errors import UserError
from token_exchange.ledger.ledger import Ledger
from token_exchange.ledger.protocols import Index, Journal, SharedJournal
from token_exchange.ledger.txn import DEBT_KINDS, Txn
from token_exchange.storage import file_lock


@dataclass
class Report:
    transactions: int = 0
    agents: int = 0
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    torn_bytes: int = 0
    quarantined: str = ""
    checkpoints: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "transactions": self.transactions, "agents": self.agents,
                "problems": self.problems, "repaired": self.repaired, "notes": self.notes,
                "torn_bytes": self.torn_bytes, "quarantined": self.quarantined or None,
                "checkpoints_verified": self.checkpoints}


def fold(txns: list[Txn], report: Report) -> dict[str, int]:
    """Replay in order (each id once); returns account balances and records every broken invariant.

    Balances are checked at every instant, after all the transactions dated at it: records of one
    instant have no order a union-merged journal (git notes) keeps, so a hold and its settlement
    written in the same microsecond may come back either way round."""
    balances: dict[str, int] = {}
    seen: set[str] = set()
    overdrawn: dict[str, tuple[int, Txn]] = {}  # account -> the first transaction of this instant that overdrew it

    def close_instant() -> None:
        for account, (n, t) in overdrawn.items():
            if balances[account] < 0:
                report.problems.append(f"transaction {n} ({t.id}): {account} goes negative ({fmt(balances[account])})")
        overdrawn.clear()

    for n, t in enumerate(txns):
        if t.id in seen:
            continue
        if n and t.ts != txns[n - 1].ts:
            close_instant()
        seen.add(t.id)
        balances[t.payer] = balances.get(t.payer, 0) - t.amount
        balances[t.payee] = balances.get(t.payee, 0) + t.amount
        if not t.payer.startswith("world:") and balances[t.payer] < 0 and t.kind not in DEBT_KINDS:
            overdrawn.setdefault(t.payer, (n, t))
    close_instant()
    if sum(balances.values()) != 0:
        report.problems.append("debits do not equal credits")
    return balances


def check(ledger: Ledger, repair: bool = False, remote: str | None = None) -> Report:
    from token_exchange.ledger import checkpoint

    report = Report()
    journal = ledger.journal
    # The raw lock, not ledger.locked(): that would catch up (and refuse a bad tail) before we look.
    lock = journal.transaction(ledger.lock_timeout) if isinstance(journal, SharedJournal) else \
        file_lock(journal.lock_path())
    with lock if repair else nullcontext():
        try:
            chunk = journal.read_all()
        except UserError as e:
            report.problems.append(str(e))
            return report
        txns, tail, committed = chunk.txns, chunk.tail, chunk.position
        report.transactions = len({t.id for t in txns})
        if tail is not None and tail.torn:
            indexed = ledger.index.meta("position") or ""
            if indexed and indexed != str(tail.offset) and journal.is_behind(str(tail.offset), indexed):
                # The index had read past where the "torn" bytes start: they were acknowledged, then cut.
                tail = tail._replace(torn=False, reason=f"acknowledged transactions were cut off (the index had "
                                     f"read up to byte {indexed}; the journal ends inside that)")
        if tail is not None:
            _tail(journal, tail, repair, report)
        report.problems.extend(journal.link_problems(txns))
        report.notes.extend(journal.link_notes())
        balances = fold(txns, report)
        report.agents = sum(1 for a in balances if ":" not in a)
        # A remote that cannot be asked is the request's error (one line), not the ledger's.
        report.checkpoints = checkpoint.verify(ledger, txns, report.problems, remote=remote)
        if any("chain broken" in p or "appears twice" in p or "negative" in p for p in report.problems):
            return report
        if tail is not None and not tail.torn and not repair:
            return report  # the bad tail is the problem; the index is compared once it is dealt with
        idx = ledger.index
        first: dict[str, Txn] = {}
        for t in txns:
            first.setdefault(t.id, t)
        volume = sum(abs(t.amount) for t in first.values())
        stale = _compare_index(idx, balances, report.transactions, committed, journal, volume)
        if stale:
            if repair:
                idx.rebuild(journal.chunks(""))
                report.repaired.append(f"rebuilt the index ({stale})")
            else:
                report.problems.append(f"index out of step with the journal: {stale}; `tx doctor --repair` rebuilds it")
    return report


def _tail(journal: Journal, tail: Any, repair: bool, report: Report) -> None:
    where = journal.existing() or "the journal"
    if tail.torn:
        report.torn_bytes = tail.size
        if repair:
            path = journal.set_aside(tail)
            report.quarantined = str(path)
            report.repaired.append(f"moved a torn write of {tail.size} bytes at byte {tail.offset} to {path} "
                                   "(an incomplete batch: it was never acknowledged)")
        else:
            report.notes.append(f"ignored a torn write of {tail.size} bytes at byte {tail.offset} (an incomplete "
                                "batch from a killed writer, never acknowledged); `tx doctor --repair` moves it aside")
        return
    if repair:
        path = journal.set_aside(tail)
        report.quarantined = str(path)
        report.repaired.append(f"moved {tail.size} bytes from byte {tail.offset} of {where} ({tail.reason}) to "
                               f"{path}; to put them back exactly: cat '{path}' >> '{path.parent / where}'")
    else:
        report.problems.append(f"first bad block at byte {tail.offset} of {where}: {tail.reason}; the "
                               f"{tail.size} bytes from there are not counted (`tx doctor --repair` moves them "
                               "to a quarantine file)")


def _compare_index(idx: Index, balances: dict[str, int], count: int, end: str, journal: Journal, volume: int) -> str:
    pos = idx.meta("position") or ""
    if pos != end:
        # Behind is normal (catch-up happens on the next read).
        return "" if journal.is_behind(pos, end) else "index position is past the end of the journal"
    if idx.count() != count:
        return f"index has {idx.count()} transactions, journal {count}"
    indexed = idx.accounts()
    for acct, bal in balances.items():
        if indexed.get(acct, 0) != bal:
            return f"{acct}: index {fmt(indexed.get(acct, 0))}, journal {fmt(bal)}"
    kept = idx.volume()  # what the ledger's write check trusts to bound every total
    if kept is not None and kept != volume:
        return f"index volume {fmt(kept)}, journal {fmt(volume)}"
    return ""
