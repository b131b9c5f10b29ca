"""The two interfaces of the ledger: a ``Journal`` (the source of truth) and an ``Index`` (derived reads).

``Ledger`` (ledger.py), ``tx doctor`` (doctor.py), ``tx sync``, the services and the simulation use
only what is declared here, so a backend is one class that implements ``Journal`` plus one line in
``backends/__init__.py``.  Positions are opaque strings a journal hands out (a byte offset, a notes
commit); only the journal compares them.
"""

# No ``from __future__ import annotations``: NamedTuple fields are real types here (docs/DEVELOPING.md, Hot paths).

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from token_exchange.amounts import Units
from token_exchange.ledger.txn import Balance, Txn

if TYPE_CHECKING:  # pragma: no cover
    from token_exchange.ledger.ledger import Ledger


class Tail(NamedTuple):
    """Where a journal stops being the ledger: ``size`` bytes from ``offset`` to its end.

    ``torn``: an incomplete batch from a killed writer (never acknowledged: a writer may move it aside).
    Otherwise the bytes there do not verify (an edit, a partial batch, garbage): nobody reads or writes
    past them until ``tx doctor --repair`` quarantines them.  ``reason`` says what is wrong, in words."""

    offset: int
    size: int
    reason: str
    torn: bool = False


class Chunk(NamedTuple):
    """Transactions read in journal order, the position just after them, and a tail if the read ended on one.

    ``hashed``: when the journal verified hashes, the canonical text each one covers (``canonical(t.hashed())``,
    one per transaction) so an index can store it without encoding every transaction again."""

    txns: list[Txn]
    position: str
    tail: Tail | None = None
    hashed: list[str] | None = None


class Journal(Protocol):
    """Where transactions really live (append-only)."""

    #: The registry name of the backend (``backends.BACKENDS``).
    name: str

    def lock_path(self) -> Path:
        """The file whose flock serialises every writer of this journal."""
        ...

    def end(self) -> str:
        """The position after the last committed transaction ("" or "0" when empty)."""
        ...

    def is_behind(self, position: str, end: str) -> bool:
        """True when an index at ``position`` only has to read on to reach ``end`` (not diverged)."""
        ...

    def verify_position(self, position: str, last_hash: str) -> str:
        """"" when the journal still holds, unchanged, what an index at ``position`` has read (its last
        transaction had ``last_hash``); otherwise one line saying what changed.  Cheap: called on every
        catch-up before trusting the position."""
        ...

    def read_from(self, position: str) -> Chunk:
        """Every committed transaction after ``position``; a tail it stopped at is returned, never cut."""
        ...

    def chunks(self, position: str = "") -> Iterator[Chunk]:
        """``read_from`` in bounded pieces (a rebuild streams the journal instead of holding it)."""
        ...

    def read_all(self) -> Chunk:
        """``read_from`` the start (doctor)."""
        ...

    def seal(self, txns: list[Txn], last_hash: str) -> list[Txn]:
        """Give new transactions (``ts`` set) their ``prev`` and ``hash``; ``last_hash`` is the indexed head."""
        ...

    def accept(self, idx: "Index", txns: list[Txn]) -> tuple[list[Txn], bool]:
        """Which of ``txns`` (just read after the index's position) to index, and whether the whole index
        must be rebuilt instead (a merge made an indexed record lose).  Raises UserError when they do not
        continue what is indexed."""
        ...

    def link_problems(self, txns: list[Txn]) -> list[str]:
        """Doctor: every broken link in a full read (chain breaks, duplicate ids the backend does not allow)."""
        ...

    def link_notes(self) -> list[str]:
        """Doctor, after ``read_all``: what it should say about links without calling the ledger inconsistent
        (two clones' records of one id, settled the same way on every replica)."""
        ...

    def append(self, txns: list[Txn]) -> str:
        """Write sealed ``txns`` all-or-nothing and durably; returns the new position."""
        ...

    def set_aside(self, tail: Tail) -> Path:
        """Move ``tail`` (and everything after it) into a quarantine file it returns; the journal ends at
        ``tail.offset`` afterwards.  Only ``tx doctor --repair`` calls this."""
        ...

    def new_records(self, old: str, new: str) -> list[Txn]:
        """Transactions in ``new`` that ``old`` did not have (``tx sync`` counts what it pushes)."""
        ...

    def sync(self, ledger: "Ledger", remote: str) -> Any:
        """``tx sync``: exchange records with ``remote``; UserError for journals that cannot sync."""
        ...

    def setup(self) -> dict[str, Any]:
        """``tx init``: prepare what the backend needs outside the home; returns facts to print."""
        ...

    def existing(self) -> str | None:
        """A short description of where a ledger already exists (``ledger.toml``), None when there is none."""
        ...


