"""The ledger: append-only, idempotent, hash-chained transactions in double entry.

One interface (``Ledger``) over a pluggable *journal* (the source of truth, ``protocols.Journal``:
a TOML file, git notes) plus a derived *index* (``protocols.Index``: balances, ids, windows) that
can always be rebuilt from the journal.  Reads never re-parse the journal: the index remembers how
far it has read (a byte offset, a notes commit), the journal proves that position still holds what
was read, and only the new tail is read.  An empty or unreadable index is rebuilt by streaming.

Writes are validated before a byte reaches the journal (``_check``): every field round-trips through
the journal's format and the index, amounts and every running total stay inside the one documented
maximum (``amounts.MAX_UNITS`` / ``MAX_TOTAL``), and dates are canonical UTC, never before the
ledger's last transaction and never after "now".
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from token_exchange import clock as clock_mod
from token_exchange.amounts import MAX_TOTAL, fmt
from token_exchange.clock import Clock
from token_exchange.errors import IdConflict, UserError
from token_exchange.ledger.index import IndexUnreadable, SqliteIndex
from token_exchange.ledger.protocols import Chunk, Index, Journal, SharedJournal, Tail
from token_exchange.ledger.timestamps import check_ts, ts_text
from token_exchange.ledger.txn import EARN_KINDS, Appended, Balance, Table, Txn, canonical_hashed, untimed
from token_exchange.storage import file_lock


class Ledger:
    """The one ledger interface: idempotent appends under a lock, fast derived reads."""

    def __init__(self, journal: Journal, index_path: Path, clock: Clock | None = None,
                 index: Index | None = None) -> None:
        self.journal = journal
        self._clock = clock
        self.index_path = index_path
        self._index: Index | None = index
        self._locked = False
        self._tail: Tail | None = None  # what the last catch-up stopped at (torn or bad), if anything
        self.lock_timeout = 30.0  # seconds to wait for another writer (the hooks wait less)

    def clock(self) -> datetime:
        return (self._clock or clock_mod.now)()

    @property
    def index(self) -> Index:
        if self._index is None:
            if isinstance(self.journal, SharedJournal):  # a database keeps its own (shared) index
                self._index = self.journal.index()
                return self._index
            try:
                self._index = SqliteIndex(self.index_path)
            except IndexUnreadable as e:
                self._index = self._replace_index(str(e))
        return self._index

    def _replace_index(self, why: str) -> Index:
        """Derived state: keep the unreadable file as evidence and start a new one (rebuilt on catch-up)."""
        if self._index is not None:
            try:
                self._index.close()
            except sqlite3.Error:
                pass
        aside = self.index_path.with_name(self.index_path.name + ".unreadable")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.index_path}{suffix}")
            if src.exists():
                src.replace(Path(f"{aside}{suffix}"))
        sys.stderr.write(f"tx: {why}; moved it to {aside.name}, rebuilding\n")
        self._index = SqliteIndex(self.index_path)
        return self._index

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    # --- keeping the index in step with the journal ----------------------------------
    def _catch_up(self) -> None:
        """Bring the index to the journal's committed end; never writes the journal.  An index that breaks
        while being read (a damaged page) is replaced and rebuilt once."""
        try:
            self._catch_up_once()
        except (sqlite3.DatabaseError, IndexUnreadable) as e:
            if not isinstance(self._index, SqliteIndex):
                raise
            self._replace_index(f"{self.index_path.name} is damaged ({e})")
            self._catch_up_once()

    def _catch_up_once(self) -> None:
        idx = self.index
        pos = idx.meta("position") or ""
        self._tail = None
        if pos == self.journal.end():
            return
        if not pos:
            self._rebuild()
        else:
            problem = self.journal.verify_position(pos, idx.meta("last_hash") or "")
            if problem:
                raise UserError(f"{problem}; nothing was read or written: run `tx doctor`")
            chunk = self.journal.read_from(pos)
            txns, rebuild = self.journal.accept(idx, chunk.txns)
            if rebuild:  # a record that wins over one already indexed: rebuild from the whole journal
                self._rebuild()
            else:
                if txns or chunk.position != pos:
                    try:
                        idx.add(txns, chunk.position, chunk.txns[-1].hash if chunk.txns else None)
                    except ValueError as e:  # all or nothing: the index is as it was
                        raise untimed(txns, e) from None
                self._tail = chunk.tail
        if self._tail is not None and not self._tail.torn:
            t = self._tail
            raise UserError(f"the journal does not verify from byte {t.offset}: {t.reason}; nothing past it was "
                            "read: run `tx doctor`")

    def _rebuild(self) -> None:
        tail: list[Tail] = []

        def stream() -> Iterator[Chunk]:
            for chunk in self.journal.chunks(""):
                if chunk.tail is not None:
                    tail.append(chunk.tail)
                yield chunk

        self.index.rebuild(stream())
        self._tail = tail[0] if tail else None

    def fresh(self) -> Index:
        """The index, caught up with the journal (takes the lock only if it is behind)."""
        idx = self.index
        if self._locked or (idx.meta("position") or "") == self.journal.end():
            return idx
        with self.locked():
            pass
        return idx

    def locked(self) -> AbstractContextManager[Index]:
        """Hold the write lock with a caught-up index: check-then-append is race-free inside."""
        if self._locked:  # already held (nested): the same index, nothing more to do
            return nullcontext(self.index)
        return self._lock()

    @contextmanager
    def _lock(self) -> Iterator[Index]:
        # A database journal (SharedJournal) locks in a transaction that spans hosts; the others flock.
        shared = self.journal if isinstance(self.journal, SharedJournal) else None
        with shared.transaction(self.lock_timeout) if shared else file_lock(self.journal.lock_path(),
                                                                           timeout=self.lock_timeout):
            self._locked = True
            try:
                self._catch_up()
                yield self.index
            finally:
                self._locked = False

    def append(self, txn: Txn) -> Appended:
        return self.append_many([txn])[0]

    def append_many(self, txns: list[Txn], *, keep_dates: bool = False) -> list[Appended]:
        """Append atomically (all new ones in one write, all or nothing); equal replays are no-ops.

        ``keep_dates`` (imports of verified exports): a transaction's own ``ts`` is kept even if older
        than the ledger's last one; it may never be later than now."""
        if self._locked:  # inside the caller's locked() (a payment checks, then writes): the same index
            return self._append(self.index, txns, keep_dates)
        with self._lock() as idx:
            return self._append(idx, txns, keep_dates)

    def _append(self, idx: Index, txns: list[Txn], keep_dates: bool) -> list[Appended]:
        slots: list[Appended | tuple[str, bool]] = []  # in order: known, or (id, created) of a new one
        new: list[Txn] = []
        seen: dict[str, Txn] = {}
        now = ts_text(self.clock())
        # On the system clock (every production path) dates only move forward.  A clock a test or the
        # simulation injects is trusted to rewind (the simulation interleaves agents' sessions).
        strict = self._clock is None and not clock_mod.is_injected()
        floor = idx.last_ts() if strict else ""
        if now < floor:
            raise UserError(f"the clock says {now} but the ledger's last transaction is dated {floor}: "
                            "transactions are never dated before the last one (fix the clock, or wait)")
        for t in txns:
            old = seen.get(t.id) or idx.get(t.id)
            if old is not None:
                if old.fingerprint() != t.fingerprint():
                    raise IdConflict(f"transaction id {t.id} already used with different content")
                slots.append((t.id, False) if t.id in seen else Appended(old, False))
                continue
            ts = check_ts(t.ts, f"transaction {t.id}: ts") if t.ts else now  # ts_text's form is canonical
            if ts > now:
                raise UserError(f"transaction {t.id} is dated {ts}, after now ({now})")
            if not keep_dates and ts < floor:
                raise UserError(f"transaction {t.id} is dated {ts}, before the ledger's last transaction "
                                f"({floor})")
            if t.ts != ts:
                t = t.dated(ts)
            seen[t.id] = t
            new.append(t)
            slots.append((t.id, True))
        if new:
            new = self.journal.seal(new, idx.meta("last_hash") or "")
            _check(idx, new)
            self._before_write(idx)
            pos = self.journal.append(new)
            idx.add(new, pos, new[-1].hash)
        if len(new) == len(slots):  # every one new (the usual write): the slots are ``new`` in order
            return [Appended(t, True) for t in new]
        sealed = {t.id: t for t in new}
        return [s if isinstance(s, Appended) else Appended(sealed[s[0]], s[1]) for s in slots]

    def _before_write(self, idx: Index) -> None:
        """Writers append only to a journal that ends where the index stopped: a torn tail (never
        acknowledged) is moved to its quarantine file first; anything else was refused by the catch-up."""
        tail = self._tail
        if tail is not None and tail.torn:
            self.journal.set_aside(tail)
            self._tail = None
        if (idx.meta("position") or "") != self.journal.end():
            self._catch_up()
            if (idx.meta("position") or "") != self.journal.end():
                raise UserError("the journal changed under the lock; nothing written: run `tx doctor`")

    # --- reads -------------------------------------------------------------------
    def get(self, id: str) -> Txn | None:
        return self.fresh().get(id)

    def balance(self, agent: str) -> Balance:
        return self.fresh().balance(agent)


