"""One change paid twice by two clones that had not synced: found after a merge, the later one reversed.

Clone B amends (or rebases, squashes) clone A's commit before it has A's ledger: B's hook cannot see A's
payment and pays the rewritten commit under its new id, recording the ids of the commits it rewrote
(``source.origins``).  Once the ledgers merge, such a payment whose origin is paid under another id is
the same change paid twice.  Every replica decides it the same way (the payment made later, by its
earliest share's ``(ts, hash)``, loses) and writes the same reversals (``reversal:<share id>``, equal
content), so reversals from several clones merge into one.  ``tx sync`` resolves them; ``tx doctor``
reports any left and ``--repair`` resolves them too.
"""

from __future__ import annotations

from typing import NamedTuple

from token_exchange.ledger.protocols import Index
from token_exchange.services.corrections import reversal_id, reverse
from token_exchange.services.exchange import Exchange, IndexView


class Double(NamedTuple):
    loser: str  # commit:<id> whose shares are reversed
    winner: str
    shares: tuple[str, ...]  # the loser's share transaction ids

    @property
    def reason(self) -> str:
        return f"paid twice: the same change was paid first as {self.winner[:120]}"


def doubles(idx: Index) -> list[Double]:
    """Every change paid under two refs (one recorded the other as the commit it rewrote)."""
    view = IndexView(idx)
    shares: dict[str, list[tuple[str, str, str]]] = {}  # ref -> (ts, hash, id) of its earn shares
    origins: dict[str, set[str]] = {}
    for t in idx.iter_txns(["earn"]):
        shares.setdefault(t.ref, []).append((t.ts, t.hash, t.id))
        found = t.source.get("origins")
        if isinstance(found, str) and found:
            origins.setdefault(t.ref, set()).update(found.split(","))
    out: dict[str, Double] = {}
    for ref, ids in origins.items():
        for other in {p.ref for p in view.payments(sorted(ids))} - {ref}:
            if other not in shares:
                continue
            first, second = sorted((ref, other), key=lambda r: min(shares[r]))
            if second not in out:
                out[second] = Double(second, first, tuple(i for _, _, i in sorted(shares[second])))
    return sorted(out.values())


def unresolved(idx: Index) -> list[Double]:
    return [d for d in doubles(idx) if any(idx.get(reversal_id(s)) is None for s in d.shares)]


def resolve(ex: Exchange) -> list[Double]:
    """Reverse the later payment of every change paid twice (idempotent; the same reversals on every clone)."""
    with ex.ledger.locked() as idx:
        todo = unresolved(idx)
        for d in todo:
            for share in d.shares:
                original = idx.get(share)
                if original is not None and original.amount and idx.get(reversal_id(share)) is None:
                    reverse(ex, share, d.reason)
    return todo

