"""The PostgreSQL journal: one ledger shared by many hosts, with limits that hold across all of them.

Long because a backend is one file behind one protocol (``ledger.protocols``): this one is journal
*and* index in the database (schema, migrations, the locked check-then-write, sync), so adding or
removing it touches this file and the registry only.

Why a database (docs/postgres.md): the file journals serialise writers with a flock, which only
works on one machine, and git notes replicate eventually, so two hosts could each spend an agent's
hourly limit between syncs.  Here every check-then-write (``Ledger.locked()``: limits, balances,
ids, then the append) is ONE database transaction that first takes the ledger's write lock, a
transaction-level advisory lock keyed by the schema (released by the server at COMMIT, ROLLBACK or
when the connection dies).  Every writer extends the one hash chain, so writers are serialised
anyway; while one holds the lock nobody else can write, and each READ COMMITTED statement of the
holder sees everything committed before it.  The limit check and the write can therefore never
interleave with another host's.  Readers never take the lock (MVCC snapshots).  (An advisory lock
rather than ``SELECT ... FOR UPDATE`` of the ``head`` row: waiters for a row every writer updates
re-check its newest version on waking; the lock manager's queue is plain FIFO.)

Tables (in one schema, default ``token_exchange``; a DSN's ``options=-csearch_path=NAME`` picks
another): ``txns`` is the journal (``seq`` 1..N in chain order, ``data`` = exactly the canonical
text the hash covers, ``prev``/``hash`` the chain, the same as ledger.toml's); ``head`` is its end;
``accounts``, ``stats``, ``projects``, ``contracts``, ``holds``, ``pool_stats`` are the index, kept
in the same transaction as each append and rebuildable from ``txns`` (``tx doctor --repair``).  The
schema is created and migrated by this module, versioned in ``schema_version`` (``MIGRATIONS``).

Failures: the server down or unreachable, a lost connection, a lock wait over the timeout: one
line (``DatabaseError``), no traceback, and the transaction is rolled back by the server, so
nothing of it was written.  A connection lost while COMMIT was in flight is the one ambiguous case:
the message says so, and running the same command again with the same id records it once
(transaction ids decide, ``Ledger.append_many``).  The DSN may hold a password: it is never
printed (messages name host, port and database only) and never written to the ledger.

Uses psycopg 3 (the ``postgres`` extra): https://www.psycopg.org/psycopg3/docs/ (autocommit
connection with explicit BEGIN/SAVEPOINT/COMMIT; ``Connection.pipeline()`` batches an append's
statements into one round trip; ``psycopg.conninfo.conninfo_to_dict`` parses the DSN).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING, Any

from token_exchange.amounts import Units
from token_exchange.errors import IdConflict, UserError
from token_exchange.ledger.bulk import Totals
from token_exchange.ledger.index import INDEX_VERSION
from token_exchange.ledger.protocols import Chunk, Index, Tail
from token_exchange.ledger.timestamps import ts_micros
from token_exchange.ledger.txn import EARN_KINDS, SPEND_KINDS, Balance, Txn, canonical, chain, chain_problems

if TYPE_CHECKING:  # pragma: no cover
    import psycopg

    from token_exchange.ledger.ledger import Ledger

DSN_ENV = "TOKEN_EXCHANGE_DSN"
DEFAULT_SCHEMA = "token_exchange"
SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
CHUNK_ROWS = 4096
CONNECT_TIMEOUT = 10  # seconds

# Text keys sort as bytes (COLLATE "C"), as SQLite does: the same order of agents, holds and accounts.
V1 = """
CREATE TABLE head(singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  seq bigint NOT NULL, last_hash text NOT NULL, last_ts text NOT NULL);
INSERT INTO head VALUES (true, 0, '', '');
CREATE TABLE txns(seq bigint PRIMARY KEY, id text COLLATE "C" NOT NULL UNIQUE, ts bigint NOT NULL,
  kind text COLLATE "C" NOT NULL, agent text COLLATE "C" NOT NULL, payer text COLLATE "C" NOT NULL,
  payee text COLLATE "C" NOT NULL, amount bigint NOT NULL, ref text COLLATE "C" NOT NULL,
  prev text NOT NULL, hash text NOT NULL, data text NOT NULL,
  written_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX txns_agent_seq ON txns(agent, seq);
CREATE INDEX txns_window ON txns(agent, kind, ts);
CREATE INDEX txns_ref ON txns(ref) WHERE ref <> '';
CREATE TABLE accounts(account text COLLATE "C" PRIMARY KEY, balance bigint NOT NULL);
CREATE TABLE stats(agent text COLLATE "C" NOT NULL, kind text COLLATE "C" NOT NULL, total bigint NOT NULL,
  count bigint NOT NULL, PRIMARY KEY(agent, kind));
CREATE TABLE projects(agent text COLLATE "C" NOT NULL, project text COLLATE "C" NOT NULL,
  earned bigint NOT NULL, PRIMARY KEY(agent, project));
CREATE TABLE contracts(contract text COLLATE "C" PRIMARY KEY, paid bigint NOT NULL);
CREATE TABLE holds(account text COLLATE "C" PRIMARY KEY, agent text COLLATE "C" NOT NULL,
  amount bigint NOT NULL, ts bigint NOT NULL, expires bigint NOT NULL);
CREATE INDEX holds_agent ON holds(agent);
CREATE INDEX holds_expires ON holds(expires) WHERE expires > 0;
CREATE TABLE pool_stats(pool text COLLATE "C" NOT NULL, agent text COLLATE "C" NOT NULL,
  kind text COLLATE "C" NOT NULL, total bigint NOT NULL, count bigint NOT NULL, PRIMARY KEY(pool, agent, kind));
CREATE TABLE meta(key text COLLATE "C" PRIMARY KEY, value text NOT NULL);
CREATE TABLE quarantine(seq bigint NOT NULL, id text NOT NULL, prev text NOT NULL, hash text NOT NULL,
  data text NOT NULL, reason text NOT NULL, moved_at timestamptz NOT NULL DEFAULT now());
"""
# (version, SQL): applied in order, each once, under an advisory lock; never edit a released entry.
MIGRATIONS: tuple[tuple[int, str], ...] = ((1, V1),)
SCHEMA_VERSION = MIGRATIONS[-1][0]
INDEX_TABLES = ("accounts", "stats", "projects", "contracts", "holds", "pool_stats")
_TXN_COLS = "seq, id, ts, kind, agent, payer, payee, amount, ref, prev, hash, data"


class DatabaseError(UserError):
    """The ledger database could not be reached or refused; one line, nothing was written."""


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise UserError("the postgres backend needs psycopg 3: pip install 'token-exchange[postgres]'") from None
    return psycopg


def dsn_of(cfg: Any) -> tuple[str, str]:
    """(DSN, where it came from): ``TOKEN_EXCHANGE_DSN`` wins over ``[exchange] dsn`` in config.toml."""
    env = os.environ.get(DSN_ENV, "")
    if env:
        return env, DSN_ENV
    raw = getattr(cfg, "raw", None) or {}
    exchange = raw.get("exchange", {}) if isinstance(raw, dict) else {}
    value = exchange.get("dsn", "") if isinstance(exchange, dict) else ""
    return (value, "config.toml") if isinstance(value, str) and value else ("", "")


def describe(dsn: str) -> str:
    """Where a DSN points, without user or password: ``host:port/dbname``."""
    try:
        d = _psycopg().conninfo.conninfo_to_dict(dsn)
    except Exception:  # psycopg.ProgrammingError; never echo the text
        return "the database"
    host = str(d.get("host") or d.get("hostaddr") or os.environ.get("PGHOST") or "localhost")
    port = str(d.get("port") or os.environ.get("PGPORT") or "5432")
    db = str(d.get("dbname") or os.environ.get("PGDATABASE") or d.get("user") or "")
    return f"{host}:{port}/{db}"


def has_password(dsn: str) -> bool:
    """True when the DSN itself holds a password (then it never goes into config.toml)."""
    try:
        return bool(_psycopg().conninfo.conninfo_to_dict(dsn).get("password"))
    except Exception:  # not a DSN at all: treat it as secret
        return True


def _reason(e: BaseException) -> str:
    """The useful end of a libpq message, one line ('Connection refused'), never the DSN."""
    diag = getattr(e, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = str(primary or e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    line = line.rsplit(" failed: ", 1)[-1].strip()
    return re.sub(r"password=\S+", "password=***", line)[:200] or type(e).__name__


class Db:
    """One connection shared by the journal and its index, with explicit transactions.

    Autocommit outside ``locked()`` (each read is its own snapshot, as SQLite's are); inside,
    ``BEGIN`` + the head row lock, savepoints for each append, ``COMMIT`` at the end."""

    def __init__(self, dsn: str, source: str) -> None:
        self.dsn = dsn
        self.source = source
        self.where = describe(dsn) if dsn else ""
        self.conn: psycopg.Connection[Any] | None = None
        self.schema = ""
        self.in_tx = False
        self.failed = False  # a statement of the open transaction failed: it can only be rolled back
        # The head row (seq, last_hash, last_ts) while this connection holds its lock: nobody else can move it,
        # so the catch-up and the append read it from here instead of asking the server again.
        self.head: tuple[int, str, str] | None = None
        self._savepoints = 0

    # --- connecting ---------------------------------------------------------------------------
    def connection(self) -> psycopg.Connection[Any]:
        if self.conn is not None and not self.conn.closed:
            return self.conn
        pg = _psycopg()
        if not self.dsn:
            raise UserError(f"the postgres backend needs a DSN: set {DSN_ENV} or [exchange] dsn in config.toml "
                            "(docs/postgres.md)")
        try:
            info = pg.conninfo.conninfo_to_dict(self.dsn)
        except pg.ProgrammingError:
            raise UserError(f"the DSN in {self.source} is not a PostgreSQL connection string") from None
        if self.source == "config.toml" and info.get("password"):
            raise UserError("[exchange] dsn in config.toml holds a password, and config.toml is tracked by git: put "
                            f"the password in ~/.pgpass or PGPASSWORD, or the whole DSN in {DSN_ENV}")
        try:
            conn = pg.connect(self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                              application_name="token-exchange")
        except pg.Error as e:
            raise DatabaseError(f"cannot connect to the ledger database at {self.where}: {_reason(e)}; nothing "
                                "was read or written") from None
        self.conn = conn
        try:
            self._schema(conn)
        except BaseException:
            self.close()
            raise
        return conn

    def _schema(self, conn: psycopg.Connection[Any]) -> None:
        """Choose the schema (search_path) and create or migrate the tables in it (versioned)."""
        pg = _psycopg()
        try:
            path = str(conn.execute("SHOW search_path").fetchone()[0])  # type: ignore[index]
            first = path.split(",")[0].strip().strip('"')
            schema = DEFAULT_SCHEMA if first in ("$user", "") else first
            if not SCHEMA_RE.fullmatch(schema):
                raise UserError(f"schema name {schema[:70]!r} is not 1-63 of a-z 0-9 _ (set it with the DSN's "
                                "options=-csearch_path=NAME)")
            self.schema = schema
            conn.execute(pg.sql.SQL("SET search_path TO {}").format(pg.sql.Identifier(schema)))
            try:
                row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
                version = int(row[0]) if row and row[0] is not None else 0
            except pg.errors.UndefinedTable:
                version = 0
            if version > SCHEMA_VERSION:
                raise UserError(f"the ledger database has schema version {version}, newer than this token-exchange "
                                f"knows ({SCHEMA_VERSION}): upgrade token-exchange on this host")
            if version < SCHEMA_VERSION:
                self._migrate(conn, schema)
        except pg.Error as e:
            raise DatabaseError(f"the ledger database at {self.where} refused to set up schema {self.schema}: "
                                f"{_reason(e)}") from None

    @staticmethod
    def _migrate(conn: psycopg.Connection[Any], schema: str) -> None:
        pg = _psycopg()
        with conn.transaction():
            # One host migrates; the others wait here, then find the work done.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"token-exchange:{schema}",))
            conn.execute(pg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(pg.sql.Identifier(schema)))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version(version integer PRIMARY KEY, "
                         "applied_at timestamptz NOT NULL DEFAULT now())")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            current = int(row[0]) if row and row[0] is not None else 0
            for version, script in MIGRATIONS:
                if version > current:
                    for statement in script.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute("INSERT INTO schema_version(version) VALUES (%s)", (version,))

    def close(self) -> None:
        conn, self.conn = self.conn, None
        self.in_tx = False
        self.head = None
        self._savepoints = 0
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken connection: nothing left to do
                pass

    def current_head(self) -> tuple[int, str, str]:
        """(seq, last_hash, last_ts): the locked copy inside the ledger transaction, else the server's."""
        if self.in_tx and self.head is not None:
            return self.head
        row = self.one("SELECT seq, last_hash, last_ts FROM head")
        return (int(row[0]), str(row[1]), str(row[2])) if row else (0, "", "")

    # --- statements -------------------------------------------------------------------------
    def _lost(self, e: BaseException, committing: bool = False) -> DatabaseError:
        self.failed = True
        broken = self.conn is None or self.conn.closed or self.conn.broken
        if committing:
            if broken:
                self.close()
                return DatabaseError(f"lost the connection to the ledger database at {self.where} while committing "
                                     f"({_reason(e)}): it may or may not have been recorded; run the same command "
                                     "again with the same id (it is recorded once)")
            return DatabaseError(f"the ledger database at {self.where} refused to commit ({_reason(e)}); nothing "
                                 "was written")
        pg = _psycopg()
        if isinstance(e, pg.errors.LockNotAvailable):
            return DatabaseError("the ledger is locked by another writer for too long; try again")
        if broken:
            self.close()
            return DatabaseError(f"lost the connection to the ledger database at {self.where} ({_reason(e)}); "
                                 "nothing of this command was written: run it again")
        return DatabaseError(f"the ledger database at {self.where} refused a statement ({_reason(e)}); nothing "
                             "was written")

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = self.connection()
        try:
            return conn.execute(sql, params).fetchall()
        except _psycopg().Error as e:
            raise self._lost(e) from None

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        found = self.rows(sql, params)
        return found[0] if found else None

    def write(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        """Run ``statements`` in one round trip (a pipeline) inside the open transaction."""
        conn = self.connection()
        try:
            with conn.pipeline():
                for sql, params in statements:
                    conn.execute(sql, params)
        except _psycopg().Error as e:
            raise self._lost(e) from None

    # --- transactions -----------------------------------------------------------------------
    @contextmanager
    def transaction(self, timeout: float) -> Iterator[None]:
        """BEGIN, lock the head row (waiting at most ``timeout`` s), run the block, COMMIT.

        A block that raises after appending still commits what it appended (the file journals keep an
        append the moment it returns; a refused spend keeps the wallet it opened); a failed statement
        rolls everything back."""
        if self.in_tx:
            yield
            return
        conn = self.connection()
        self.failed = False
        try:
            with conn.pipeline():
                conn.execute("BEGIN")
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{max(1, int(timeout * 1000))}ms",))
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"token-exchange ledger:{self.schema}",))
                cur = conn.execute("SELECT seq, last_hash, last_ts FROM head")
            row = cur.fetchone()
            if row is None:
                raise UserError("the ledger database has no head row (not made by token-exchange?); run `tx doctor`")
            self.head = (int(row[0]), str(row[1]), str(row[2]))
        except _psycopg().Error as e:
            err = self._lost(e)
            self._rollback()
            raise err from None
        self.in_tx = True
        try:
            yield
        except BaseException:
            if self.failed:
                self._rollback()
            else:
                self._commit()
            raise
        else:
            if self.failed:  # pragma: no cover - a failed statement always raised through the block
                self._rollback()
                raise DatabaseError("a statement failed inside the ledger transaction; nothing was written")
            self._commit()

    def _commit(self) -> None:
        self.in_tx = False
        self.head = None
        conn = self.conn
        if conn is None:
            raise DatabaseError("lost the connection to the ledger database; nothing was written")
        try:
            conn.execute("COMMIT")
        except _psycopg().Error as e:
            raise self._lost(e, committing=True) from None

    def _rollback(self) -> None:
        self.in_tx = False
        self.head = None
        self._savepoints = 0
        conn = self.conn
        if conn is None or conn.closed:
            return
        try:
            conn.execute("ROLLBACK")
        except Exception:  # the server rolls back a transaction whose connection is gone
            self.close()

    @contextmanager
    def atomic(self, timeout: float = 30.0) -> Iterator[None]:
        """All or nothing: a savepoint inside the ledger transaction, else a transaction of its own."""
        if not self.in_tx:
            with self.transaction(timeout):
                yield
            return
        self._savepoints += 1
        name = f"te_{self._savepoints}"
        self.rows_nofetch(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            if self.conn is not None and not self.conn.broken:
                try:
                    self.rows_nofetch(f"ROLLBACK TO SAVEPOINT {name}")
                    self.failed = False  # the transaction goes on without the savepoint's statements
                except DatabaseError:
                    pass
            raise
        finally:
            self._savepoints -= 1
        self.rows_nofetch(f"RELEASE SAVEPOINT {name}")

    def rows_nofetch(self, sql: str) -> None:
        conn = self.connection()
        try:
            conn.execute(sql)
        except _psycopg().Error as e:
            raise self._lost(e) from None


# --- the journal ---------------------------------------------------------------------------------
def _verify(rows: list[tuple[Any, ...]], prev: str | None, expect: int) -> tuple[list[Txn], list[str], Tail | None]:
    """Rows (in ``_TXN_COLS`` order) -> verified transactions; stops at the first row that does not verify."""
    out: list[Txn] = []
    texts: list[str] = []
    for seq, id, ts, kind, agent, payer, payee, amount, ref, prv, hash, data in rows:
        problem = ""
        t: Txn | None = None
        if seq != expect:
            problem = f"transaction {expect} is missing (the next one is {seq})"
        elif sha256(data.encode("utf-8")).hexdigest() != hash:
            problem = f"transaction {seq} ({id}) does not match its hash (edited?)"
        else:
            try:
                t = Txn.from_hashed(json.loads(data), hash)
            except (ValueError, KeyError, TypeError):
                problem = f"transaction {seq} ({id}): its text is not a transaction"
        if t is not None and not problem:
            if canonical(t.hashed()) != data:
                problem = f"transaction {seq} ({id}): its text is not in canonical form"
            elif prev is not None and t.prev != prev:
                problem = (f"transaction {seq} ({id}): chain broken (its prev is not the hash of the transaction "
                           "before it: one was edited, removed or reordered)")
            elif (t.id, ts_micros(t.ts), t.kind, t.agent, t.payer, t.payee, t.amount, t.ref, t.prev) != \
                    (id, ts, kind, agent, payer, payee, amount, ref, prv):
                problem = f"transaction {seq} ({id}): its columns disagree with the text its hash covers (edited?)"
        if problem:
            return out, texts, Tail(int(seq if seq == expect else expect), 0, problem)
        assert t is not None
        out.append(t)
        texts.append(data)
        prev = hash
        expect += 1
    return out, texts, None


class PostgresJournal:
    """Journal in a PostgreSQL database; position = ``seq`` of the last transaction ("0" when empty)."""

    name = "postgres"

    def __init__(self, home: Path, cfg: Any = None, dsn: str | None = None) -> None:
        self.home = home
        given, source = (dsn, "--dsn") if dsn else dsn_of(cfg)
        self.db = Db(given, source)
        self._index: PostgresIndex | None = None

    # --- SharedJournal ------------------------------------------------------------------------
    def transaction(self, timeout: float) -> AbstractContextManager[None]:
        return self.db.transaction(timeout)

    def index(self) -> PostgresIndex:
        if self._index is None:
            self._index = PostgresIndex(self.db)
        return self._index

    def close(self) -> None:
        self.db.close()

    # --- Journal ------------------------------------------------------------------------------
    def lock_path(self) -> Path:
        """Not used for locking (``transaction`` is the lock across hosts); a path in the home."""
        return self.home / "ledger.lock"

    def end(self) -> str:
        return str(self.db.current_head()[0])

    def is_behind(self, position: str, end: str) -> bool:
        pos = position or "0"
        return pos.isdigit() and end.isdigit() and int(pos) <= int(end)

    def verify_position(self, position: str, last_hash: str) -> str:
        pos = int(position or 0)
        end = int(self.end())
        if pos > end:
            return f"the database holds {end} transactions but {pos} were read: acknowledged transactions are missing"
        if pos == 0:
            return ""
        row = self.db.one("SELECT hash FROM txns WHERE seq = %s", (pos,))
        if row is None or row[0] != last_hash:
            return (f"transaction {pos} in the database is not the one that was read there (an edit, or rows "
                    "removed)")
        return ""

    def chunks(self, position: str = "") -> Iterator[Chunk]:
        after = int(position or 0)
        prev: str | None = None
        if after == 0:
            prev = ""
        else:
            row = self.db.one("SELECT hash FROM txns WHERE seq = %s", (after,))
            prev = row[0] if row else None
        end = int(self.end())
        while True:
            rows = self.db.rows(f"SELECT {_TXN_COLS} FROM txns WHERE seq > %s AND seq <= %s ORDER BY seq LIMIT %s",
                                (after, end, CHUNK_ROWS))
            txns, texts, tail = _verify(rows, prev, after + 1)
            if txns:
                after += len(txns)
                prev = txns[-1].hash
            if tail is not None:
                size = int(self.db.one("SELECT count(*) FROM txns WHERE seq >= %s", (tail.offset,))[0])  # type: ignore[index]
                yield Chunk(txns, str(after), tail._replace(size=size), texts)
                return
            if len(rows) < CHUNK_ROWS or after >= end:
                if after < end:  # rows missing at the end (seq gap): head says more
                    yield Chunk(txns, str(after), Tail(after + 1, end - after, f"transaction {after + 1} is missing "
                                                       f"(the head says {end})"), texts)
                    return
                yield Chunk(txns, str(after), None, texts)
                return
            yield Chunk(txns, str(after), None, texts)

    def read_from(self, position: str) -> Chunk:
        txns: list[Txn] = []
        texts: list[str] = []
        pos = position or "0"
        tail = None
        for c in self.chunks(position):
            txns.extend(c.txns)
            texts.extend(c.hashed or [])
            pos, tail = c.position, c.tail
        return Chunk(txns, pos, tail, texts)

    def read_all(self) -> Chunk:
        return self.read_from("")

    def seal(self, txns: list[Txn], last_hash: str) -> list[Txn]:
        return chain(txns, last_hash)

    def accept(self, idx: Index, txns: list[Txn]) -> tuple[list[Txn], bool]:
        if txns and txns[0].prev != (idx.meta("last_hash") or ""):
            raise UserError("ledger chain is broken at the indexed position; run `tx doctor`")
        return txns, False

    def link_notes(self) -> list[str]:
        return []  # one chain, one record per id

    def link_problems(self, txns: list[Txn]) -> list[str]:
        return chain_problems(txns)

    def append(self, txns: list[Txn]) -> str:
        """Write sealed ``txns`` and fold them into the index, in one savepoint of the ledger transaction."""
        db = self.db
        if not db.in_tx:
            raise UserError("internal error: a postgres append outside the ledger transaction; nothing written")
        seq, last_hash, last_ts = db.current_head()
        if txns and txns[0].prev != last_hash:
            raise UserError("the new transactions do not follow the ledger's last one (the chain); nothing written")
        statements: list[tuple[str, Sequence[Any]]] = []
        for n, t in enumerate(txns, seq + 1):
            data = canonical(t.hashed())
            try:
                data.encode("utf-8")
            except UnicodeEncodeError:
                raise UserError(f"transaction {t.id} is not valid UTF-8; nothing written") from None
            statements.append((f"INSERT INTO txns({_TXN_COLS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                               (n, t.id, ts_micros(t.ts), t.kind, t.agent, t.payer, t.payee, t.amount, t.ref, t.prev,
                                t.hash, data)))
            statements.extend(_fold(t))
            last_ts = max(last_ts, t.ts)
        end = seq + len(txns)
        if txns:
            statements.append(("UPDATE head SET seq = %s, last_hash = %s, last_ts = %s",
                               (end, txns[-1].hash, last_ts)))
        # All or nothing inside the ledger transaction: a savepoint around the rows and their index updates, sent
        # together with them (one round trip).
        try:
            db.write([("SAVEPOINT te_append", ()), *statements, ("RELEASE SAVEPOINT te_append", ())])
        except DatabaseError as e:
            if db.conn is not None and not db.conn.broken:
                db.rows_nofetch("ROLLBACK TO SAVEPOINT te_append")
                db.failed = False
            if "duplicate key" in str(e) or "unique" in str(e).lower():
                raise IdConflict("a transaction id is already in the ledger database; nothing written") from None
            raise
        if txns:
            db.head = (end, txns[-1].hash, last_ts)
        return str(end)

    def set_aside(self, tail: Tail) -> Path:
        """Move the rows from ``tail.offset`` on into the ``quarantine`` table and a JSON lines file in the home
        (never deleted: evidence); the head moves back to the row before them."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.home / f"ledger.quarantine-{stamp}-{tail.offset}.jsonl"
        with self.db.atomic():
            rows = self.db.rows("SELECT seq, id, prev, hash, data FROM txns WHERE seq >= %s ORDER BY seq",
                                (tail.offset,))
            self.home.mkdir(parents=True, exist_ok=True)
            with open(target, "w", encoding="utf-8") as f:
                for seq, id, prev, hash, data in rows:
                    f.write(json.dumps({"seq": seq, "id": id, "prev": prev, "hash": hash, "data": data},
                                       ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            before = self.db.one("SELECT hash FROM txns WHERE seq = %s", (tail.offset - 1,))
            last = self.db.one("SELECT data FROM txns WHERE seq < %s ORDER BY ts DESC, seq DESC LIMIT 1",
                               (tail.offset,))
            head = (tail.offset - 1, str(before[0]) if before else "", str(json.loads(last[0])["ts"]) if last else "")
            self.db.write([
                ("INSERT INTO quarantine(seq, id, prev, hash, data, reason) SELECT seq, id, prev, hash, data, %s "
                 "FROM txns WHERE seq >= %s", (tail.reason[:500], tail.offset)),
                ("DELETE FROM txns WHERE seq >= %s", (tail.offset,)),
                ("UPDATE head SET seq = %s, last_hash = %s, last_ts = %s", head),
            ])
            self.db.head = head
        return target

    def new_records(self, old: str, new: str) -> list[Txn]:
        return self.read_from(old).txns

    def sync(self, ledger: Ledger, remote: str) -> Any:
        raise UserError("`tx sync` is not needed with the postgres backend: every host writes the same database")

    def setup(self) -> dict[str, Any]:
        self.db.connection()
        return {"database": self.db.where, "schema": self.db.schema, "schema_version": SCHEMA_VERSION}

    def existing(self) -> str | None:
        try:
            return f"the ledger database {self.db.where}" if int(self.end()) > 0 else None
        except UserError:
            return None


def _fold(t: Txn) -> list[tuple[str, Sequence[Any]]]:
    """The index updates of one transaction (the statements of ``SqliteIndex._insert``, for PostgreSQL)."""
    out: list[tuple[str, Sequence[Any]]] = [
        ("INSERT INTO accounts VALUES (%s, %s), (%s, %s) ON CONFLICT (account) DO UPDATE "
         "SET balance = accounts.balance + excluded.balance", (t.payer, -t.amount, t.payee, t.amount))]
    if t.agent:
        out.append(("INSERT INTO stats VALUES (%s, %s, %s, 1) ON CONFLICT (agent, kind) DO UPDATE "
                    "SET total = stats.total + excluded.total, count = stats.count + 1", (t.agent, t.kind, t.amount)))
        if t.kind in EARN_KINDS and t.project:
            out.append(("INSERT INTO projects VALUES (%s, %s, %s) ON CONFLICT (agent, project) DO UPDATE "
                        "SET earned = projects.earned + excluded.earned", (t.agent, t.project, t.amount)))
    contract = t.breakdown.get("contract")
    if contract and t.kind in EARN_KINDS:
        out.append(("INSERT INTO contracts VALUES (%s, %s) ON CONFLICT (contract) DO UPDATE "
                    "SET paid = contracts.paid + excluded.paid", (str(contract), t.amount)))
    if t.payee.startswith("hold:"):
        ttl = t.breakdown.get("ttl", 0)
        ts = ts_micros(t.ts)
        expires = ts + ttl * 1_000_000 if isinstance(ttl, int) and ttl > 0 else 0
        out.append(("INSERT INTO holds VALUES (%s, %s, %s, %s, %s) ON CONFLICT (account) DO UPDATE "
                    "SET amount = holds.amount + excluded.amount", (t.payee, t.agent, t.amount, ts, expires)))
    if t.payer.startswith("hold:"):
        out.append(("UPDATE holds SET amount = amount - %s WHERE account = %s", (t.amount, t.payer)))
        out.append(("DELETE FROM holds WHERE account = %s AND amount <= 0", (t.payer,)))
    if t.ref.startswith("pool:"):
        out.append(("INSERT INTO pool_stats VALUES (%s, %s, %s, %s, 1) ON CONFLICT (pool, agent, kind) DO UPDATE "
                    "SET total = pool_stats.total + excluded.total, count = pool_stats.count + 1",
                    (t.ref, t.agent, t.kind, t.amount)))
    return out


def _load(data: str, hash: str) -> Txn:
    return Txn.from_hashed(json.loads(data), hash)


# --- the index -----------------------------------------------------------------------------------
class PostgresIndex:
    """The index in the same database (implements ``Index``): every host reads the same balances, windows and
    holds.  The journal's ``append`` keeps it, in the same transaction; ``rebuild`` recomputes it from ``txns``."""

    def __init__(self, db: Db) -> None:
        self.db = db

    def close(self) -> None:
        self.db.close()

    def reset(self) -> None:
        with self.db.atomic():
            self.db.rows_nofetch(f"TRUNCATE {', '.join(INDEX_TABLES)}")

    def meta(self, key: str) -> str | None:
        if key in ("position", "last_hash", "last_ts"):
            seq, last_hash, last_ts = self.db.current_head()
            return {"position": str(seq), "last_hash": last_hash, "last_ts": last_ts}[key]
        if key == "version":
            return INDEX_VERSION
        found = self.db.one("SELECT value FROM meta WHERE key = %s", (key,))
        return found[0] if found else None

    def set_meta(self, key: str, value: str) -> None:
        with self.db.atomic():
            self.db.write([("INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                            (key, value))])

    def add(self, txns: Iterable[Txn], position: str, last_hash: str | None) -> list[str]:
        """Nothing to do: the journal's append folded ``txns`` into these tables in the same transaction (and
        in one savepoint with the rows themselves); only checks that the head is at ``position``."""
        if self.meta("position") != position:
            raise UserError(f"internal error: the index is not at position {position}; nothing written")
        return []

    def rebuild(self, chunks: Iterable[Chunk]) -> None:
        """Recompute every index table from ``chunks`` (the journal, streamed), in one transaction."""
        totals = Totals()
        for chunk in chunks:
            for t in chunk.txns:
                totals.fold(t, ts_micros(t.ts))
        with self.db.atomic():
            conn = self.db.connection()
            try:
                conn.execute(f"TRUNCATE {', '.join(INDEX_TABLES)}")
                with conn.cursor() as cur:
                    for table, rows in (
                            ("accounts", list(totals.accounts.items())),
                            ("stats", [(a, k, v[0], v[1]) for (a, k), v in totals.stats.items()]),
                            ("projects", [(a, p, v) for (a, p), v in totals.projects.items()]),
                            ("contracts", [(str(c), v) for c, v in totals.contracts.items()]),
                            ("holds", [(k, *v) for k, v in totals.holds.items()]),
                            ("pool_stats", [(p, a, k, v[0], v[1]) for (p, a, k), v in totals.pools.items()])):
                        with cur.copy(f"COPY {table} FROM STDIN") as copy:
                            for r in rows:
                                copy.write_row(r)
            except _psycopg().Error as e:
                raise self.db._lost(e) from None

    # --- queries ----------------------------------------------------------------------------
    def get(self, id: str) -> Txn | None:
        row = self.db.one("SELECT data, hash FROM txns WHERE id = %s", (id,))
        return _load(*row) if row else None

    def account(self, account: str) -> Units:
        row = self.db.one("SELECT balance FROM accounts WHERE account = %s", (account,))
        return int(row[0]) if row else 0

    def accounts(self, prefix: str = "") -> dict[str, Units]:
        rows = self.db.rows("SELECT account, balance FROM accounts WHERE account >= %s AND account < %s",
                            (prefix, prefix + "\U0010ffff"))
        return {a: int(b) for a, b in rows}

    def kind_totals(self, agent: str) -> dict[str, Units]:
        return {k: int(v) for k, v in self.db.rows("SELECT kind, total FROM stats WHERE agent = %s", (agent,))}

    def balance(self, agent: str) -> Balance:
        rows = self.db.rows("SELECT 'k', kind, total FROM stats WHERE agent = %s UNION ALL "
                            "SELECT 'p', project, earned FROM projects WHERE agent = %s UNION ALL "
                            "SELECT 'a', account, balance FROM accounts WHERE account = %s", (agent, agent, agent))
        kinds = {k: int(v) for tag, k, v in rows if tag == "k"}
        projects = {k: int(v) for tag, k, v in rows if tag == "p"}
        bal = next((int(v) for tag, _, v in rows if tag == "a"), 0)
        return Balance(agent, bal, sum(kinds.get(k, 0) for k in EARN_KINDS), sum(kinds.get(k, 0) for k in SPEND_KINDS),
                       kinds, projects)

    def agents(self) -> list[str]:
        return [r[0] for r in self.db.rows("SELECT DISTINCT agent FROM stats WHERE agent <> '' ORDER BY agent")]

    def history(self, agent: str, limit: int) -> list[Txn]:
        rows = self.db.rows("SELECT data, hash FROM txns WHERE agent = %s ORDER BY seq DESC LIMIT %s", (agent, limit))
        return [_load(*r) for r in rows]

    def window_sum(self, agent: str, kinds: Iterable[str], since_us: int, until_us: int) -> Units:
        row = self.db.one("SELECT COALESCE(SUM(amount), 0) FROM txns WHERE agent = %s AND kind = ANY(%s) "
                          "AND ts >= %s AND ts <= %s", (agent, list(kinds), since_us, until_us))
        return int(row[0]) if row else 0

    def window_entries(self, agent: str, kinds: Iterable[str], since_us: int, until_us: int
                       ) -> list[tuple[int, Units]]:
        rows = self.db.rows("SELECT ts, amount FROM txns WHERE agent = %s AND kind = ANY(%s) AND ts >= %s "
                            "AND ts <= %s ORDER BY ts, seq", (agent, list(kinds), since_us, until_us))
        return [(int(a), int(b)) for a, b in rows]

    def open_holds(self, agent: str) -> list[tuple[str, Units, int, int]]:
        rows = self.db.rows("SELECT account, amount, ts, expires FROM holds WHERE agent = %s ORDER BY ts, account",
                            (agent,))
        return [(a, int(b), int(c), int(d)) for a, b, c, d in rows]

    def expired_holds(self, now_us: int) -> list[tuple[str, str, Units]]:
        rows = self.db.rows("SELECT account, agent, amount FROM holds WHERE expires > 0 AND expires <= %s "
                            "ORDER BY expires, account", (now_us,))
        return [(a, b, int(c)) for a, b, c in rows]

    def pool_totals(self, pool_ref: str) -> dict[tuple[str, str], tuple[Units, int]]:
        rows = self.db.rows("SELECT agent, kind, total, count FROM pool_stats WHERE pool = %s", (pool_ref,))
        return {(a, k): (int(v), int(n)) for a, k, v, n in rows}

    def by_ref(self, ref: str) -> list[Txn]:
        rows = self.db.rows("SELECT data, hash FROM txns WHERE ref = %s AND ref <> '' ORDER BY seq", (ref,))
        return [_load(*r) for r in rows]

    def with_id_prefix(self, prefix: str) -> list[Txn]:
        hi = prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\U0010ffff"
        rows = self.db.rows("SELECT data, hash FROM txns WHERE id >= %s AND id < %s ORDER BY seq", (prefix, hi))
        return [_load(*r) for r in rows]

    def contract_paid(self, contract: str) -> Units:
        row = self.db.one("SELECT paid FROM contracts WHERE contract = %s", (contract,))
        return int(row[0]) if row else 0

    def count(self) -> int:
        row = self.db.one("SELECT count(*) FROM txns")
        return int(row[0]) if row else 0

    def last_ts(self) -> str:
        return self.meta("last_ts") or ""

    def volume(self) -> Units | None:
        """Not kept (the shared head row has no column for it): the ledger checks every total it moves."""
        return None

    def iter_txns(self, kinds: Iterable[str] | None = None) -> Iterator[Txn]:
        wanted = None if kinds is None else list(kinds)
        after = 0
        while True:
            if wanted is None:
                rows = self.db.rows("SELECT seq, data, hash FROM txns WHERE seq > %s ORDER BY seq LIMIT %s",
                                    (after, CHUNK_ROWS))
            else:
                rows = self.db.rows("SELECT seq, data, hash FROM txns WHERE seq > %s AND kind = ANY(%s) ORDER BY seq "
                                    "LIMIT %s", (after, wanted, CHUNK_ROWS))
            for _, data, hash in rows:
                yield _load(data, hash)
            if len(rows) < CHUNK_ROWS:
                return
            after = int(rows[-1][0])
