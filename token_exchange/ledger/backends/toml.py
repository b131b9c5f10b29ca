"""The repo-local TOML journal: ``ledger.toml``, one ``[[transaction]]`` block per entry.

Long because a backend is one file behind one protocol (``ledger.protocols``): the strict block
reader, torn-tail recovery, the checkpoint fast path and the merge driver's view all live here.

Blocks are only ever appended, never rewritten.  Each write is one batch: a ``# batch N`` line then N
blocks, in one ``write`` + ``fsync``.  A batch is committed when all N blocks are complete (each ends
with its ``hash`` line), so a writer killed at any byte leaves a *torn* tail that no reader counts:
batches are all-or-nothing.  Blocks written before batch lines existed (a v1 file) count one by one.

The file is valid TOML that any reader can load (batch lines are comments), but we write a strict
subset (basic strings that are also JSON strings, integers, dotted keys).  Batches exactly as the writer
wrote them (no escapes, the writer's field order) are read by the fast lane, tomlruns.py; any other run
of blocks is turned into one JSON document and parsed at C speed, or, if anything about it is odd, block
by block by the exact parser, which names what is wrong.  All three read a block the same way or not at
all (a rebuild streams 10^6 blocks, see benchmarks/bench_ledger.py).

Nothing here ever cuts or rewrites the journal on a read.  A tail that does not verify (a partial
batch, an edited block, a broken chain, garbage) stops every reader and writer with one line naming
the byte and the problem; ``tx doctor --repair`` moves it, with everything after it, to a quarantine
file (``set_aside``).  A torn tail (incomplete last batch) is moved to ``ledger.torn`` by the next
writer: it was never acknowledged to anyone.

Over 400 lines on purpose: the format (render, the fast and the exact parser) and the streaming reader
that enforces its rules are one unit; split, each half would only make sense next to the other.
"""

# No ``from __future__ import annotations``: NamedTuple fields are real types here (docs/DEVELOPING.md, Hot paths).

import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from token_exchange.amounts import fmt
from token_exchange.errors import UserError
from token_exchange.ledger.backends.tomlunits import cached_units, units
from token_exchange.ledger.protocols import Chunk, Index, Tail
from token_exchange.ledger.txn import Txn, canonical, canonical_hashed, chain, chain_problems
from token_exchange.storage import append_durably, fsync_dir

if TYPE_CHECKING:  # pragma: no cover
    from token_exchange.ledger.ledger import Ledger

HEADER = b"# token-exchange ledger v2. Append-only: never edit; `tx doctor` detects any change.\n"
HEADER_PREFIX = b"# token-exchange ledger v"
BLOCK = "[[transaction]]\n"
BLOCK_B = BLOCK.encode()
_FIELDS = ("id", "ts", "kind", "agent", "payer", "payee", "amount", "project", "description", "ref")
_BOUNDARY = re.compile(rb"\n(?=\[\[transaction\]\]\n|#)")
_BATCH = re.compile(rb"# batch ([1-9][0-9]{0,8})\n")
# After the plain replaces in ``parse_blocks`` only whole-number values (source./breakdown.) still have
# `` = `` after their key; a quote preceded by ``{`` or ``,`` is structural (never inside a JSON string).
_INT_FIELD = re.compile(r'(?<=[{,])"((?:source|breakdown)\.[A-Za-z0-9_-]+) = (?=-?[0-9])')
_LINES = re.compile(r'(?:\[\[transaction\]\]\n(?:(?:id|ts|kind|agent|payer|payee|amount|project|description|ref'
                    r'|prev|hash|(?:source|breakdown)\.[^\n"\\ =]++) = '
                    r'(?:"(?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*+"|-?(?:0|[1-9][0-9]*))\n)+)+')
_ALLOWED = frozenset((*_FIELDS, "prev", "hash"))
_HASH_LINE = re.compile(rb'\nhash = "[0-9a-f]{64}"\n\Z')
READ_SIZE = 4 << 20
CHUNK_TXNS = 4096
PARSE_GROUP = 1024


def _s(value: str) -> str:
    # A JSON string with raw non-ASCII is a valid TOML basic string, except DEL.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _v(value: Any) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else _s(str(value))


