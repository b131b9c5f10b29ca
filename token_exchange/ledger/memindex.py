"""The ledger index over plain dicts: the same answers as the SQLite index, no SQL.

For throwaway homes with one writer (``tx simulate``), where the index never
needs to outlive the process and per-statement SQLite costs dominate.  A
property test checks every query against the SQLite index on random ledgers.
"""

from __future__ import annotations

import bisect
import operator
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from token_exchange.amounts import Units
from token_exchange.errors import IdConflict
from token_exchange.ledger.index import INDEX_VERSION
from token_exchange.ledger.protocols import Chunk
from token_exchange.ledger.timestamps import ts_micros
from token_exchange.ledger.txn import EARN_KINDS, SPEND_KINDS, Balance, Txn

_AMOUNT = operator.itemgetter(2)  # of a window entry (ts, seq, amount)


class MemoryIndex:
    """An ``Index`` (same methods, same results as ``SqliteIndex``) kept in memory."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.reset()

    def reset(self) -> None:
        self._meta: dict[str, str] = {"version": INDEX_VERSION}
        self._txns: dict[str, Txn] = {}  # insertion order is seq order
        self._accounts: dict[str, Units] = defaultdict(int)
        self._stats: dict[str, dict[str, Units]] = defaultdict(dict)  # agent -> kind -> total
        self._projects: dict[str, dict[str, Units]] = defaultdict(dict)
        self._contracts: dict[str, Units] = defaultdict(int)
        self._holds: dict[str, list[Any]] = {}  # account -> [agent, amount, ts, expires]
        self._pools: dict[str, dict[tuple[str, str], list[int]]] = defaultdict(dict)
        self._by_agent: dict[str, list[Txn]] = defaultdict(list)
        self._by_ref: dict[str, list[Txn]] = defaultdict(list)
        self._windows: dict[tuple[str, str], list[tuple[int, int, Units]]] = defaultdict(list)  # (ts, seq, amt)
        self._volume = 0

    def close(self) -> None:
        pass

    def meta(self, key: str) -> str | None:
        return self._meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        self._meta[key] = value

    def add(self, txns: Iterable[Txn], position: str, last_hash: str | None) -> list[str]:
        txns = list(txns)
        dup: list[str] = []
        batch: dict[str, Txn] = {}
        for t in txns:  # validate everything before changing anything (all or nothing, like SQL)
            old = batch.get(t.id) or self._txns.get(t.id)
            if old is not None and old.fingerprint() != t.fingerprint():
                raise IdConflict(f"transaction {t.id} exists with different content")
            batch.setdefault(t.id, t)
        if len(txns) > 1:  # a ts that is no time raises before any change (_insert reads one before changing any)
            for t in txns:
                ts_micros(t.ts)
        latest = self._meta.get("last_ts", "")
        for t in txns:
            if t.id in self._txns:
                dup.append(t.id)
                continue
            self._insert(t)
            if t.ts > latest:
                latest = t.ts
        self._meta["position"] = position
        self._meta["last_ts"] = latest
        if last_hash is not None:
            self._meta["last_hash"] = last_hash
        return dup

    def rebuild(self, chunks: Iterable[Chunk]) -> None:
        self.reset()
        for c in chunks:
            self.add(c.txns, c.position, c.txns[-1].hash if c.txns else None)
        self._meta.setdefault("position", "")

    def last_ts(self) -> str:
        return self._meta.get("last_ts", "")

    def _insert(self, t: Txn) -> None:
        seq = len(self._txns)
        ts = ts_micros(t.ts)  # first: a ts that is no time raises before anything changes
        agent, kind, amount = t.agent, t.kind, t.amount
        self._txns[t.id] = t
        self._volume += amount if amount >= 0 else -amount
        accounts = self._accounts
        accounts[t.payer] -= amount
        accounts[t.payee] += amount
        if agent:
            stats = self._stats[agent]
            stats[kind] = stats.get(kind, 0) + amount
            self._by_agent[agent].append(t)
            window = self._windows[(agent, kind)]
            if not window or window[-1][0] <= ts:  # the usual case: at or after everything so far (seq grows)
                window.append((ts, seq, amount))
            else:
                bisect.insort(window, (ts, seq, amount))
            if kind in EARN_KINDS and t.project:
                proj = self._projects[agent]
                proj[t.project] = proj.get(t.project, 0) + amount
        contract = t.breakdown.get("contract")
        if contract and kind in EARN_KINDS:
            self._contracts[contract] += amount
        if t.payee.startswith("hold:"):
            ttl = t.breakdown.get("ttl", 0)
            expires = ts + ttl * 1_000_000 if isinstance(ttl, int) and ttl > 0 else 0
            hold = self._holds.get(t.payee)
            if hold is None:
                self._holds[t.payee] = [agent, amount, ts, expires]
            else:
                hold[1] += amount
        if t.payer.startswith("hold:") and t.payer in self._holds:
            self._holds[t.payer][1] -= amount
            if self._holds[t.payer][1] <= 0:
                del self._holds[t.payer]
        if t.ref:
            self._by_ref[t.ref].append(t)
            if t.ref.startswith("pool:"):
                ps = self._pools[t.ref].setdefault((agent, kind), [0, 0])
                ps[0] += amount
                ps[1] += 1

    # --- queries (see protocols.Index for what each means) -----------------------------------
    def get(self, id: str) -> Txn | None:
        return self._txns.get(id)

    def account(self, account: str) -> Units:
        return self._accounts.get(account, 0)

    def accounts(self, prefix: str = "") -> dict[str, Units]:
        return {a: b for a, b in self._accounts.items() if a.startswith(prefix)}

    def kind_totals(self, agent: str) -> dict[str, Units]:
        return dict(self._stats[agent]) if agent in self._stats else {}

    def balance(self, agent: str) -> Balance:
        kinds = self.kind_totals(agent)
        taken_back = sum(t.amount for t in self._by_agent.get(agent, ())
                         if t.kind == "reversal" and t.payer == agent and t.breakdown.get("original_kind") in EARN_KINDS
                         ) if "reversal" in kinds else 0
        earned = spent = 0  # loops, not generators: the ledger asks this before every write
        for k in EARN_KINDS:
            earned += kinds.get(k, 0)
        for k in SPEND_KINDS:
            spent += kinds.get(k, 0)
        return Balance(agent, self._accounts.get(agent, 0), earned - taken_back, spent, kinds,
                       dict(self._projects.get(agent, {})))

    def agents(self) -> list[str]:
        return sorted(a for a, kinds in self._stats.items() if a and kinds)

    def history(self, agent: str, limit: int) -> list[Txn]:
        return self._by_agent.get(agent, [])[-limit:][::-1] if limit > 0 else []

    def window_sum(self, agent: str, kinds: Iterable[str], since_us: int, until_us: int) -> Units:
        total = 0  # window_entries' amounts summed, without sorting them (every spend asks twice)
        for kind in set(kinds):
            entries = self._windows.get((agent, kind))
            if entries:
                lo = bisect.bisect_left(entries, (since_us, -1, -1))
                hi = bisect.bisect_left(entries, (until_us + 1, -1, -1), lo)
                total += sum(map(_AMOUNT, entries[lo:hi]))
        return total

    def window_entries(self, agent: str, kinds: Iterable[str], since_us: int, until_us: int
                       ) -> list[tuple[int, Units]]:
        rows: list[tuple[int, int, Units]] = []
        for kind in set(kinds):
            entries = self._windows.get((agent, kind))
            if entries:
                lo = bisect.bisect_left(entries, (since_us, -1, -1))
                hi = bisect.bisect_left(entries, (until_us + 1, -1, -1))
                rows.extend(entries[lo:hi])
        rows.sort()
        return [(ts, amount) for ts, _, amount in rows]

    def open_holds(self, agent: str) -> list[tuple[str, Units, int, int]]:
        rows = [(acct, h[1], h[2], h[3]) for acct, h in self._holds.items() if h[0] == agent]
        return sorted(rows, key=lambda r: (r[2], r[0]))

    def expired_holds(self, now_us: int) -> list[tuple[str, str, Units]]:
        rows = [(h[3], acct, h[0], h[1]) for acct, h in self._holds.items() if 0 < h[3] <= now_us]
        return [(acct, agent, amount) for _, acct, agent, amount in sorted(rows)]

    def pool_totals(self, pool_ref: str) -> dict[tuple[str, str], tuple[Units, int]]:
        return {k: (v[0], v[1]) for k, v in self._pools.get(pool_ref, {}).items()}

    def by_ref(self, ref: str) -> list[Txn]:
        return list(self._by_ref.get(ref, [])) if ref else []

    def with_id_prefix(self, prefix: str) -> list[Txn]:
        return [t for t in self._txns.values() if t.id.startswith(prefix)]

    def contract_paid(self, contract: str) -> Units:
        return self._contracts.get(contract, 0)

    def count(self) -> int:
        return len(self._txns)

    def volume(self) -> Units | None:
        return self._volume

    def iter_txns(self, kinds: Iterable[str] | None = None) -> Iterator[Txn]:
        wanted = None if kinds is None else set(kinds)
        for t in list(self._txns.values()):
            if wanted is None or t.kind in wanted:
                yield t
