"""The TOML journal's fast lane: runs of plainly written batches, read with one regular expression per block.

Nearly every batch in a ledger.toml is exactly what ``render_batch`` wrote: a ``# batch N`` line, then N
blocks with the fields in the writer's order and no escape sequence in any value.  For such a block the
text between the quotes *is* the value and also its canonical JSON encoding, so the canonical text the
hash covers is assembled by one format operation instead of a JSON round trip (a rebuild reads 10^6
blocks, benchmarks/bench_ledger.py).  Each block's hash and the chain inside the run are verified here;
anything else (an escape, another field order, a bad hash, garbage) is handed back as a stretch for the
exact reader in toml.py, which decides about it as it always did.  A run is only ever a subset of what
the exact reader accepts, with the same transactions and texts (tests/test_ledger_rebuild.py).
"""

from __future__ import annotations

import re
from hashlib import sha256

from token_exchange.errors import UserError
from token_exchange.ledger.backends.tomlunits import CACHE_MAX, UNITS, cached_units
from token_exchange.ledger.txn import Txn, canonical_table

# A JSON string without escapes or control characters: its inner text is the value, and
# ``json.encoder.encode_basestring`` (the canonical encoder) gives it back unchanged.  Every repeat and
# optional part is possessive (``*+``, ``?+``): what follows each can never start inside it (a value ends at
# its quote, a key at `` = ``, an optional line before the next field's name), so giving characters back
# could never make a block match, and sre keeps no state to give them back (a fifth fewer instructions).
_S = r'"([^"\\\x00-\x1f]*+)"'
_META = r'((?:{0}\.[A-Za-z0-9_-]{{1,40}}+ = (?:"[^"\\\x00-\x1f]*+"|-?(?:0|[1-9][0-9]*+))\n)*+)'
_BLOCK = re.compile(
    r"(?:# batch ([1-9][0-9]{0,8}+)\n)?+\[\[transaction\]\]\n"
    rf"id = {_S}\nts = {_S}\nkind = {_S}\n(?:agent = {_S}\n)?+payer = {_S}\npayee = {_S}\namount = {_S}\n"
    rf"(?:project = {_S}\n)?+(?:description = {_S}\n)?+(?:ref = {_S}\n)?+"
    + _META.format("source") + _META.format("breakdown")
    + r'(?:prev = "(.{64})"\n)?+hash = "(.{64})"\n')  # hex: a hash equals a hexdigest, see parse_runs
# The canonical text, canonical(Txn.hashed()) (sorted keys, no spaces; txn.canonical_hashed builds the same
# text from a dict), is one f-string in parse_runs: a join of its pieces, about half the work of a % format.
_HEX = re.compile(r"[0-9a-f]{64}")
_TABLES: dict[str, tuple[dict[str, str | int], str]] = {}
_EMPTY: tuple[dict[str, str | int], str] = ({}, "{}")


def _table(lines: str) -> tuple[dict[str, str | int], str]:
    """``source.k = v`` lines (as matched by ``_BLOCK``) -> ({k: v}, its canonical text); remembered."""
    hit = _TABLES.get(lines)
    if hit is None:
        table: dict[str, str | int] = {}
        for line in lines[:-1].split("\n"):
            key, _, raw = line.partition(" = ")
            table[key.partition(".")[2]] = raw[1:-1] if raw[0] == '"' else int(raw)
        if len(table) != lines.count("\n"):
            raise ValueError("a key given twice")  # the exact reader decides what that means
        if len(_TABLES) > CACHE_MAX:
            _TABLES.clear()
        hit = _TABLES[lines] = (table, canonical_table(table))
    return hit


Segment = tuple[int, int, list[Txn] | None, list[str] | None]


def parse_runs(text: str) -> list[Segment]:
    """Cut ``text`` (decoded journal bytes that end at a batch boundary) into segments (start, end, txns,
    texts), offsets into ``text``: runs of whole plain batches, parsed and hash-verified, chained within the
    run (the first ``prev`` is the caller's to check), and stretches (txns None) for the exact reader, each
    reaching to the next ``# batch`` line."""
    segments: list[Segment] = []
    pos, size = 0, len(text)
    match, tables, amounts, new, digest = _BLOCK.match, _TABLES, UNITS, tuple.__new__, sha256
    while pos < size:
        txns: list[Txn] = []
        texts: list[str] = []
        done, kept, left, at = pos, 0, 0, pos
        prev: str | None = None
        try:
            while (m := match(text, at)) is not None:
                count, id_, ts, kind, agent, payer, payee, amount, project, desc, ref, src, brk, prv, h = m.groups("")
                if count:
                    if left:
                        break
                    left = int(count)
                elif not left:
                    break
                if prv != prev and (prev is not None or not (prv == "" or _HEX.fullmatch(prv))):
                    break  # within a run each prev is the hash before it; the first is the caller's to check
                u = amounts.get(amount)
                if u is None:
                    u = cached_units(amount, 0)
                source, src_text = (tables.get(src) or _table(src)) if src else _EMPTY
                breakdown, brk_text = (tables.get(brk) or _table(brk)) if brk else _EMPTY
                c = (f'{{"agent":"{agent}","amount":{u},"breakdown":{brk_text},"description":"{desc}","id":"{id_}",'
                     f'"kind":"{kind}","payee":"{payee}","payer":"{payer}","prev":"{prv}","project":"{project}",'
                     f'"ref":"{ref}","source":{src_text},"ts":"{ts}"}}')
                if digest(c.encode()).hexdigest() != h:
                    break
                prev = h
                # Txn(...) without its Python-level __new__; each transaction gets its own tables (never shared).
                txns.append(new(Txn, (id_, kind, payer, payee, u, agent, project, desc, dict(source), dict(breakdown),
                                      ref, ts, prv, h)))
                texts.append(c)
                at = m.end()
                left -= 1
                if not left:
                    done, kept = at, len(txns)
        except (ValueError, UserError):
            pass  # an amount or a table the exact reader must judge
        if done > pos:
            del txns[kept:], texts[kept:]
            segments.append((pos, done, txns, texts))
        if done >= size:
            break
        nxt = text.find("\n# batch ", done + 1)
        end = size if nxt < 0 else nxt + 1
        segments.append((done, end, None, None))
        pos = end
    return segments