def render(t: Txn) -> str:
    lines = [BLOCK]
    for name in _FIELDS:
        value = fmt(t.amount) if name == "amount" else getattr(t, name)
        if value or name in ("id", "ts", "kind", "payer", "payee", "amount"):
            lines.append(f"{name} = {_s(value)}\n")
    for table in ("source", "breakdown"):
        for k, v in getattr(t, table).items():
            lines.append(f"{table}.{k} = {_v(v)}\n")
    if t.prev:
        lines.append(f"prev = {_s(t.prev)}\n")
    lines.append(f"hash = {_s(t.hash)}\n")
    return "".join(lines)


def render_batch(txns: list[Txn]) -> bytes:
    return (f"# batch {len(txns)}\n" + "".join(render(t) for t in txns)).encode("utf-8")


def _txn(d: dict[str, Any], where: int, strict: bool = True) -> Txn:
    """A block's fields -> Txn.  ``strict`` False: the fast path already guarantees that every plain value is
    a string (any other JSON value there makes its document invalid)."""
    source: dict[str, Any] = {}
    breakdown: dict[str, Any] = {}
    for key in [k for k in d if "." in k]:
        table, _, sub = key.partition(".")
        value = d.pop(key)
        if not (type(value) is str or type(value) is int):
            raise ValueError(f"byte {where}: {key[:40]} must be text or a whole number")
        if table == "source":
            source[sub] = value
        elif table == "breakdown":
            breakdown[sub] = value
        else:
            raise ValueError(f"byte {where}: unexpected key {key[:40]!r}")
    if not d.keys() <= _ALLOWED:
        raise ValueError(f"byte {where}: unexpected key {min(d.keys() - _ALLOWED)[:40]!r}")
    try:
        get = d.get
        t = Txn(d["id"], d["kind"], d["payer"], d["payee"], units(d["amount"], where), get("agent", ""),
                get("project", ""), get("description", ""), source, breakdown, get("ref", ""), d["ts"],
                get("prev", ""), d["hash"])
    except KeyError as e:
        raise ValueError(f"byte {where}: block lacks {e.args[0]}") from None
    if strict and not all(type(v) is str for v in d.values()):
        raise ValueError(f"byte {where}: every field but source./breakdown. values must be text")
    return t


def _fast(d: dict[str, Any], where: int) -> tuple[Txn, str]:
    """One block's fields (all plain values are strings, see ``parse_blocks``) -> (Txn, the canonical text its
    hash covers).  ``d`` is turned into the hashed form in place: no second dict, one encoding."""
    source: dict[str, Any] = {}
    breakdown: dict[str, Any] = {}
    for key in [k for k in d if "." in k]:
        table, _, sub = key.partition(".")
        value = d.pop(key)
        if not (type(value) is str or type(value) is int):
            raise ValueError(f"byte {where}: {key[:40]} must be text or a whole number")
        if table == "source":
            source[sub] = value
        elif table == "breakdown":
            breakdown[sub] = value
        else:
            raise ValueError(f"byte {where}: unexpected key {key[:40]!r}")
    if not d.keys() <= _ALLOWED:
        raise ValueError(f"byte {where}: unexpected key {min(d.keys() - _ALLOWED)[:40]!r}")
    try:
        h = d.pop("hash")
        amount = d["amount"] = cached_units(d["amount"], where)
        for k in ("agent", "project", "description", "ref", "prev"):
            if k not in d:
                d[k] = ""
        d["source"] = source
        d["breakdown"] = breakdown
        t = Txn(d["id"], d["kind"], d["payer"], d["payee"], amount, d["agent"], d["project"], d["description"],
                source, breakdown, d["ref"], d["ts"], d["prev"], h)
    except KeyError as e:
        raise ValueError(f"byte {where}: block lacks {e.args[0]}") from None
    return t, canonical_hashed(d)


def parse_block(text: str, where: int) -> Txn:
    """Parse one block we wrote, line by line (the slow path that names a bad line); ValueError if odd."""
    d: dict[str, Any] = {}
    for line in text.split("\n"):  # only "\n" ends a line (a value may hold U+2028 or U+0085 raw)
        if not line or line == "[[transaction]]":
            continue
        key, sep, raw = line.partition(" = ")
        if not sep:
            raise ValueError(f"byte {where}: unexpected line {line[:60]!r}")
        if key in d:
            raise ValueError(f"byte {where}: {key[:40]} given twice")
        d[key] = json.loads(raw)
    return _txn(d, where)


