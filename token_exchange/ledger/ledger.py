"""The ledger: append-only, idempotent, hash-chained transactions in double entry.

One interface (``Ledger``) over pluggable *journals* (the source of truth: a TOML
file, or git notes) plus a derived SQLite *index* (balances, ids, windows) that
can always be rebuilt from the journal.  Reads never re-parse the journal: the
index remembers how far it has read (a byte offset, a notes commit) and only
the new tail is read.

Every transaction moves ``amount`` units from ``payer`` to ``payee``; accounts
are agent names, ``pool:NAME``, ``hold:ID`` and ``world:*`` (the outside), so
the sum of all account balances is always zero.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from token_exchange.amounts import MAX_UNITS, Units, fmt
from token_exchange.errors import IdConflict, UserError, clean_text
from token_exchange.storage import file_lock

Clock = Callable[[], datetime]

# open: starting balance; earn: commit; award: direct/issue; spend: LLM charge; hold/settle/release:
# two-phase reservations; contribute/pool_spend/refund/credit: pools; transfer; reversal: corrections;
# pool: a zero-amount pool metadata record (create/join/leave/dissolve, see pools.py); link: a zero-amount record
# of further ids (a rewritten commit's) under which an existing payment is known (see services/exchange.py).
# Settlement (services/settlement.py): provisional: an award recorded before the commit lands; void: it taken
# back in full (the commit settled or the award expired); clawback: a settled award reversed (its commit was
# reverted); marker: a zero-amount record of how far the default branch was settled.
KINDS = ("open", "earn", "award", "spend", "hold", "settle", "release", "transfer", "contribute", "pool_spend",
         "refund", "credit", "reversal", "pool", "link", "provisional", "void", "clawback", "marker")
DEBT_KINDS = ("void", "clawback")  # may take an agent below zero: the award they reverse was already spent
EARN_KINDS = ("earn", "award")
SPEND_KINDS = ("spend", "settle")
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/+=-]{0,199}")
ACCOUNT_RE = re.compile(r"(world|pool|hold):[A-Za-z0-9_.:@/+=-]{1,200}|[a-z0-9][a-z0-9_.-]{0,63}")
META_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,40}")
GENESIS = "world:genesis"
REWARDS = "world:rewards"
LLM = "world:llm"


def utcnow() -> datetime:
    return datetime.now(UTC)


@lru_cache(maxsize=256)
def ts_text(moment: datetime) -> str:
    """UTC timestamp text (cached: a simulated or fixed clock asks for the same instant many times)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ts_micros(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def is_agent_account(account: str) -> bool:
    return ":" not in account


class Txn(NamedTuple):
    """One immutable transaction.  ``hash`` chains it to ``prev`` (tamper evidence)."""

    id: str
    kind: str
    payer: str
    payee: str
    amount: Units
    agent: str = ""
    project: str = ""
    description: str = ""
    source: dict[str, Any] = {}  # never mutated: make_txn and readers always pass their own dicts
    breakdown: dict[str, Any] = {}
    ref: str = ""
    ts: str = ""
    prev: str = ""
    hash: str = ""

    def content(self) -> dict[str, Any]:
        """The fields that make two writes of one id 'the same' (no time, no chain)."""
        return {"id": self.id, "kind": self.kind, "payer": self.payer, "payee": self.payee,
                "amount": self.amount, "agent": self.agent, "project": self.project,
                "description": self.description, "source": self.source, "breakdown": self.breakdown,
                "ref": self.ref}

    def fingerprint(self) -> str:
        return _digest(self.content())

    def compute_hash(self) -> str:
        return _digest({**self.content(), "ts": self.ts, "prev": self.prev})

    def to_json(self) -> dict[str, Any]:
        d = self.content()
        d["amount"] = fmt(self.amount)
        d.update(ts=self.ts, prev=self.prev, hash=self.hash)
        return d

    def for_json(self) -> dict[str, Any]:
        """A JSON encoder would otherwise encode this NamedTuple field by field (amount in units)."""
        return self.to_json()

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Txn:
        from token_exchange.amounts import to_units

        return cls(id=d["id"], kind=d["kind"], payer=d["payer"], payee=d["payee"],
                   amount=to_units(str(d["amount"]), what="amount", allow_zero=True),
                   agent=d.get("agent", ""), project=d.get("project", ""), description=d.get("description", ""),
                   source=dict(d.get("source", {})), breakdown=dict(d.get("breakdown", {})), ref=d.get("ref", ""),
                   ts=d.get("ts", ""), prev=d.get("prev", ""), hash=d.get("hash", ""))


def _digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
                          .encode("utf-8")).hexdigest()


