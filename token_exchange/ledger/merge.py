"""How journals that merge by union (git notes) settle two records of one id: the earliest wins."""

from __future__ import annotations

from collections.abc import Callable

from token_exchange.ledger.txn import Txn


def settle(lookup: Callable[[str], Txn | None], txns: list[Txn]) -> tuple[list[Txn], bool]:
    """Two clones can pay the same change differently, leaving two records of one id.  Every replica
    settles it the same way: the earliest ``(ts, hash)`` wins.  ``lookup`` finds an already indexed
    record.  Returns the records to index and whether an indexed record lost (then the caller rebuilds
    the index).  ``tx doctor`` still reports every such conflict."""
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
        old = lookup(t.id)
        if old is None or old.fingerprint() == t.fingerprint():
            out.append(t)
        elif (t.ts, t.hash) < (old.ts, old.hash):
            rebuild = True
    return out, rebuild