def parse_blocks(pieces: list[tuple[int, bytes]]) -> tuple[list[tuple[Txn, str]], tuple[int, str] | None]:
    """Many blocks at once: C-level replaces turn the run into one JSON array, parsed by one ``json.loads``.

    Every line is ``key = <JSON value>`` and a JSON string never holds a raw newline or an unescaped
    quote, so newlines and `` = "`` are structural.  Anything odd makes the document invalid and falls
    back to the line-by-line parser, which names the block.  Returns the transactions and, if one
    block is wrong, (its index, what is wrong) with the ones before it.  Each transaction comes with the
    canonical text its hash covers (``canonical(t.hashed())``)."""
    if not pieces:
        return [], None
    try:
        text = b"".join(p for _, p in pieces).decode("utf-8")
        body = (text[len(BLOCK):-1].replace("\n" + BLOCK, '},{"').replace("\n", ',"').replace(' = "', '":"'))
        if " = " in body:
            body = _INT_FIELD.sub(r'"\1":', body)
        dicts = json.loads('[{"' + body + "}]")
        # Exactly what the line-by-line parser reads: every line one key (its text, no " = ") and one JSON value,
        # and no key given twice (JSON would keep the last).
        if len(dicts) == len(pieces) and all(type(d) is dict and len(d) == p.count(b"\n") - 1
                                             for (_, p), d in zip(pieces, dicts, strict=True)) \
                and _LINES.fullmatch(text):
            return [_fast(d, where) for (where, _), d in zip(pieces, dicts, strict=True)], None
    except (ValueError, TypeError, KeyError, UnicodeDecodeError, UserError):
        pass
    return parse_slowly(pieces)


def parse_slowly(pieces: list[tuple[int, bytes]]) -> tuple[list[tuple[Txn, str]], tuple[int, str] | None]:
    """One block at a time, naming the first that is wrong."""
    slow: list[tuple[Txn, str]] = []
    for n, (where, piece) in enumerate(pieces):
        try:
            t = _slow(where, piece)
            slow.append((t, canonical(t.hashed())))
        except ValueError as e:
            return slow, (n, str(e))
    return slow, None


def _slow(where: int, piece: bytes) -> Txn:
    try:
        return parse_block(piece.decode("utf-8"), where)
    except UnicodeDecodeError:
        raise ValueError(f"byte {where}: block is not UTF-8") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"byte {where}: a value is not valid ({e.msg})") from None
    except UserError as e:
        raise ValueError(str(e)) from None


class _Run(NamedTuple):
    """Whole plain batches the fast lane read and verified (tomlruns.py): bytes [start, end) of the journal,
    ``data[offset:]`` of them.  The exact reader takes them as they are only where it would read them so."""

    start: int
    end: int
    txns: list[Txn]
    texts: list[str]
    data: bytearray  # never written again once read
    offset: int
    last: bool  # the run ends the file

    def pieces(self) -> list[tuple[int, bytes, bool]]:
        return _split(bytes(self.data[self.offset:self.offset + self.end - self.start]), self.start, self.last)


def _split(buf: bytes, base: int, final: bool) -> list[tuple[int, bytes, bool]]:
    """(offset, piece, last) of ``buf``, which begins a piece and ends one (or, ``final``, the file): a piece is
    one ``#`` line or one block; the file's last one may be incomplete."""
    out = []
    pos = 0
    for m in _BOUNDARY.finditer(buf):
        cut = m.start() + 1
        if cut > pos:
            out.append((base + pos, buf[pos:cut], False))
        pos = cut
    if pos < len(buf):
        out.append((base + pos, buf[pos:], final))
    return out


