"""Bulk-loading a rebuilt index: a streamed journal into a fresh SQLite file, one pass, bounded memory.

index.py owns the file (a temporary one, renamed into place); this is the loop that fills it: rows go to
SQLite a chunk at a time through ``executemany`` inside one transaction, the aggregate tables are folded
in Python (``Totals``) and written once at the end.  A rebuild handles 10^6 transactions this way
(benchmarks/bench_ledger.py), so the work per transaction is one row and one dict update.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from itertools import repeat
from typing import Any

from token_exchange.ledger.protocols import Chunk
from token_exchange.ledger.timestamps import ts_micros_column
from token_exchange.ledger.txn import EARN_KINDS, Txn, canonical, untimed

INSERT = "INSERT INTO txns(id, ts, kind, agent, amount, ref, hash, data) VALUES(?,?,?,?,?,?,?,?)"


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


def load(db: sqlite3.Connection, chunks: Iterable[Chunk]) -> tuple[str, str, str, int]:
    """Insert every transaction of ``chunks`` and the totals into ``db`` (inside the caller's transaction; the
    ``txns`` table without its secondary indexes).  Returns (position, last_hash, last_ts, volume).

    Column by column, a chunk at a time: ``zip(*txns)`` turns the chunk's transactions into its columns in C,
    ``executemany`` takes the rows as a ``zip`` of columns (no row tuple built in Python), and the only Python
    loop per transaction is the one that counts flows (or, in a chunk that touches a hold or a pool, the same
    per-transaction fold as ever, in journal order)."""
    totals = Totals()
    fold, flows = totals.fold, totals.flows
    position, last_hash, last_ts = "", "", ""
    volume = 0  # the sum of every amount (``Index.volume``)
    for chunk in chunks:
        position = chunk.position
        txns = chunk.txns
        if not txns:
            continue
        texts = chunk.hashed if chunk.hashed is not None and len(chunk.hashed) == len(txns) else \
            [canonical(t.hashed()) for t in txns]
        columns = zip(*txns, strict=True)
        ids, kinds, payers, payees, amounts, agents, projects, _, _, breakdowns, refs, tss, _, hashes = columns
        try:
            micros = ts_micros_column(tss)
        except ValueError as e:  # a block that verifies (its hash covers the text) but whose time is no time
            raise untimed(txns, e) from None
        db.executemany(INSERT, zip(ids, micros, kinds, agents, amounts, refs, hashes, texts, strict=True))
        latest = max(tss)
        if latest > last_ts:
            last_ts = latest
        last_hash = hashes[-1]
        volume += sum(map(abs, amounts))
        # Prefixes tested on a whole column at once (one join, one substring search): a value that starts with
        # "hold:" follows a line break in the join; a false hit (a line break inside a value, which a validated
        # account never holds) only sends the chunk down the per-transaction path, which tests each one.
        if ("\nhold:" in "\n".join(("", *payers)) or "\nhold:" in "\n".join(("", *payees))
                or "\npool:" in "\n".join(("", *refs))):
            for t, us in zip(txns, micros, strict=True):
                if t.payer.startswith("hold:") or t.payee.startswith("hold:") or t.ref.startswith("pool:"):
                    fold(t, us)
                else:
                    totals.fold_flow((t.payer, t.payee, t.agent, t.kind, t.project, t.breakdown.get("contract")),
                                     t.amount)
            continue
        # Totals.fold_flow, inline: the breakdown's contract, or None (an empty breakdown has none).
        for key, amount in zip(zip(payers, payees, agents, kinds, projects,
                                   map(dict.get, breakdowns, repeat("contract")), strict=True), amounts, strict=True):
            flow = flows.get(key)
            if flow is None:
                flows[key] = [amount, 1]
            else:
                flow[0] += amount
                flow[1] += 1
    totals.write(db)
    return position, last_hash, last_ts, volume
