"""The SQLite index: derived state (balances, ids, windows, holds, pools), rebuildable at any time.

A little long: the schema, the incremental ``add`` and the streaming ``rebuild`` must agree column
for column, so they stay side by side.

Two ways in: ``add`` (a few new transactions, one SQLite transaction, checks ids) and ``rebuild``
(a whole journal streamed in: bulk inserts into a fresh file without secondary indexes, totals
folded in Python (bulk.py), indexes built afterwards, then the file is renamed over the old one, so
a crash leaves either the old index or the complete new one).  A corrupt or foreign file raises
``IndexUnreadable`` (one line); the ledger then rebuilds it.
"""

from __future__ import annotations

import gc
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from token_exchange.amounts import Units
from token_exchange.errors import IdConflict, UserError
from token_exchange.ledger.protocols import Chunk
from token_exchange.ledger.timestamps import ts_micros
from token_exchange.ledger.txn import EARN_KINDS, SPEND_KINDS, Balance, Txn, canonical
from token_exchange.storage import fsync_dir

TABLES = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE txns(seq INTEGER PRIMARY KEY, id TEXT NOT NULL, ts INTEGER NOT NULL,
  kind TEXT NOT NULL, agent TEXT NOT NULL, amount INTEGER NOT NULL,
  ref TEXT NOT NULL, hash TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE accounts(account TEXT PRIMARY KEY, balance INTEGER NOT NULL);
CREATE TABLE stats(agent TEXT NOT NULL, kind TEXT NOT NULL, total INTEGER NOT NULL,
  count INTEGER NOT NULL, PRIMARY KEY(agent, kind));
CREATE TABLE projects(agent TEXT NOT NULL, project TEXT NOT NULL, earned INTEGER NOT NULL,
  PRIMARY KEY(agent, project));
CREATE TABLE contracts(contract TEXT PRIMARY KEY, paid INTEGER NOT NULL);
CREATE TABLE holds(account TEXT PRIMARY KEY, agent TEXT NOT NULL, amount INTEGER NOT NULL,
  ts INTEGER NOT NULL, expires INTEGER NOT NULL);
CREATE TABLE pool_stats(pool TEXT NOT NULL, agent TEXT NOT NULL, kind TEXT NOT NULL,
  total INTEGER NOT NULL, count INTEGER NOT NULL, PRIMARY KEY(pool, agent, kind));
"""
# Secondary indexes: created after a bulk load (sorting once beats a million B-tree inserts).
INDEXES = """
CREATE UNIQUE INDEX txns_id ON txns(id);
CREATE INDEX txns_agent_seq ON txns(agent, seq);
CREATE INDEX txns_window ON txns(agent, kind, ts);
CREATE INDEX txns_ref ON txns(ref) WHERE ref != '';
CREATE INDEX holds_agent ON holds(agent);
CREATE INDEX holds_expires ON holds(expires) WHERE expires > 0;
"""
ALL_TABLES = ("meta", "txns", "accounts", "stats", "projects", "contracts", "holds", "pool_stats")
# 4: ``data`` holds exactly the text the hash covers (amount in units), one encoding per transaction;
# payer and payee live only there (no query filters on them).
INDEX_VERSION = "4"


class IndexUnreadable(UserError):
    """index.sqlite is corrupt, truncated or not ours."""


def _row(t: Txn) -> tuple[Any, ...]:
    return (t.id, ts_micros(t.ts), t.kind, t.agent, t.amount, t.ref, t.hash,
            canonical(t.hashed()))


def _load(data: str, hash: str) -> Txn:
    return Txn.from_hashed(json.loads(data), hash)


def _remove_stale(path: Path) -> None:
    """Delete what rebuilds that crashed left next to ``path`` (``.NAME.rebuild-PID``, PID no longer running)."""
    prefix = f".{path.name}.rebuild-"
    for stale in path.parent.glob(f"{prefix}*"):
        pid = stale.name[len(prefix):].split("-", 1)[0]  # PID, PID-journal, PID-wal, PID-shm
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            stale.unlink(missing_ok=True)
        except OSError:
            pass  # alive (another user's process): not ours to remove


class SqliteIndex:
    """Derived state in SQLite: rebuildable from the journal at any time (implements ``Index``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = self._open(path)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            # Index pages are read through the OS page cache (mmap) instead of copied into SQLite's small default
            # cache: appends and window queries on a large ledger touch a few deep B-tree pages each.
            db.execute("PRAGMA mmap_size=268435456")
            row = db.execute("SELECT value FROM meta WHERE key='version'").fetchone() \
                if db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone() else None
        except sqlite3.DatabaseError as e:
            raise IndexUnreadable(f"{path.name} is unreadable ({e}); it is derived state and will be rebuilt "
                                  "(`tx doctor --repair`)") from None
        if row is not None and row[0] == INDEX_VERSION and not SqliteIndex._schema_ok(db):
            row = None  # our version number over tables that are not ours: start again
        if row is None or row[0] != INDEX_VERSION:
            try:
                db.executescript("".join(f"DROP TABLE IF EXISTS {t};" for t in ALL_TABLES) + TABLES + INDEXES)
                db.executemany("INSERT INTO meta VALUES(?, ?)", (("version", INDEX_VERSION), ("volume", "0")))
            except sqlite3.DatabaseError as e:
                raise IndexUnreadable(f"{path.name} cannot be reset ({e})") from None
        return db

    @staticmethod
    def _schema_ok(db: sqlite3.Connection) -> bool:
        """The tables are exactly ours (cheap: reads sqlite_master only)."""
        have = {name: " ".join(sql.split()) for name, sql in
                db.execute("SELECT name, sql FROM sqlite_master WHERE type='table'")}
        want = {stmt.split("(")[0].split()[-1]: " ".join(stmt.split()) for stmt in TABLES.split(";") if stmt.strip()}
        return have == want

    def reset(self) -> None:
        self.db.executescript("".join(f"DROP TABLE IF EXISTS {t};" for t in ALL_TABLES) + TABLES + INDEXES)
        self.db.executemany("INSERT INTO meta VALUES(?, ?)", (("version", INDEX_VERSION), ("volume", "0")))

    def close(self) -> None:
        self.db.close()

    def meta(self, key: str) -> str | None:
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        except sqlite3.DatabaseError as e:
            raise IndexUnreadable(f"{self.path.name} is unreadable ({e})") from None
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES(?, ?)", (key, value))

    # --- writing ---------------------------------------------------------------------------------
    def add(self, txns: Iterable[Txn], position: str, last_hash: str | None) -> list[str]:
        dup: list[str] = []
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            last_ts = self.meta("last_ts") or ""
            volume = self.volume()
            for t in txns:
                row = cur.execute("SELECT data, hash FROM txns WHERE id=?", (t.id,)).fetchone()
                if row is not None:
                    if _load(*row).fingerprint() != t.fingerprint():
                        raise IdConflict(f"transaction {t.id} exists with different content")
                    dup.append(t.id)
                    continue
                self._insert(cur, t)
                last_ts = max(last_ts, t.ts)
                if volume is not None:
                    volume += abs(t.amount)
            cur.execute("INSERT OR REPLACE INTO meta VALUES('position', ?)", (position,))
            cur.execute("INSERT OR REPLACE INTO meta VALUES('last_ts', ?)", (last_ts,))
            if volume is not None:
                cur.execute("INSERT OR REPLACE INTO meta VALUES('volume', ?)", (str(volume),))
            if last_hash is not None:
                cur.execute("INSERT OR REPLACE INTO meta VALUES('last_hash', ?)", (last_hash,))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return dup

    def _insert(self, cur: sqlite3.Cursor, t: Txn) -> None:
        cur.execute("INSERT INTO txns(id, ts, kind, agent, amount, ref, hash, data) VALUES(?,?,?,?,?,?,?,?)",
                    _row(t))
        upsert = "INSERT INTO accounts VALUES(?, ?) ON CONFLICT(account) DO UPDATE SET balance = balance + ?"
        cur.execute(upsert, (t.payer, -t.amount, -t.amount))
        cur.execute(upsert, (t.payee, t.amount, t.amount))
        if t.agent:
            cur.execute("INSERT INTO stats VALUES(?, ?, ?, 1) ON CONFLICT(agent, kind) DO UPDATE"
                        " SET total = total + excluded.total, count = count + 1", (t.agent, t.kind, t.amount))
            if t.kind in EARN_KINDS and t.project:
                cur.execute("INSERT INTO projects VALUES(?, ?, ?) ON CONFLICT(agent, project) DO UPDATE"
                            " SET earned = earned + excluded.earned", (t.agent, t.project, t.amount))
        contract = t.breakdown.get("contract")
        if contract and t.kind in EARN_KINDS:
            cur.execute("INSERT INTO contracts VALUES(?, ?) ON CONFLICT(contract) DO UPDATE"
                        " SET paid = paid + excluded.paid", (contract, t.amount))
        # Open reservations (hold:ID accounts with money in them), so limits never scan history.
        # A hold whose breakdown has ``ttl`` (seconds) expires at ts + ttl.
        if t.payee.startswith("hold:"):
            ttl = t.breakdown.get("ttl", 0)
            expires = ts_micros(t.ts) + ttl * 1_000_000 if isinstance(ttl, int) and ttl > 0 else 0
            cur.execute("INSERT INTO holds VALUES(?, ?, ?, ?, ?) ON CONFLICT(account) DO UPDATE"
                        " SET amount = amount + excluded.amount", (t.payee, t.agent, t.amount, ts_micros(t.ts),
                                                                   expires))
        if t.payer.startswith("hold:"):
            cur.execute("UPDATE holds SET amount = amount - ? WHERE account=?", (t.amount, t.payer))
            cur.execute("DELETE FROM holds WHERE account=? AND amount <= 0", (t.payer,))
        # Per-pool, per-agent totals by kind (contribute/credit/refund/pool_spend), see pools.py.
        if t.ref.startswith("pool:"):
            cur.execute("INSERT INTO pool_stats VALUES(?, ?, ?, ?, 1) ON CONFLICT(pool, agent, kind) DO UPDATE"
                        " SET total = total + excluded.total, count = count + 1", (t.ref, t.agent, t.kind, t.amount))

    def rebuild(self, chunks: Iterable[Chunk]) -> None:
        """Stream a whole journal into a new file next to this one, then rename it into place."""
        tmp = self.path.with_name(f".{self.path.name}.rebuild-{os.getpid()}")
        _remove_stale(self.path)
        for p in (tmp, Path(f"{tmp}-journal")):
            p.unlink(missing_ok=True)
        from token_exchange.ledger import bulk  # the rebuild's fold: no append or query (every hook) needs it

        db = sqlite3.connect(tmp, isolation_level=None)
        # A bulk load allocates millions of short-lived containers that hold no cycles; the cyclic collector
        # would walk them again and again (about a third of the time).  Reference counting frees them.
        collecting = gc.isenabled()
        gc.disable()
        try:
            db.execute("PRAGMA page_size=8192")
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            # Appending rows touches only the B-tree's right edge: a small cache keeps the working set in the CPU's
            # caches (a large one is slower here, measured); the index builds below sort, and get 64 MiB.
            db.execute("PRAGMA cache_size=-8192")
            db.executescript(TABLES)
            db.execute("BEGIN")
            position, last_hash, last_ts, volume = bulk.load(db, chunks)
            try:
                if db.in_transaction:
                    db.execute("COMMIT")
                db.execute("PRAGMA cache_size=-65536")
                db.executescript(INDEXES)
            except sqlite3.IntegrityError:
                raise UserError("the journal holds one transaction id twice; run `tx doctor`") from None
            db.executemany("INSERT INTO meta VALUES(?, ?)", [("version", INDEX_VERSION), ("position", position),
                                                              ("last_hash", last_hash), ("last_ts", last_ts),
                                                              ("volume", str(volume))])
            # In WAL mode already (as ``_open`` wants it), so opening it never rewrites and syncs the whole file.
            db.execute("PRAGMA journal_mode=WAL")
            db.close()
            # No fsync: the index is derived.  If the machine dies before these pages reach the disk, the
            # renamed file is unreadable or behind, and the next command rebuilds it (IndexUnreadable).
        except BaseException:
            db.close()
            tmp.unlink(missing_ok=True)
            raise
        finally:
            if collecting:
                gc.enable()
        self.db.close()
        for suffix in ("-wal", "-shm"):  # the old file's WAL must never be replayed onto the new one
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
        self.db = self._open(self.path)

    def volume(self) -> Units | None:
        """From ``meta`` (None in an index written before it was kept: rebuilt, it has it again)."""
        text = self.meta("volume")
        return int(text) if text is not None and text.isascii() and text.isdigit() and len(text) <= 30 else None

    # --- queries -----------------------------------------------------------------
    def get(self, id: str) -> Txn | None:
        row = self.db.execute("SELECT data, hash FROM txns WHERE id=?", (id,)).fetchone()
        return _load(*row) if row else None

    def account(self, account: str) -> Units:
        row = self.db.execute("SELECT balance FROM accounts WHERE account=?", (account,)).fetchone()
        return row[0] if row else 0

    def accounts(self, prefix: str = "") -> dict[str, Units]:
        rows = self.db.execute("SELECT account, balance FROM accounts WHERE account >= ? AND account < ?",
                               (prefix, prefix + "\U0010ffff")).fetchall()
        return dict(rows)

    def kind_totals(self, agent: str) -> dict[str, Units]:
        return dict(self.db.execute("SELECT kind, total FROM stats WHERE agent=?", (agent,)).fetchall())

    def balance(self, agent: str) -> Balance:
        kinds = self.kind_totals(agent)
        projects = dict(self.db.execute("SELECT project, earned FROM projects WHERE agent=?", (agent,)).fetchall())
        taken_back = 0
        if kinds.get("reversal"):  # earnings clawed back (a double payment, a revert, a reopened issue)
            row = self.db.execute("SELECT COALESCE(SUM(amount), 0) FROM txns WHERE agent=? AND kind='reversal' AND "
                                  "json_extract(data, '$.payer')=? AND "
                                  "json_extract(data, '$.breakdown.original_kind') IN ('earn', 'award')",
                                  (agent, agent)).fetchone()
            taken_back = int(row[0])
        return Balance(agent, self.account(agent), sum(kinds.get(k, 0) for k in EARN_KINDS) - taken_back,
                       sum(kinds.get(k, 0) for k in SPEND_KINDS), kinds, projects)

    def agents(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT agent FROM stats WHERE agent != '' ORDER BY agent")]

    def history(self, agent: str, limit: int) -> list[Txn]:
        rows = self.db.execute("SELECT data, hash FROM txns WHERE agent=? ORDER BY seq DESC LIMIT ?", (agent, limit))
        return [_load(*r) for r in rows]

    def window_sum(self, agent: str, kinds: Iterable[str], since_us: int, until_us: int) -> Units:
        kinds = list(kinds)
        marks = ",".join("?" * len(kinds))
        row = self.db.execute(f"SELECT COALESCE(SUM(amount), 0) FROM txns WHERE agent=? AND kind IN ({marks})"
                              f" AND ts >= ? AND ts <= ?", (agent, *kinds, since_us, until_us)).fetchone()
        return int(row[0])

    def window_entries(self, agent: str, kinds: Iterable[str], since_us: int, until_us: int
                       ) -> list[tuple[int, Units]]:
        """(ts, amount) of recent entries, oldest first: to say when capacity frees up."""
        kinds = list(kinds)
        marks = ",".join("?" * len(kinds))
        return self.db.execute(f"SELECT ts, amount FROM txns WHERE agent=? AND kind IN ({marks}) AND ts >= ?"
                               f" AND ts <= ? ORDER BY ts", (agent, *kinds, since_us, until_us)).fetchall()

    def open_holds(self, agent: str) -> list[tuple[str, Units, int, int]]:
        """(account, amount, ts, expires) of the agent's open reservations, oldest first."""
        return self.db.execute("SELECT account, amount, ts, expires FROM holds WHERE agent=? ORDER BY ts, account",
                               (agent,)).fetchall()

    def expired_holds(self, now_us: int) -> list[tuple[str, str, Units]]:
        """(account, agent, amount) of open reservations whose expiry is at or before ``now_us``."""
        return self.db.execute("SELECT account, agent, amount FROM holds WHERE expires > 0 AND expires <= ?"
                               " ORDER BY expires, account", (now_us,)).fetchall()

    def pool_totals(self, pool_ref: str) -> dict[tuple[str, str], tuple[Units, int]]:
        """{(agent, kind): (total, count)} of the transactions with ``ref = pool_ref``."""
        rows = self.db.execute("SELECT agent, kind, total, count FROM pool_stats WHERE pool=?", (pool_ref,))
        return {(a, k): (v, n) for a, k, v, n in rows}

    def by_ref(self, ref: str) -> list[Txn]:
        # "ref != ''" lets SQLite use the partial index txns_ref (with a bound parameter it cannot infer it).
        rows = self.db.execute("SELECT data, hash FROM txns WHERE ref=? AND ref != '' ORDER BY seq", (ref,))
        return [_load(*r) for r in rows]

    def with_id_prefix(self, prefix: str) -> list[Txn]:
        # A range over the id index; ids never hold the character after the prefix's last one + 1.
        hi = prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\U0010ffff"
        rows = self.db.execute("SELECT data, hash FROM txns WHERE id >= ? AND id < ? ORDER BY seq", (prefix, hi))
        return [_load(*r) for r in rows]

    def contract_paid(self, contract: str) -> Units:
        row = self.db.execute("SELECT paid FROM contracts WHERE contract=?", (contract,)).fetchone()
        return row[0] if row else 0

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM txns").fetchone()[0])

    def last_ts(self) -> str:
        return self.meta("last_ts") or ""

    def iter_txns(self, kinds: Iterable[str] | None = None) -> Iterator[Txn]:
        if kinds is None:
            rows = self.db.execute("SELECT data, hash FROM txns ORDER BY seq")
        else:
            kinds = list(kinds)
            rows = self.db.execute(f"SELECT data, hash FROM txns WHERE kind IN ({','.join('?' * len(kinds))})"
                                   f" ORDER BY seq", kinds)
        for r in rows:
            yield _load(*r)
