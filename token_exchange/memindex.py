"""The ledger index over plain dicts: the same answers as the SQLite ``Index``, no SQL.

For throwaway homes with one writer (``tx simulate``), where the index never
needs to outlive the process and per-statement SQLite costs dominate.  A
property test checks every query against the SQLite index on random ledgers.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from token_exchange.amounts import Units
from token_exchange.errors import IdConflict
from token_exchange.ledger import EARN_KINDS, INDEX_VERSION, SPEND_KINDS, Balance, Txn, ts_micros


class MemoryIndex:
    """Drop-in for ``ledger.Index`` (same methods, same results) kept in memory."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.reset()

    def reset(self) -> None:
        self._meta: dict[str, str] = {"version": INDEX_VERSION}
        self._txns: dict[str, Txn] = {}  # insertion order is seq order
        self._accounts: dict[str, Units] = defaultdict(int)
        self._stats: dict[str, dict[str, list[int]]] = defaultdict(dict)  # agent -> kind -> [total, count]
        self._projects: dict[str, dict[str, Units]] = defaultdict(dict)
        self._contracts: dict[str, Units] = defaultdict(int)
        self._holds: dict[str, list[Any]] = {}  # account -> [agent, amount, ts, expires]
        self._pools: dict[str, dict[tuple[str, str], list[int]]] = defaultdict(dict)
        self._by_agent: dict[str, list[Txn]] = defaultdict(list)
        self._by_ref: dict[str, Txn | list[Txn]] = {}  # one Txn, or a list once a ref has several
        self._windows: dict[tuple[str, str], _Window] = {}

    def close(self) -> None:
        pass

    def meta(self, key: str) -> str | None:
        return self._meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        self._meta[key] = value

    def add(self, txns: Iterable[Txn], position: str, last_hash: str | None) -> list[str]:
        txns = txns if isinstance(txns, list) else list(txns)
        dup: list[str] = []
        if len(txns) == 1:  # the usual append: no batch to cross-check
            t = txns[0]
            old = self._txns.get(t.id)
            if old is None:
                self._insert(t)
            elif old.fingerprint() != t.fingerprint():
                raise IdConflict(f"transaction {t.id} exists with different content")
            else:
                dup.append(t.id)
        else:
            batch: dict[str, Txn] = {}
            for t in txns:  # validate everything before changing anything (all or nothing, like SQL)
                old = batch.get(t.id) or self._txns.get(t.id)
                if old is not None and old.fingerprint() != t.fingerprint():
                    raise IdConflict(f"transaction {t.id} exists with different content")
                batch.setdefault(t.id, t)
            for t in txns:
                if t.id in self._txns:
                    dup.append(t.id)
                    continue
                self._insert(t)
        self._meta["position"] = position
        if last_hash is not None:
            self._meta["last_hash"] = last_hash
        return dup

    def _insert(self, t: Txn) -> None:
        tid, kind, payer, payee, amount, agent, project, _, _, breakdown, ref, ts_text, _, _ = t
        ts = ts_micros(ts_text)
        self._txns[tid] = t
        accounts = self._accounts
        accounts[payer] -= amount
        accounts[payee] += amount
        if agent:
            kinds = self._stats[agent]
            st = kinds.get(kind)
            if st is None:
                st = kinds[kind] = [0, 0]
            st[0] += amount
            st[1] += 1
            self._by_agent[agent].append(t)
            window = self._windows.get((agent, kind))
            if window is None:
                window = self._windows[(agent, kind)] = _Window()
            window.add(ts, amount)
            if kind in EARN_KINDS and project:
                proj = self._projects[agent]
                proj[project] = proj.get(project, 0) + amount
        contract = breakdown.get("contract")
        if contract and kind in EARN_KINDS:
            self._contracts[contract] += amount
        if payee.startswith("hold:"):
            ttl = breakdown.get("ttl", 0)
            expires = ts + ttl * 1_000_000 if isinstance(ttl, int) and ttl > 0 else 0
            hold = self._holds.get(payee)
            if hold is None:
                self._holds[payee] = [agent, amount, ts, expires]
            else:
                hold[1] += amount
        if payer.startswith("hold:") and payer in self._holds:
            self._holds[payer][1] -= amount
            if self._holds[payer][1] <= 0:
                del self._holds[payer]
        if ref:
            same = self._by_ref.get(ref)
            if same is None:
                self._by_ref[ref] = t
            elif isinstance(same, list):
                same.append(t)
            else:
                self._by_ref[ref] = [same, t]
            if ref.startswith("pool:"):
                pool = self._pools[ref]
                ps = pool.get((agent, kind))
                if ps is None:
                    ps = pool[(agent, kind)] = [0, 0]
                ps[0] += amount
                ps[1] += 1

    # --- queries (see ledger.Index for what each means) -----------------------------------
    def get(self, id: str) -> Txn | None:
        return self._txns.get(id)

    def account(self, account: str) -> Units:
        return self._accounts.get(account, 0)

    def accounts(self, prefix: str = "") -> dict[str, Units]:
        return {a: b for a, b in self._accounts.items() if a.startswith(prefix)}

    def balance(self, agent: str) -> Balance:
        kinds = {k: v[0] for k, v in self._stats.get(agent, {}).items()}
        return Balance(agent, self.account(agent), sum(kinds.get(k, 0) for k in EARN_KINDS),
                       sum(kinds.get(k, 0) for k in SPEND_KINDS), kinds, dict(self._projects.get(agent, {})))

    def agents(self) -> list[str]:
        return sorted(a for a, kinds in self._stats.items() if a and kinds)

    def history(self, agent: str, limit: int) -> list[Txn]:
        return self._by_agent.get(agent, [])[-limit:][::-1] if limit > 0 else []

    def window_sum(self, agent: str, kinds: Iterable[str], since_us: int) -> Units:
        total = 0
        for kind in set(kinds):
            window = self._windows.get((agent, kind))
            if window is not None:
                total += window.total_since(since_us)
        return total

    def window_entries(self, agent: str, kinds: Iterable[str], since_us: int) -> list[tuple[int, Units]]:
        rows: list[tuple[int, Units]] = []
        for kind in set(kinds):
            window = self._windows.get((agent, kind))
            if window is not None:
                k = bisect.bisect_left(window.ts, since_us)
                rows.extend(zip(window.ts[k:], window.amounts[k:], strict=True))
        rows.sort(key=lambda row: row[0])  # oldest first (like SQL's ORDER BY ts, equal times in no set order)
        return rows

    def open_holds(self, agent: str) -> list[tuple[str, Units, int, int]]:
        rows = [(acct, h[1], h[2], h[3]) for acct, h in self._holds.items() if h[0] == agent]
        return sorted(rows, key=lambda r: (r[2], r[0]))

    def expired_holds(self, now_us: int) -> list[tuple[str, str, Units]]:
        rows = [(h[3], acct, h[0], h[1]) for acct, h in self._holds.items() if 0 < h[3] <= now_us]
        return [(acct, agent, amount) for _, acct, agent, amount in sorted(rows)]

    def pool_totals(self, pool_ref: str) -> dict[tuple[str, str], tuple[Units, int]]:
        return {k: (v[0], v[1]) for k, v in self._pools.get(pool_ref, {}).items()}

    def by_ref(self, ref: str) -> list[Txn]:
        same = self._by_ref.get(ref) if ref else None
        if same is None:
            return []
        return list(same) if isinstance(same, list) else [same]

    def contract_paid(self, contract: str) -> Units:
        return self._contracts.get(contract, 0)

    def count(self) -> int:
        return len(self._txns)

    def iter_txns(self, kinds: Iterable[str] | None = None) -> Iterator[Txn]:
        wanted = None if kinds is None else set(kinds)
        for t in list(self._txns.values()):
            if wanted is None or t.kind in wanted:
                yield t


class _Window:
    """One (agent, kind)'s entries in time order, with running sums (``cum[k]``: the sum of the first k
    amounts), so a window's total is a bisect and a subtraction however many entries it holds."""

    __slots__ = ("amounts", "cum", "ts")

    def __init__(self) -> None:
        self.ts: list[int] = []
        self.amounts: list[Units] = []
        self.cum: list[Units] = [0]

    def add(self, ts: int, amount: Units) -> None:
        if not self.ts or self.ts[-1] <= ts:  # in time order: append
            self.ts.append(ts)
            self.amounts.append(amount)
            self.cum.append(self.cum[-1] + amount)
            return
        k = bisect.bisect_right(self.ts, ts)  # an older timestamp (an import, a merge): re-sum the tail
        self.ts.insert(k, ts)
        self.amounts.insert(k, amount)
        self.cum[k:] = itertools.accumulate(self.amounts[k:], initial=self.cum[k])

    def total_since(self, since_us: int) -> Units:
        return self.cum[-1] - self.cum[bisect.bisect_left(self.ts, since_us)]