def _check(idx: Index, txns: list[Txn]) -> None:
    """Refuse (before any write) a batch that could not be stored, indexed and read back exactly."""
    batch = 0
    for t in txns:
        if not _plain(t) and Txn.from_hashed(json.loads(canonical_hashed(t.hashed())), t.hash) != t:
            raise UserError(f"transaction {t.id} does not survive being stored (a field is not plain text or a "
                            "whole number)")
        batch += abs(t.amount)
    # Every running total is a signed sum of some indexed amounts: none can pass MAX_TOTAL while all of them
    # together stay within it (the index's volume), so the totals need no look-up then.
    volume = idx.volume()
    if volume is not None and volume + batch <= MAX_TOTAL:
        return
    # Every running total the batch moves, from the index's value (or the batch's own so far): each must stay
    # within +-MAX_TOTAL.  Written out (no helper call per total): the ledger checks this before every write.
    running: dict[tuple[str, ...], int] = {}
    kinds: dict[str, dict[str, int]] = {}
    for t in txns:
        amount = t.amount
        key: tuple[str, ...] = ("account", t.payer)
        value = (running[key] if key in running else idx.account(t.payer)) - amount
        if not -MAX_TOTAL <= value <= MAX_TOTAL:
            _beyond(value, "the balance of {}", t.payer)
        running[key] = value
        key = ("account", t.payee)
        value = (running[key] if key in running else idx.account(t.payee)) + amount
        if not -MAX_TOTAL <= value <= MAX_TOTAL:
            _beyond(value, "the balance of {}", t.payee)
        running[key] = value
        agent, kind = t.agent, t.kind
        if agent:
            by_kind = kinds.get(agent)
            if by_kind is None:
                by_kind = kinds[agent] = idx.kind_totals(agent)
            key = ("kind", agent, kind)
            value = (running[key] if key in running else by_kind.get(kind, 0)) + amount
            if not -MAX_TOTAL <= value <= MAX_TOTAL:
                _beyond(value, "{}'s total of {}", agent, kind)
            running[key] = value
            if kind in EARN_KINDS:
                key = ("earned", agent)
                if key in running:
                    value = running[key]
                else:
                    value = 0
                    for k in EARN_KINDS:
                        value += by_kind.get(k, 0)
                value += amount
                if not -MAX_TOTAL <= value <= MAX_TOTAL:
                    _beyond(value, "{}'s total earned", agent)
                running[key] = value
        contract = t.breakdown.get("contract")
        if contract and kind in EARN_KINDS:
            key = ("contract", str(contract))
            value = (running[key] if key in running else idx.contract_paid(str(contract))) + amount
            if not -MAX_TOTAL <= value <= MAX_TOTAL:
                _beyond(value, "what contract {} paid", contract)
            running[key] = value
        if t.ref.startswith("pool:"):
            key = ("pool", t.ref, agent, kind)
            value = (running[key] if key in running else idx.pool_totals(t.ref).get((agent, kind), (0, 0))[0]) \
                + amount
            if not -MAX_TOTAL <= value <= MAX_TOTAL:
                _beyond(value, "pool {} total", t.ref[5:])
            running[key] = value


def _beyond(value: int, what: str, *about: object) -> NoReturn:
    raise UserError(f"{what.format(*about)} would reach {fmt(value)} tokens, beyond the ledger's maximum of "
                    f"+-{fmt(MAX_TOTAL)}; nothing written")


_PLAIN_INT = 2**63  # whole numbers this small print and parse back exactly


def _plain(t: Txn) -> bool:
    """Every stored field exactly ``str`` or a modest ``int`` (the two tables: ``str`` keys, ``str`` or ``int``
    values): such a record always survives the JSON round trip, so only other records are put through it."""
    if type(t.amount) is not int or not -_PLAIN_INT < t.amount < _PLAIN_INT:
        return False
    for meta in (t.source, t.breakdown):
        if type(meta) is Table:
            continue  # checked by make_txn, read-only since
        if type(meta) is not dict:
            return False
        for k, v in meta.items():
            if type(k) is not str:
                return False
            kind = type(v)
            if kind is not str and (kind is not int or not -_PLAIN_INT < v < _PLAIN_INT):
                return False
    return (type(t.id) is type(t.kind) is type(t.payer) is type(t.payee) is type(t.agent) is type(t.project)
            is type(t.description) is type(t.ref) is type(t.ts) is type(t.prev) is str)