def _items(f: Any, start: int) -> Iterator[_Run | tuple[int, bytes, bool]]:
    """The journal from ``start`` as pieces for the exact reader, runs of plain batches already read: each read
    ends before its last ``# batch`` line, a boundary that is also a piece's.  The bytes are read once, into a
    new buffer after what the last read left over (nothing is copied to slice or join them)."""
    f.seek(start)
    carry = b""
    base = start
    while True:
        buf = bytearray(len(carry) + READ_SIZE)
        buf[:len(carry)] = carry
        got = f.readinto(memoryview(buf)[len(carry):])
        end = len(carry) + got
        if not end:
            return
        cut = end if not got else buf.rfind(b"\n# batch ", 0, end) + 1
        if cut <= 0:  # no batch line yet (a huge batch, or a file from before batch lines)
            if end < 8 * READ_SIZE:
                carry = bytes(buf[:end])
                continue
            cut = max(buf.rfind(b"\n#", 0, end), buf.rfind(b"\n" + BLOCK_B, 0, end)) + 1
            if cut <= 0:
                carry = bytes(buf[:end])
                continue
            yield from _split(bytes(buf[:cut]), base, False)
        else:
            yield from _region(buf, cut, base, not got)
        carry = bytes(buf[cut:end])
        base += cut


def _region(buf: bytearray, size: int, base: int, final: bool) -> Iterator[_Run | tuple[int, bytes, bool]]:
    """``buf[:size]``, which starts at byte ``base`` of the journal (``final``: and ends it), as runs and pieces."""
    from token_exchange.ledger.backends.tomlruns import parse_runs  # a reader's: a writer (every hook) never reads

    view = memoryview(buf)[:size]
    try:
        text = str(view, "utf-8")
    except UnicodeDecodeError:
        yield from _split(bytes(view), base, final)
        return
    plain = len(text) == size  # ASCII: character offsets are byte offsets
    end = 0
    for s, e, txns, texts in parse_runs(text):
        start, end = end, (e if plain else end + len(text[s:e].encode("utf-8")))
        last = final and end == size
        if txns is None or texts is None:
            yield from _split(bytes(view[start:end]), base + start, last)
        else:
            yield _Run(base + start, base + end, txns, texts, buf, start, last)