def make_txn(id: str, kind: str, payer: str, payee: str, amount: Units, **kw: Any) -> Txn:
    """Build a validated transaction; raises UserError on anything malformed."""
    if not isinstance(id, str) or not ID_RE.fullmatch(id):
        raise UserError(f"invalid transaction id {str(id)[:60]!r} (1-200 of A-Z a-z 0-9 _ . : @ / + = -)")
    if kind not in KINDS:
        raise UserError(f"invalid transaction kind {kind!r}")
    for acct in (payer, payee):
        if not ACCOUNT_RE.fullmatch(acct):
            raise UserError(f"invalid account {acct[:60]!r}")
    if payer == payee:
        raise UserError("payer and payee must differ")
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= MAX_UNITS:
        raise UserError(f"invalid amount {amount!r}")
    for name in ("source", "breakdown"):
        meta = kw.get(name) or {}
        for k, v in meta.items():
            if not META_KEY_RE.fullmatch(k):
                raise UserError(f"invalid {name} key {k!r}")
            if isinstance(v, float) or not isinstance(v, (str, int)):
                raise UserError(f"{name}.{k} must be text or a whole number")
            if isinstance(v, str) and not (len(v) <= 500 and v.isprintable()):
                meta[k] = clean_text(v, limit=500)
        kw[name] = dict(meta)
    for name, limit in (("project", 200), ("description", 500), ("agent", 64), ("ref", 200)):
        value = kw.get(name)
        if value is not None and not (isinstance(value, str) and len(value) <= limit and value.isprintable()):
            kw[name] = clean_text(str(value), limit=limit)
    return Txn(id=id, kind=kind, payer=payer, payee=payee, amount=amount, **kw)


class Appended(NamedTuple):
    """Outcome of an append: ``created`` False means the id existed with equal content."""

    txn: Txn
    created: bool


class Torn(NamedTuple):
    """An incomplete trailing write found in a journal (never acknowledged to anyone)."""

    offset: int
    data: bytes


class Journal(Protocol):
    """Where transactions really live.  Positions are opaque strings."""

    chained: bool

    def end(self) -> str: ...
    def read_from(self, position: str) -> tuple[list[Txn], str, Torn | None]: ...
    def append(self, txns: list[Txn]) -> str: ...
    def cut_torn(self, torn: Torn) -> None: ...
    def read_all(self) -> tuple[list[Txn], Torn | None]: ...
    def lock_path(self) -> Path: ...


