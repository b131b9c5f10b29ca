"""``tx migrate --to BACKEND``: move a home's ledger to another backend, every id, date and hash kept.

The records are copied as they are (``Journal.append`` of the sealed transactions: never re-sealed,
never re-dated), after ``tx doctor`` has verified the source, and the target is verified by
``tx doctor`` before the home's config switches to it.  Between the two chained journals (TOML and
PostgreSQL) every ``prev`` and ``hash`` is kept, so checkpoints and exports stay valid.  Git notes
are not a chain (each record hashes only itself, ``backends/notes.py``): to or from notes the
hashes must be re-sealed in the target's form, which the operator asks for with ``reseal``; ids,
dates, contents and balances are still kept.

A target that already holds a prefix of the source (the same transactions in the same order, e.g.
from an earlier migration the other way) receives only the rest; any other non-empty target is
refused.  The source is never changed: it stays as the backup of what was moved.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from token_exchange.errors import UserError
from token_exchange.ledger.backends import NAMES, journal_class
from token_exchange.ledger.doctor import Report, check
from token_exchange.ledger.ledger import Ledger
from token_exchange.ledger.protocols import Journal
from token_exchange.ledger.txn import Txn
from token_exchange.services.exchange import Exchange

CHAINED = ("toml", "postgres")
BATCH = 4096


@dataclass
class Migrated:
    source: str
    target: str
    transactions: int
    copied: int
    hashes_kept: bool
    source_report: Report
    target_report: Report
    switched: bool
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"from": self.source, "to": self.target, "transactions": self.transactions, "copied": self.copied,
                "hashes_kept": self.hashes_kept, "source_doctor": self.source_report.to_json(),
                "target_doctor": self.target_report.to_json(), "switched": self.switched, "notes": self.notes}


def _target_journal(ex: Exchange, to: str, dsn: str | None) -> Journal:
    cls = journal_class(to)
    if to == "postgres":
        journal: Journal = cls(ex.home, ex.cfg, dsn=dsn)
    else:
        if dsn:
            raise UserError("--dsn only applies to --to postgres")
        journal = cls(ex.home, ex.cfg)
    return journal


def _prefix(source: list[Txn], target: list[Txn], keep: bool) -> int:
    """How many of ``source`` the target already holds, in order (UserError when it holds anything else)."""
    if len(target) > len(source):
        raise UserError(f"the target already holds {len(target)} transactions, more than the source's "
                        f"{len(source)}; nothing migrated")
    for n, (s, t) in enumerate(zip(source, target, strict=False)):
        same = (s.id, s.ts, s.hash, s.prev) == (t.id, t.ts, t.hash, t.prev) if keep else \
            (s.id, s.ts, s.fingerprint()) == (t.id, t.ts, t.fingerprint())
        if not same:
            raise UserError(f"the target already holds other transactions (its transaction {n + 1}, {t.id}, is not "
                            f"the source's {s.id}); nothing migrated")
    return len(target)


def _drop_local_index(home: Path) -> None:
    """The file backends share ``index.sqlite`` (derived): the target builds its own from its journal."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{home / 'index.sqlite'}{suffix}").unlink(missing_ok=True)


def migrate(ex: Exchange, to: str, dsn: str | None = None, reseal: bool = False) -> Migrated:
    source_name = ex.cfg.backend
    if to not in NAMES:
        raise UserError(f"--to must be one of {', '.join(NAMES)}, not {to[:20]!r}")
    if to == source_name and not (to == "postgres" and dsn):
        raise UserError(f"the home already uses the {to} backend")
    keep = source_name in CHAINED and to in CHAINED
    if not keep and not reseal:
        raise UserError(f"git notes are not a hash chain, so moving {source_name} -> {to} must re-seal every hash "
                        "(ids, dates, contents and balances are kept): pass --reseal to do that")
    src = ex.ledger
    before = check(src)
    if not before.ok:
        raise UserError(f"`tx doctor` finds the source ({source_name}) not consistent: {before.problems[0]}; nothing "
                        "migrated")
    # The chained journals in chain order; git notes as their index settled them (one record per id).
    txns = list(src.fresh().iter_txns()) if source_name == "notes" else src.journal.read_all().txns
    src.close()

    target = _target_journal(ex, to, dsn)
    target.setup()
    if to != "postgres":
        _drop_local_index(ex.home)
    dst = Ledger(target, ex.home / "index.sqlite")
    copied = 0
    try:
        with dst.locked() as idx:
            have = target.read_all()
            if have.tail is not None:
                raise UserError(f"the target does not verify ({have.tail.reason}); nothing migrated")
            done = _prefix(txns, have.txns, keep)
            rest = txns[done:]
            last = idx.meta("last_hash") or ""
            if not keep and to in CHAINED:
                rest = target.seal(rest, last)
            elif not keep:
                rest = target.seal(rest, "")
            for i in range(0, len(rest), BATCH):
                batch = rest[i:i + BATCH]
                pos = target.append(batch)
                idx.add(batch, pos, batch[-1].hash)
                copied += len(batch)
        after = check(dst)
        moved_ids = [t.id for t in dst.fresh().iter_txns()]
    except sqlite3.Error as e:
        raise UserError(f"the target's index failed: {e}") from None
    finally:
        dst.close()
    notes: list[str] = []
    if sorted(moved_ids) != sorted(t.id for t in txns):
        after.problems.append("the target does not hold exactly the source's transaction ids")
    switched = False
    if after.ok:
        switched = _switch(ex, to, dsn, notes)
    if not keep:
        notes.append("hashes re-sealed for the target's format (git notes are not a chain); ids, dates, contents "
                     "and balances kept")
    return Migrated(source_name, to, len(txns), copied, keep, before, after, switched, notes)


def _switch(ex: Exchange, to: str, dsn: str | None, notes: list[str]) -> bool:
    """Point the home's config.toml at the target (the DSN only when it holds no password: config.toml is in git)."""
    from token_exchange.rules.config import edit_config

    store_dsn = False
    if dsn:
        from token_exchange.ledger.backends.postgres import has_password

        store_dsn = not has_password(dsn)
        if not store_dsn:
            notes.append("the DSN holds a password, so it was not written to config.toml: set TOKEN_EXCHANGE_DSN "
                         "(or use ~/.pgpass) on every host")

    def edit(doc: Any) -> None:
        doc["exchange"]["backend"] = to
        if store_dsn:
            doc["exchange"]["dsn"] = dsn

    edit_config(ex.home / "config.toml", edit)
    return True
