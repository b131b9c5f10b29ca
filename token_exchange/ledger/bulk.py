"""Bulk-loading a rebuilt index: a streamed journal into a fresh SQLite file, one pass, bounded memory.

index.py owns the file (a temporary one, renamed into place); this is the loop that fills it: rows go to
SQLite in batches of ``BULK_ROWS`` through ``executemany`` inside one transaction, the aggregate tables are
folded in Python (``Totals``) and written once at the end.  A rebuild handles 10^6 transactions this way
(benchmarks/bench_ledger.py), so the work per transaction is one row and one dict update.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from token_exchange.ledger.protocols import Chunk
from token_exchange.ledger.txn import EARN_KINDS, Txn, canonical, ts_micros

INSERT = "INSERT INTO txns(id, ts, kind, agent, amount, ref, hash, data) VALUES(?,?,?,?,?,?,?,?)"
BULK_ROWS = 20_000


class Totals:
    """The aggregate tables folded in Python (a rebuild writes them once at the end).

    ``fold`` takes any transaction; one that touches no hold and no pool (most of a ledger) may instead be
    counted by ``fold_flow``: one dict update on its (payer, payee, agent, kind, project, contract), and
    ``settle`` spreads those sums over the tables.  Every table but ``holds`` is a sum, and sums commute:
    the totals are exactly those of folding each transaction in order; holds (the one order-dependent
    table) and pools always go through ``fold``, in journal order."""

    def __init__(self) -> None:
        self.flows: dict[tuple[Any, ...], list[int]] = {}
        self.accounts: dict[str, int] = {}
        self.stats: dict[tuple[str, str], list[int]] = {}
        self.projects: dict[tuple[str, str], int] = {}
        self.contracts: dict[str, int] = {}
        self.holds: dict[str, list[Any]] = {}
        self.pools: dict[tuple[str, str, str], list[int]] = {}

    def fold(self, t: Txn, ts: int) -> None:
        acc = self.accounts
        acc[t.payer] = acc.get(t.payer, 0) - t.amount
        acc[t.payee] = acc.get(t.payee, 0) + t.amount
        if t.agent:
            st = self.stats.get((t.agent, t.kind))
            if st is None:
                self.stats[(t.agent, t.kind)] = [t.amount, 1]
            else:
                st[0] += t.amount
                st[1] += 1
            if t.project and t.kind in EARN_KINDS:
                key = (t.agent, t.project)
                self.projects[key] = self.projects.get(key, 0) + t.amount
        contract = t.breakdown.get("contract") if t.breakdown else None
        if contract and t.kind in EARN_KINDS:
            self.contracts[contract] = self.contracts.get(contract, 0) + t.amount
        if t.payee.startswith("hold:"):
            ttl = t.breakdown.get("ttl", 0)
            expires = ts + ttl * 1_000_000 if isinstance(ttl, int) and ttl > 0 else 0
            hold = self.holds.get(t.payee)
            if hold is None:
                self.holds[t.payee] = [t.agent, t.amount, ts, expires]
            else:
                hold[1] += t.amount
        if t.payer.startswith("hold:"):
            hold = self.holds.get(t.payer)
            if hold is not None:
                hold[1] -= t.amount
                if hold[1] <= 0:
                    del self.holds[t.payer]
        if t.ref.startswith("pool:"):
            key3 = (t.ref, t.agent, t.kind)
            ps = self.pools.get(key3)
            if ps is None:
                self.pools[key3] = [t.amount, 1]
            else:
                ps[0] += t.amount
                ps[1] += 1

    def fold_flow(self, key: tuple[Any, ...], amount: int) -> None:
        """Count a transaction that touches no hold and no pool; ``key``: its (payer, payee, agent, kind, project,
        breakdown's contract or None).  ``load`` does this inline."""
        flow = self.flows.get(key)
        if flow is None:
            self.flows[key] = [amount, 1]
        else:
            flow[0] += amount
            flow[1] += 1

    def settle(self) -> None:
        """Spread the counted transactions over the tables (what ``fold`` adds for each of them)."""
        acc, stats, projects, contracts = self.accounts, self.stats, self.projects, self.contracts
        for (payer, payee, agent, kind, project, contract), (amount, count) in self.flows.items():
            acc[payer] = acc.get(payer, 0) - amount
            acc[payee] = acc.get(payee, 0) + amount
            if agent:
                st = stats.get((agent, kind))
                if st is None:
                    stats[(agent, kind)] = [amount, count]
                else:
                    st[0] += amount
                    st[1] += count
                if project and kind in EARN_KINDS:
                    projects[(agent, project)] = projects.get((agent, project), 0) + amount
            if contract and kind in EARN_KINDS:
                contracts[contract] = contracts.get(contract, 0) + amount
        self.flows.clear()

    def write(self, db: sqlite3.Connection) -> None:
        self.settle()
        db.executemany("INSERT INTO accounts VALUES(?, ?)", self.accounts.items())
        db.executemany("INSERT INTO stats VALUES(?, ?, ?, ?)", ((a, k, v[0], v[1]) for (a, k), v in self.stats.items()))
        db.executemany("INSERT INTO projects VALUES(?, ?, ?)", ((a, p, v) for (a, p), v in self.projects.items()))
        db.executemany("INSERT INTO contracts VALUES(?, ?)", self.contracts.items())
        db.executemany("INSERT INTO holds VALUES(?, ?, ?, ?, ?)", ((k, *v) for k, v in self.holds.items()))
        db.executemany("INSERT INTO pool_stats VALUES(?, ?, ?, ?, ?)",
                       ((p, a, k, v[0], v[1]) for (p, a, k), v in self.pools.items()))


def load(db: sqlite3.Connection, chunks: Iterable[Chunk]) -> tuple[str, str, str]:
    """Insert every transaction of ``chunks`` and the totals into ``db`` (inside the caller's transaction; the
    ``txns`` table without its secondary indexes).  Returns (position, last_hash, last_ts)."""
    totals = Totals()
    fold, flows = totals.fold, totals.flows
    position, last_hash, last_ts = "", "", ""
    rows: list[tuple[Any, ...]] = []
    for chunk in chunks:
        txns = chunk.txns
        texts = chunk.hashed if chunk.hashed is not None and len(chunk.hashed) == len(txns) else \
            [canonical(t.hashed()) for t in txns]
        for t, text in zip(txns, texts, strict=True):
            id_, kind, payer, payee, amount, agent, project, _, _, breakdown, ref, ts, _, hash_ = t
            us = ts_micros(ts)
            rows.append((id_, us, kind, agent, amount, ref, hash_, text))
            if ts > last_ts:
                last_ts = ts
            if payer.startswith("hold:") or payee.startswith("hold:") or ref.startswith("pool:"):
                fold(t, us)
            else:  # Totals.fold_flow, inline
                key = (payer, payee, agent, kind, project, breakdown.get("contract") if breakdown else None)
                flow = flows.get(key)
                if flow is None:
                    flows[key] = [amount, 1]
                else:
                    flow[0] += amount
                    flow[1] += 1
        if txns:
            last_hash = txns[-1].hash
        if len(rows) >= BULK_ROWS:
            db.executemany(INSERT, rows)
            rows = []
        position = chunk.position
    db.executemany(INSERT, rows)
    totals.write(db)
    return position, last_hash, last_ts