class Balance(NamedTuple):
    agent: str
    balance: Units
    earned: Units
    spent: Units
    by_kind: dict[str, Units]
    projects: dict[str, Units]

    def to_json(self) -> dict[str, Any]:
        from token_exchange.amounts import to_decimal

        return {"agent": self.agent, "balance": to_decimal(self.balance), "earned": to_decimal(self.earned),
                "spent": to_decimal(self.spent),
                "by_kind": {k: to_decimal(v) for k, v in sorted(self.by_kind.items())},
                "projects": {k: to_decimal(v) for k, v in sorted(self.projects.items())}}

    def for_json(self) -> dict[str, Any]:
        return self.to_json()


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS txns(seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, ts INTEGER NOT NULL,
  kind TEXT NOT NULL, agent TEXT NOT NULL, payer TEXT NOT NULL, payee TEXT NOT NULL, amount INTEGER NOT NULL,
  ref TEXT NOT NULL, hash TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS txns_agent_seq ON txns(agent, seq);
CREATE INDEX IF NOT EXISTS txns_window ON txns(agent, kind, ts);
CREATE INDEX IF NOT EXISTS txns_ref ON txns(ref) WHERE ref != '';
CREATE TABLE IF NOT EXISTS accounts(account TEXT PRIMARY KEY, balance INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS stats(agent TEXT NOT NULL, kind TEXT NOT NULL, total INTEGER NOT NULL,
  count INTEGER NOT NULL, PRIMARY KEY(agent, kind));
CREATE TABLE IF NOT EXISTS projects(agent TEXT NOT NULL, project TEXT NOT NULL, earned INTEGER NOT NULL,
  PRIMARY KEY(agent, project));
CREATE TABLE IF NOT EXISTS contracts(contract TEXT PRIMARY KEY, paid INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS holds(account TEXT PRIMARY KEY, agent TEXT NOT NULL, amount INTEGER NOT NULL,
  ts INTEGER NOT NULL, expires INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS holds_agent ON holds(agent);
CREATE INDEX IF NOT EXISTS holds_expires ON holds(expires) WHERE expires > 0;
CREATE TABLE IF NOT EXISTS pool_stats(pool TEXT NOT NULL, agent TEXT NOT NULL, kind TEXT NOT NULL,
  total INTEGER NOT NULL, count INTEGER NOT NULL, PRIMARY KEY(pool, agent, kind));
"""
INDEX_VERSION = "2"


class Index:
    """Derived state in SQLite: rebuildable from the journal at any time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        # Index pages are read through the OS page cache (mmap) instead of copied into SQLite's small default
        # cache: appends and window queries on a large ledger touch a few deep B-tree pages each.
        self.db.execute("PRAGMA mmap_size=1073741824")
        if self.meta("version") != INDEX_VERSION:
            self.reset()

    def reset(self) -> None:
        self.db.executescript("DROP TABLE IF EXISTS meta; DROP TABLE IF EXISTS txns; DROP TABLE IF EXISTS accounts;"
                              "DROP TABLE IF EXISTS stats; DROP TABLE IF EXISTS projects;"
                              "DROP TABLE IF EXISTS contracts; DROP TABLE IF EXISTS holds;"
                              "DROP TABLE IF EXISTS pool_stats;" + SCHEMA)
        self.db.execute("INSERT INTO meta VALUES('version', ?)", (INDEX_VERSION,))

    def close(self) -> None:
        self.db.close()

    def meta(self, key: str) -> str | None:
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        except sqlite3.OperationalError:
            return None
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES(?, ?)", (key, value))

    def add(self, txns: Iterable[Txn], position: str, last_hash: str | None) -> list[str]:
        """Index ``txns`` atomically and advance the position; returns ids already present."""
        dup: list[str] = []
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            for t in txns:
                row = cur.execute("SELECT data FROM txns WHERE id=?", (t.id,)).fetchone()
                if row is not None:
                    if Txn.from_json(json.loads(row[0])).fingerprint() != t.fingerprint():
                        raise IdConflict(f"transaction {t.id} exists with different content")
                    dup.append(t.id)
                    continue
                self._insert(cur, t)
            cur.execute("INSERT OR REPLACE INTO meta VALUES('position', ?)", (position,))
            if last_hash is not None:
                cur.execute("INSERT OR REPLACE INTO meta VALUES('last_hash', ?)", (last_hash,))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return dup

    def _insert(self, cur: sqlite3.Cursor, t: Txn) -> None:
        data = json.dumps(t.to_json(), ensure_ascii=False, separators=(",", ":"))
        cur.execute("INSERT INTO txns(id, ts, kind, agent, payer, payee, amount, ref, hash, data)"
                    " VALUES(?,?,?,?,?,?,?,?,?,?)",
                    (t.id, ts_micros(t.ts), t.kind, t.agent, t.payer, t.payee, t.amount, t.ref, t.hash, data))
        upsert = ("INSERT INTO accounts VALUES(?, ?) ON CONFLICT(account) DO UPDATE SET balance = balance + ?")
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

    # --- queries -----------------------------------------------------------------
    def get(self, id: str) -> Txn | None:
        row = self.db.execute("SELECT data FROM txns WHERE id=?", (id,)).fetchone()
        return Txn.from_json(json.loads(row[0])) if row else None

    def account(self, account: str) -> Units:
        row = self.db.execute("SELECT balance FROM accounts WHERE account=?", (account,)).fetchone()
        return row[0] if row else 0

    def accounts(self, prefix: str = "") -> dict[str, Units]:
        rows = self.db.execute("SELECT account, balance FROM accounts WHERE account >= ? AND account < ?",
                               (prefix, prefix + "\U0010ffff")).fetchall()
        return dict(rows)

    def balance(self, agent: str) -> Balance:
        kinds = dict(self.db.execute("SELECT kind, total FROM stats WHERE agent=?", (agent,)).fetchall())
        projects = dict(self.db.execute("SELECT project, earned FROM projects WHERE agent=?", (agent,)).fetchall())
        return Balance(agent, self.account(agent), sum(kinds.get(k, 0) for k in EARN_KINDS),
                       sum(kinds.get(k, 0) for k in SPEND_KINDS), kinds, projects)

    def agents(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT agent FROM stats WHERE agent != '' ORDER BY agent")]

    def history(self, agent: str, limit: int) -> list[Txn]:
        rows = self.db.execute("SELECT data FROM txns WHERE agent=? ORDER BY seq DESC LIMIT ?", (agent, limit))
        return [Txn.from_json(json.loads(r[0])) for r in rows]

    def window_sum(self, agent: str, kinds: Iterable[str], since_us: int) -> Units:
        kinds = list(kinds)
        marks = ",".join("?" * len(kinds))
        row = self.db.execute(f"SELECT COALESCE(SUM(amount), 0) FROM txns WHERE agent=? AND kind IN ({marks})"
                              f" AND ts >= ?", (agent, *kinds, since_us)).fetchone()
        return row[0]

    def window_entries(self, agent: str, kinds: Iterable[str], since_us: int) -> list[tuple[int, Units]]:
        """(ts, amount) of recent entries, oldest first: to say when capacity frees up."""
        kinds = list(kinds)
        marks = ",".join("?" * len(kinds))
        return self.db.execute(f"SELECT ts, amount FROM txns WHERE agent=? AND kind IN ({marks}) AND ts >= ?"
                               f" ORDER BY ts", (agent, *kinds, since_us)).fetchall()

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
        rows = self.db.execute("SELECT data FROM txns WHERE ref=? AND ref != '' ORDER BY seq", (ref,))
        return [Txn.from_json(json.loads(r[0])) for r in rows]

    def contract_paid(self, contract: str) -> Units:
        row = self.db.execute("SELECT paid FROM contracts WHERE contract=?", (contract,)).fetchone()
        return row[0] if row else 0

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM txns").fetchone()[0]

    def iter_txns(self, kinds: Iterable[str] | None = None) -> Iterator[Txn]:
        if kinds is None:
            rows = self.db.execute("SELECT data FROM txns ORDER BY seq")
        else:
            kinds = list(kinds)
            rows = self.db.execute(f"SELECT data FROM txns WHERE kind IN ({','.join('?' * len(kinds))})"
                                   f" ORDER BY seq", kinds)
        for r in rows:
            yield Txn.from_json(json.loads(r[0]))


def settle(idx: Index, txns: list[Txn]) -> tuple[list[Txn], bool]:
    """Merging journals (``chained = False``, e.g. git notes) can hold two records of one id with
    different content (two clones paid the same change differently).  Every replica settles it the same
    way: the earliest ``(ts, hash)`` wins.  Returns the records to index and whether an already indexed
    record lost (then the caller rebuilds the index).  ``tx doctor`` still reports every such conflict."""
    best: dict[str, Txn] = {}
    for t in txns:
        cur = best.get(t.id)
        if cur is None or (cur.fingerprint() != t.fingerprint() and (t.ts, t.hash) < (cur.ts, cur.hash)):
            best[t.id] = t
    out: list[Txn] = []
    rebuild = False
    for t in txns:
        if best.get(t.id) is not t:
            continue
        old = idx.get(t.id)
        if old is None or old.fingerprint() == t.fingerprint():
            out.append(t)
        elif (t.ts, t.hash) < (old.ts, old.hash):
            rebuild = True
    return out, rebuild


class Ledger:
    """The one ledger interface: idempotent appends under a lock, fast derived reads."""

    def __init__(self, journal: Journal, index_path: Path, clock: Clock = utcnow) -> None:
        self.journal = journal
        self.clock = clock
        self.index_path = index_path
        self._index: Index | None = None
        self._locked = False
        self.lock_timeout = 30.0  # seconds to wait for another writer (hooks wait less)

    @property
    def index(self) -> Index:
        if self._index is None:
            self._index = Index(self.index_path)
        return self._index

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    # --- keeping the index in step with the journal ----------------------------------
    def _catch_up(self, *, writer: bool) -> None:
        idx = self.index
        pos = idx.meta("position") or ""
        if pos == self.journal.end():
            return
        txns, new_pos, torn = self.journal.read_from(pos)
        if torn is not None and writer:
            self.journal.cut_torn(torn)
        last = txns[-1].hash if txns and self.journal.chained else None
        if self.journal.chained and txns:
            expect = idx.meta("last_hash") or ""
            if txns[0].prev != expect:
                raise UserError("ledger chain is broken at the indexed position; run `tx doctor`")
        if not self.journal.chained:
            txns, rebuild = settle(idx, txns)
            if rebuild:  # a record that wins over one already indexed: rebuild from the whole journal
                txns, new_pos, _ = self.journal.read_from("")
                idx.reset()
                txns, _ = settle(idx, txns)
        idx.add(txns, new_pos, last)

    def fresh(self) -> Index:
        """The index, caught up with the journal (takes the lock only if it is behind)."""
        idx = self.index
        if self._locked or (idx.meta("position") or "") == self.journal.end():
            return idx
        with self.locked():
            pass
        return idx

    @contextmanager
    def locked(self) -> Iterator[Index]:
        """Hold the write lock with a caught-up index: check-then-append is race-free inside."""
        if self._locked:
            yield self.index
            return
        with file_lock(self.journal.lock_path(), timeout=self.lock_timeout):
            self._locked = True
            try:
                self._catch_up(writer=True)
                yield self.index
            finally:
                self._locked = False

    def append(self, txn: Txn) -> Appended:
        return self.append_many([txn])[0]

    def append_many(self, txns: list[Txn]) -> list[Appended]:
        """Append atomically (all new ones in one write); equal replays are no-ops."""
        with self.locked() as idx:
            out: list[Appended | None] = []
            new: list[Txn] = []
            seen: dict[str, Txn] = {}
            prev = idx.meta("last_hash") or "" if self.journal.chained else ""
            now = ts_text(self.clock())
            for t in txns:
                old = seen.get(t.id) or idx.get(t.id)
                if old is not None:
                    if old.fingerprint() != t.fingerprint():
                        raise IdConflict(f"transaction id {t.id} already used with different content")
                    out.append(Appended(old, False))
                    continue
                ts, link = t.ts or now, prev if self.journal.chained else ""
                t = t._replace(ts=ts, prev=link, hash=_digest({**t.content(), "ts": ts, "prev": link}))
                if self.journal.chained:
                    prev = t.hash
                seen[t.id] = t
                new.append(t)
                out.append(Appended(t, True))
            if new:
                pos = self.journal.append(new)
                idx.add(new, pos, new[-1].hash if self.journal.chained else None)
            return [o for o in out if o is not None]

    # --- reads -------------------------------------------------------------------
    def get(self, id: str) -> Txn | None:
        return self.fresh().get(id)

    def balance(self, agent: str) -> Balance:
        return self.fresh().balance(agent)
