"""The throwaway home's storage: an in-memory journal (``SimJournal``) and the dict-backed index.

The real ``Ledger`` class does the appends, checks and indexing; only the storage is in memory, so no
event pays for an fsync or a lock, and the hash chain (tamper evidence for a journal someone reads back) is
only linked when the journal is written.  With ``--out DIR`` the journal is written to ``DIR/ledger.toml`` in
the TOML journal's format (and the index saved) at the end, so ``tx --home DIR ...`` can inspect the result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from token_exchange.errors import UserError
from token_exchange.ledger.index import SqliteIndex
from token_exchange.ledger.ledger import Ledger
from token_exchange.ledger.memindex import MemoryIndex
from token_exchange.ledger.protocols import Chunk, Index, Tail
from token_exchange.ledger.txn import Txn, canonical_hashed
from token_exchange.rules.config import Config
from token_exchange.services.exchange import Exchange


class SimJournal:
    """An in-memory ``Journal`` (positions are counts); ``persist()`` writes a real ``ledger.toml``."""

    name = "memory"

    def __init__(self, home: Path) -> None:
        self.home = home
        self.txns: list[Txn] = []

    def lock_path(self) -> Path:
        return self.home / "ledger.lock"

    def end(self) -> str:
        return str(len(self.txns))

    def is_behind(self, position: str, end: str) -> bool:
        return int(position or 0) <= int(end or 0)

    def verify_position(self, position: str, last_hash: str) -> str:
        return ""

    def append(self, txns: list[Txn]) -> str:
        self.txns.extend(txns)
        return str(len(self.txns))

    def read_from(self, position: str) -> Chunk:
        return Chunk(self.txns[int(position or 0):], self.end())

    def chunks(self, position: str = "") -> Iterator[Chunk]:
        yield self.read_from(position)

    def read_all(self) -> Chunk:
        return Chunk(list(self.txns), self.end())

    def seal(self, txns: list[Txn], last_hash: str) -> list[Txn]:
        """Nothing yet: only a kept home's ``ledger.toml`` is ever read back, so ``persist`` links the whole
        journal once (one writer from the empty head: the chain that sealing batch by batch would give)."""
        return txns

    def accept(self, idx: Index, txns: list[Txn]) -> tuple[list[Txn], bool]:
        return txns, False

    def link_problems(self, txns: list[Txn]) -> list[str]:
        return []

    def link_notes(self) -> list[str]:
        return []

    def set_aside(self, tail: Tail) -> Path:  # pragma: no cover - nothing is ever torn in memory
        raise UserError("an in-memory journal has no tail")

    def new_records(self, old: str, new: str) -> list[Txn]:
        return self.txns[int(old or 0):int(new or 0)]

    def sync(self, ledger: Ledger, remote: str) -> Any:
        raise UserError("a simulated ledger does not sync")

    def setup(self) -> dict[str, Any]:
        return {}

    def existing(self) -> str | None:
        return None

    def persist(self) -> int:
        """Chain every transaction and write them to HOME/ledger.toml in the TOML journal's format; returns its
        size."""
        from token_exchange.ledger.backends.toml import HEADER, render

        self.txns = chained(self.txns, "")
        path = self.home / "ledger.toml"
        with open(path, "wb") as f:
            f.write(HEADER)
            chunk: list[str] = []
            for i, t in enumerate(self.txns, 1):
                chunk.append(render(t))
                if i % 5000 == 0:
                    f.write("".join(chunk).encode("utf-8"))
                    chunk = []
            f.write("".join(chunk).encode("utf-8"))
        return path.stat().st_size


def chained(txns: list[Txn], last_hash: str) -> list[Txn]:
    """``txn.chain``, the hashed text assembled by ``canonical_hashed`` (the same text, faster)."""
    out = []
    prev = last_hash
    for t in txns:
        fields = t[:12]
        text = canonical_hashed(Txn(*fields, prev).hashed())
        t = Txn._make((*fields, prev, hashlib.sha256(text.encode("utf-8")).hexdigest()))
        prev = t.hash
        out.append(t)
    return out


class SimIndex(MemoryIndex):
    """The index of a throwaway home: the dict-backed ``MemoryIndex`` (same answers as SQLite, no SQL)."""


class SimExchange(Exchange):
    """The real ``Exchange`` over a ``SimJournal`` and an in-memory index."""

    def __init__(self, home: Path, cfg: Config, clock: Callable[[], datetime]) -> None:
        super().__init__(home, cfg, clock)
        self.journal = SimJournal(home)
        self._ledger = Ledger(self.journal, Path(":memory:"), clock, index=SimIndex())

    def persist(self) -> None:
        """Write ledger.toml and a caught-up index.sqlite so `tx --home` can read the result."""
        size = self.journal.persist()
        target = SqliteIndex(self.home / "index.sqlite")
        try:
            target.rebuild([Chunk(self.journal.txns, str(size))])
        finally:
            target.close()