class Index(Protocol):
    """Derived state (balances, ids, windows): rebuildable from the journal at any time."""

    def close(self) -> None: ...
    def reset(self) -> None: ...
    def meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...

    def add(self, txns: Iterable[Txn], position: str, last_hash: str | None) -> list[str]:
        """Index ``txns`` atomically and advance the position; returns ids already present (equal content).
        Raises IdConflict (changing nothing) when an id exists with different content."""
        ...

    def rebuild(self, chunks: Iterable[Chunk]) -> None:
        """Replace everything with ``chunks`` (a whole journal, streamed), atomically."""
        ...

    def get(self, id: str) -> Txn | None: ...
    def account(self, account: str) -> Units: ...
    def accounts(self, prefix: str = "") -> dict[str, Units]: ...
    def balance(self, agent: str) -> Balance: ...

    def kind_totals(self, agent: str) -> dict[str, Units]:
        """``balance(agent).by_kind`` alone (what each kind moved for ``agent``): the ledger checks it per write."""
        ...

    def agents(self) -> list[str]: ...
    def history(self, agent: str, limit: int) -> list[Txn]: ...

    def window_sum(self, agent: str, kinds: Iterable[str], since_us: int, until_us: int) -> Units:
        """Sum of the agent's entries of ``kinds`` with ``since_us <= ts <= until_us``."""
        ...

    def window_entries(self, agent: str, kinds: Iterable[str], since_us: int, until_us: int
                       ) -> list[tuple[int, Units]]:
        """(ts, amount) of those entries, oldest first."""
        ...

    def open_holds(self, agent: str) -> list[tuple[str, Units, int, int]]: ...
    def expired_holds(self, now_us: int) -> list[tuple[str, str, Units]]: ...
    def pool_totals(self, pool_ref: str) -> dict[tuple[str, str], tuple[Units, int]]: ...
    def by_ref(self, ref: str) -> list[Txn]: ...

    def with_id_prefix(self, prefix: str) -> list[Txn]:
        """Every transaction whose id starts with ``prefix`` (``issue:``), in ledger order."""
        ...

    def contract_paid(self, contract: str) -> Units: ...
    def count(self) -> int: ...
    def last_ts(self) -> str:
        """The latest ``ts`` indexed ("" when empty): new transactions are never dated before it."""
        ...

    def volume(self) -> Units | None:
        """The sum of every indexed amount (None: not kept).  Every running total is a signed sum of some of
        them, so while it stays within the ledger's maximum no total can pass it (``Ledger``'s write check)."""
        ...

    def iter_txns(self, kinds: Iterable[str] | None = None) -> Iterator[Txn]: ...


# --- a journal that is a database (backends/postgres.py) --------------------------------------------
@runtime_checkable
class SharedJournal(Protocol):
    """A ``Journal`` that many hosts write at once: it serialises writers itself and keeps the index.

    ``Ledger`` uses ``transaction`` instead of the flock on ``lock_path`` (every check and write inside
    ``Ledger.locked()`` is then one database transaction: commit on exit, also when the block raises
    after appending, as the file journals keep what was appended; rollback when the database failed),
    and ``index()`` instead of a local SQLite file (balances, windows and holds are shared state)."""

    def transaction(self, timeout: float) -> AbstractContextManager[None]:
        """Hold the ledger's write lock in one database transaction for the block."""
        ...

    def index(self) -> Index:
        """The index that lives next to the journal (derived state, in the same database)."""
        ...