class TomlJournal:
    """Journal in ``HOME/ledger.toml``; position = byte offset of the committed end indexed through."""

    name = "toml"

    def __init__(self, home: Path, cfg: Any = None) -> None:
        self.path = home / "ledger.toml"
        self.torn_path = home / "ledger.torn"
        self.home = home

    def lock_path(self) -> Path:
        return self.home / "ledger.lock"

    def end(self) -> str:
        try:
            return str(os.stat(self.path).st_size)
        except FileNotFoundError:
            return "0"

    def is_behind(self, position: str, end: str) -> bool:
        pos = position or "0"
        return pos.isdigit() and end.isdigit() and int(pos) <= int(end)

    def setup(self) -> dict[str, Any]:
        return {}

    def existing(self) -> str | None:
        return "ledger.toml" if self.path.is_file() else None

    # --- reading -----------------------------------------------------------------------------------
    def verify_position(self, position: str, last_hash: str) -> str:
        pos = int(position or 0)
        size = int(self.end())
        if pos > size:
            return (f"ledger.toml has {size} bytes but the index has read {pos}: acknowledged transactions "
                    "are missing (truncated?)")
        if pos == 0:
            return ""
        with open(self.path, "rb") as f:
            lo = max(0, pos - 65536)
            f.seek(lo)
            window = f.read(pos - lo)
        start = window.rfind(b"\n" + BLOCK_B)
        block = window[start + 1:] if start >= 0 else (window if window.startswith(BLOCK_B) else b"")
        ok = False
        if block and _HASH_LINE.search(b"\n" + block):
            try:
                t = _slow(pos - len(block), block)
                ok = t.hash == last_hash and t.compute_hash() == t.hash
            except ValueError:
                ok = False
        if not ok:
            return (f"ledger.toml changed before byte {pos} (where the index stopped reading): the block ending "
                    "there is not the last indexed transaction (an edit, or bytes inserted or removed)")
        return ""

    def chunks(self, position: str = "") -> Iterator[Chunk]:
        start = int(position or 0)
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            yield Chunk([], "0")
            return
        with f:
            yield from self._scan(f, start)

    def _scan(self, f: Any, start: int) -> Iterator[Chunk]:
        """Two layers: a structural pass groups pieces into complete batches (or finds a tail); runs of
        batches are then parsed and verified together (hash, chain).  A batch is committed only whole."""
        state: dict[str, Any] = {"prev": "" if start == 0 else None, "committed": start}
        out: list[Txn] = []
        texts: list[str] = []  # the canonical text each hash covers (the index stores it as is)
        pending: list[tuple[int, int, list[tuple[int, bytes]]]] = []  # (start, end, blocks), not yet verified

        def verify() -> Tail | None:
            flat = [p for _, _, blocks in pending for p in blocks]
            txns, bad = parse_blocks(flat)
            if bad is None:  # the common case in one tight loop; anything odd is redone block by block below
                prev = state["prev"]
                for t, c in txns:
                    if sha256(c.encode()).hexdigest() != t.hash or (prev is not None and t.prev != prev):
                        break
                    prev = t.hash
                else:
                    state["prev"] = prev
                    out.extend([t for t, _ in txns])
                    texts.extend([c for _, c in txns])
                    if pending:
                        state["committed"] = pending[-1][1]
                    pending.clear()
                    return None
            i = 0
            for b_start, b_end, blocks in pending:
                batch = txns[i:i + len(blocks)]
                problem = bad[1] if bad is not None and i + len(blocks) > bad[0] else ""
                hashed = []
                for n, ((t, c), (where, piece)) in enumerate(zip(batch, blocks, strict=False)):
                    if problem:
                        break
                    if sha256(c.encode()).hexdigest() != t.hash:
                        slow, _ = parse_slowly([(where, piece)])  # never trust the fast path with a verdict
                        if slow and slow[0][0] != t:
                            t, c = slow[0]
                            batch[n] = (t, c)
                    if sha256(c.encode()).hexdigest() != t.hash:
                        problem = f"byte {where}: transaction {t.id} does not match its hash (edited?)"
                    elif state["prev"] is not None and t.prev != state["prev"]:
                        problem = (f"byte {where}: transaction {t.id}: chain broken (its prev is not the hash of "
                                   "the block before it: a block was edited, removed or reordered)")
                    else:
                        state["prev"] = t.hash
                        hashed.append(c)
                if problem:
                    pending.clear()
                    return Tail(b_start, 0, problem)
                out.extend(t for t, _ in batch)
                texts.extend(hashed)
                state["committed"] = b_end
                i += len(blocks)
            pending.clear()
            return None

        batch_left = 0  # blocks still expected by the open batch
        batch_at = start
        blocks: list[tuple[int, bytes]] = []
        waiting = 0
        size = self._size(f)
        for item in _items(f, start):
            if isinstance(item, _Run):
                if not batch_left:  # the exact reader is between batches: verify what it holds, then take the run
                    bad = verify()
                    waiting = 0
                    if bad is not None:
                        yield Chunk(out, str(state["committed"]), bad._replace(size=size - bad.offset), texts)
                        return
                    if state["prev"] is None or item.txns[0].prev == state["prev"]:
                        state["prev"], state["committed"] = item.txns[-1].hash, item.end
                        out.extend(item.txns)
                        texts.extend(item.texts)
                        if len(out) >= CHUNK_TXNS:
                            yield Chunk(out, str(state["committed"]), None, texts)
                            out, texts = [], []
                        continue
                pieces = item.pieces()  # it does not continue what came before: the exact reader says why
            else:
                pieces = [item]
            for where, piece, last in pieces:
                tail: Tail | None = None
                if piece.startswith(b"#"):
                    if where == 0 and piece.startswith(HEADER_PREFIX) and piece.endswith(b"\n"):
                        state["committed"] = len(piece)
                        continue
                    m = _BATCH.fullmatch(piece)
                    if last and not piece.endswith(b"\n"):
                        tail = Tail(batch_at if batch_left else where, 0, "an incomplete write", torn=True)
                    elif batch_left:
                        tail = Tail(batch_at, 0, f"byte {batch_at}: partial batch (it declares more transactions "
                                    "than follow it)")
                    elif m is None:
                        tail = Tail(where, 0, f"byte {where}: unexpected line {piece[:60]!r}")
                    else:
                        batch_left, batch_at, blocks = int(m.group(1)), where, []
                elif not (piece.startswith(BLOCK_B) and piece[-75:-66] == b'\nhash = "' and piece.endswith(b'"\n')
                          and len(piece) > 75):
                    if last:
                        tail = Tail(batch_at if batch_left else where, 0, "an incomplete write", torn=True)
                    else:
                        what = "does not end with its hash line" if piece.startswith(BLOCK_B) else \
                            "expected [[transaction]]"
                        tail = Tail(batch_at if batch_left else where, 0, f"byte {where}: block {what}")
                elif batch_left:
                    blocks.append((where, piece))
                    batch_left -= 1
                    if not batch_left:
                        pending.append((batch_at, where + len(piece), blocks))
                        waiting += len(blocks)
                else:
                    pending.append((where, where + len(piece), [(where, piece)]))
                    waiting += 1
                if tail is None and last and batch_left:
                    tail = Tail(batch_at, 0, "an incomplete write", torn=True)
                if tail is None and waiting >= PARSE_GROUP:
                    waiting = 0
                    tail = verify()
                if tail is not None:
                    tail = verify() or tail
                    yield Chunk(out, str(state["committed"]), tail._replace(size=size - tail.offset), texts)
                    return
                if len(out) >= CHUNK_TXNS:
                    yield Chunk(out, str(state["committed"]), None, texts)
                    out, texts = [], []
        err = verify()
        yield Chunk(out, str(state["committed"]), err._replace(size=size - err.offset) if err else None, texts)

    @staticmethod
    def _size(f: Any) -> int:
        return os.fstat(f.fileno()).st_size

    def read_from(self, position: str) -> Chunk:
        txns: list[Txn] = []
        texts: list[str] = []
        pos = position or "0"
        tail = None
        for c in self.chunks(position):
            txns.extend(c.txns)
            texts.extend(c.hashed or [])
            pos, tail = c.position, c.tail
        return Chunk(txns, pos, tail, texts if len(texts) == len(txns) else None)

    def read_all(self) -> Chunk:
        return self.read_from("")

    def accept(self, idx: Index, txns: list[Txn]) -> tuple[list[Txn], bool]:
        if txns and txns[0].prev != (idx.meta("last_hash") or ""):
            raise UserError("ledger chain is broken at the indexed position (the first new block does not "
                            "follow the last indexed one); run `tx doctor`")
        return txns, False

    def link_notes(self) -> list[str]:
        return []  # a chained journal has one record per id or a problem

    def link_problems(self, txns: list[Txn]) -> list[str]:
        return chain_problems(txns)

    def new_records(self, old: str, new: str) -> list[Txn]:
        return [t for t in self.read_from(old).txns]

    def sync(self, ledger: "Ledger", remote: str) -> Any:
        raise UserError("`tx sync` needs the notes backend ([exchange] backend = \"notes\")")

    # --- writing -----------------------------------------------------------------------------------
    def seal(self, txns: list[Txn], last_hash: str) -> list[Txn]:
        return chain(txns, last_hash)

    def append(self, txns: list[Txn]) -> str:
        data = render_batch(txns)
        # Refuse, before a byte is written, what this file could not give back exactly.
        text = data.decode("utf-8")
        pieces, where = [], 0
        for block in text[text.index(BLOCK):].split(BLOCK)[1:]:
            pieces.append((where, (BLOCK + block).encode("utf-8")))
            where += 1
        back, bad = parse_slowly(pieces) if len(pieces) != len(txns) else parse_blocks(pieces)
        if bad is not None or [t for t, _ in back] != txns:
            raise UserError("a transaction would not read back from ledger.toml exactly; nothing written")
        if not self.path.exists() or self.path.stat().st_size == 0:
            data = HEADER + data
        start = append_durably(self.path, data)
        return str(start + len(data))

    def set_aside(self, tail: Tail) -> Path:
        """Copy the bytes from ``tail.offset`` to a quarantine file (fsynced), then cut the journal there."""
        if tail.torn:
            target = self.torn_path
        else:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            target = self.home / f"ledger.quarantine-{stamp}-{tail.offset}.toml"
        with open(self.path, "rb") as src:
            src.seek(tail.offset)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                while block := src.read(READ_SIZE):
                    view = memoryview(block)
                    while view:
                        view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.ftruncate(fd, tail.offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.home)
        return target
