"""The repo-local TOML journal: ``ledger.toml``, one ``[[transaction]]`` block per entry.

Blocks are only ever appended (one ``write`` + ``fsync`` per batch), never
rewritten.  The file is valid TOML that any reader can load, but we write a
strict subset (basic strings that are also JSON strings, integers, dotted keys)
so we can read it back an order of magnitude faster than a general TOML parser.
A block is complete when it ends with its ``hash`` line; an incomplete last
block is a torn write from a killed process and is cut (kept in ``ledger.torn``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from token_exchange.amounts import fmt, to_units
from token_exchange.errors import UserError
from token_exchange.ledger.ledger import Torn, Txn
from token_exchange.storage import append_durably

HEADER = b"# token-exchange ledger v1. Append-only: never edit; `tx doctor` detects any change.\n"
BLOCK = "[[transaction]]\n"
_FIELDS = ("id", "ts", "kind", "agent", "payer", "payee", "amount", "project", "description", "ref")


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


def parse_block(text: str, where: int) -> Txn:
    """Parse one block we wrote (fast path); raises ValueError on anything unexpected."""
    d: dict[str, Any] = {"source": {}, "breakdown": {}}
    for line in text.splitlines():
        if not line or line == "[[transaction]]":
            continue
        key, sep, raw = line.partition(" = ")
        if not sep:
            raise ValueError(f"byte {where}: unexpected line {line[:60]!r}")
        value = json.loads(raw)
        table, dot, sub = key.partition(".")
        if dot:
            d[table][sub] = value
        else:
            d[key] = value
    for need in ("id", "ts", "kind", "payer", "payee", "amount", "hash"):
        if need not in d:
            raise ValueError(f"byte {where}: block lacks {need}")
    d["amount"] = to_units(d["amount"], what=f"byte {where}: amount", allow_zero=True)
    return Txn(**d)


class TomlJournal:
    """Journal in ``HOME/ledger.toml``; position = byte offset indexed through."""

    chained = True

    def __init__(self, home: Path) -> None:
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

    def append(self, txns: list[Txn]) -> str:
        data = "".join(render(t) for t in txns).encode("utf-8")
        if not self.path.exists() or self.path.stat().st_size == 0:
            data = HEADER + data
        start = append_durably(self.path, data)
        return str(start + len(data))

    def read_from(self, position: str) -> tuple[list[Txn], str, Torn | None]:
        start = int(position or 0)
        try:
            with open(self.path, "rb") as f:
                f.seek(start)
                raw = f.read()
        except FileNotFoundError:
            return [], "0", None
        size = start + len(raw)
        if start > 0 and self.path.stat().st_size < start:  # pragma: no cover - guarded by caller
            raise UserError("ledger.toml is shorter than the index remembers; run `tx doctor --repair`")
        return self._parse(raw, start, size)

    def _parse(self, raw: bytes, start: int, size: int) -> tuple[list[Txn], str, Torn | None]:
        txns: list[Txn] = []
        marker = BLOCK.encode()
        pos = 0
        if start == 0 and raw.startswith(b"#"):
            pos = raw.find(b"\n") + 1 if b"\n" in raw else len(raw)
        done = pos
        while pos < len(raw):
            nxt = raw.find(b"\n" + marker, pos + 1)
            end = len(raw) if nxt < 0 else nxt + 1
            chunk = raw[pos:end]
            last = nxt < 0
            try:
                if not chunk.startswith(marker):
                    raise ValueError(f"byte {start + pos}: expected [[transaction]]")
                if not chunk.endswith(b"\n"):
                    raise ValueError(f"byte {start + pos}: block does not end with a newline")
                t = parse_block(chunk.decode("utf-8"), start + pos)
            except (ValueError, UnicodeDecodeError, UserError, TypeError) as e:
                if last:
                    return txns, str(start + done), Torn(start + pos, raw[pos:])
                raise UserError(f"ledger.toml is corrupt: {e}; run `tx doctor`") from None
            if t.compute_hash() != t.hash:
                raise UserError(f"ledger.toml is corrupt: byte {start + pos}: transaction {t.id}"
                                " does not match its hash (edited?); run `tx doctor`")
            txns.append(t)
            pos = end
            done = end
        return txns, str(start + done), None

    def read_all(self) -> tuple[list[Txn], Torn | None]:
        txns, _, torn = self.read_from("0")
        return txns, torn

    def cut_torn(self, torn: Torn) -> None:
        """Move a torn tail aside (kept as evidence) so the next append starts clean."""
        append_durably(self.torn_path, torn.data + b"\n")
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.ftruncate(fd, torn.offset)
            os.fsync(fd)
        finally:
            os.close(fd)
