"""The usage record every meter parser yields, and what one incremental read returns.

A ``Usage`` is one model response (one API request) as the agent's own files report it.  Its
``record_id`` is derived only from data in that file (a message id, a session id plus cumulative
totals, an event's own fields), so reading the same file again, from the start or from a saved
offset, yields the same ids: the ledger transaction id built from it makes a replay charge nothing.

Token fields follow one convention whatever the source:

- ``input_tokens``: input billed at the full input price (non-cached);
- ``cache_write_tokens`` / ``cache_read_tokens``: input written to / served from a prompt cache;
- ``output_tokens``: everything generated, reasoning included;
- ``reasoning_tokens``: informational only, already counted inside ``output_tokens``.
"""

# No ``from __future__ import annotations``: NamedTuple fields are real types here (docs/DEVELOPING.md, Hot paths).

import re
from collections.abc import Iterable, Mapping
from typing import Literal, NamedTuple, cast

from token_exchange.errors import UserError, clean_text

Source = Literal["claude-code", "codex", "aider"]
SOURCES: tuple[Source, ...] = ("claude-code", "codex", "aider")
PREFIX: Mapping[Source, str] = {"claude-code": "cc", "codex": "cx", "aider": "ai"}

RECORD_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/+=-]{0,149}")
PART_RE = re.compile(r"[A-Za-z0-9_.@/+=-]{1,120}")
# One response of a real model stays far below this; anything above is a corrupt or hostile line.
MAX_RECORD_TOKENS = 10**10
MAX_REASONS = 20
MAX_TEXT = 200


class MeterError(UserError):
    """A meter input (hook JSON, state file, transcript path) that cannot be used: one line, no change."""


def short(value: object, limit: int = 40) -> str:
    """A bounded, printable rendering of untrusted text for one-line messages."""
    text = value if isinstance(value, str) else repr(value)
    text = clean_text(text, limit=10_000).encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_path(path: object, limit: int = 120) -> str:
    """A bounded rendering of a path for one-line messages: its end is what tells files apart."""
    text = short(str(path), 10_000)
    return text if len(text) <= limit else "..." + text[-(limit - 3):]


def digest(text: str, length: int = 32) -> str:
    """Hex SHA-256 prefix: a stable, charset-safe stand-in for odd or long identifiers."""
    import hashlib  # here, not at the top: it costs a Claude Code hook ~2 ms of start-up for nothing

    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def make_record_id(source: Source, *parts: str) -> str:
    """``<prefix>:<part>:<part>...`` when every part is plain and the id fits in 150 characters.

    Anything longer or with characters outside ``[A-Za-z0-9_.@/+=-]`` is replaced, as a whole, by
    ``<prefix>:h:<sha256 prefix>``, which is just as stable across replays.
    """
    prefix = PREFIX[source]
    if parts and all(PART_RE.fullmatch(p) for p in parts):
        candidate = ":".join((prefix, *parts))
        if len(candidate) <= 150:
            return candidate
    return f"{prefix}:h:{digest(chr(31).join(parts))}"


def plain_text(value: object, limit: int = MAX_TEXT) -> str:
    """A short text field (model id, timestamp, session id) from untrusted JSON; anything else -> ''."""
    if not isinstance(value, str) or len(value) > limit:
        return ""
    return clean_text(value, limit=limit)


def token_count(value: object) -> int | None:
    """A token count from untrusted JSON: a non-negative int within MAX_RECORD_TOKENS, else None."""
    if type(value) is not int or value < 0 or value > MAX_RECORD_TOKENS:
        return None
    return value


class _UsageFields(NamedTuple):
    source: Source
    record_id: str
    session_id: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    reasoning_tokens: int = 0
    timestamp: str = ""
    where: str = ""


class Usage(_UsageFields):
    """One model response as an agent's files report it (see the module docstring for the fields).

    A NamedTuple, not a dataclass: a Claude Code hook is a fresh process per event, and the
    ``dataclasses`` import (``inspect``, ``ast``...) plus generating each class's methods cost it
    more than the incremental read itself.  Constructing one validates its fields (ValueError).
    """

    __slots__ = ()

    def __new__(cls, source: Source, record_id: str, session_id: str, model: str, input_tokens: int,
                output_tokens: int, cache_write_tokens: int = 0, cache_read_tokens: int = 0,
                reasoning_tokens: int = 0, timestamp: str = "", where: str = "") -> "Usage":
        if source not in SOURCES:
            raise ValueError(f"unknown usage source {source!r}")
        if not isinstance(record_id, str) or not RECORD_ID_RE.fullmatch(record_id):
            raise ValueError(f"record id {record_id!r} is not a valid id")
        for name, value in (("input_tokens", input_tokens), ("output_tokens", output_tokens),
                            ("cache_write_tokens", cache_write_tokens), ("cache_read_tokens", cache_read_tokens),
                            ("reasoning_tokens", reasoning_tokens)):
            if token_count(value) is None:
                raise ValueError(f"{name} must be an int in 0..{MAX_RECORD_TOKENS}")
        return super().__new__(cls, source, record_id, session_id, model, input_tokens, output_tokens,
                               cache_write_tokens, cache_read_tokens, reasoning_tokens, timestamp, where)

    @property
    def total_tokens(self) -> int:
        """Every token the response was billed for (reasoning is inside output)."""
        return self.input_tokens + self.output_tokens + self.cache_write_tokens + self.cache_read_tokens

    def to_json(self) -> dict[str, object]:
        """A plain dict (for a state file's carry); ``from_json`` reads it back."""
        return {"source": self.source, "id": self.record_id, "session": self.session_id,
                "model": self.model, "in": self.input_tokens, "out": self.output_tokens,
                "cw": self.cache_write_tokens, "cr": self.cache_read_tokens,
                "rs": self.reasoning_tokens, "ts": self.timestamp, "where": self.where}

    @classmethod
    def from_json(cls, data: object) -> "Usage | None":
        """The record ``to_json`` wrote, or None when ``data`` is not one (a damaged state file)."""
        if not isinstance(data, dict):
            return None
        counts = [token_count(data.get(k)) for k in ("in", "out", "cw", "cr", "rs")]
        texts = [data.get(k) for k in ("id", "session", "model", "ts", "where")]
        source = data.get("source")
        if source not in SOURCES or any(c is None for c in counts):
            return None
        if not all(isinstance(t, str) and len(t) <= 4200 for t in texts):
            return None
        if not RECORD_ID_RE.fullmatch(cast(str, texts[0])):
            return None
        i, o, cw, cr, rs = cast(list[int], counts)
        rid, session, model, ts, where = cast(list[str], texts)
        return cls(cast(Source, source), rid, session, model, i, o, cw, cr, rs, ts, where)


class ReadResult(NamedTuple):
    """What one incremental read of one file produced.

    ``offset`` is the byte position after the last complete line consumed (a trailing partial
    line is left for the next read) and ``line`` the number of lines before it.  ``skipped``
    counts malformed or unusable lines; ``reasons`` holds the first few, e.g. "line 17: invalid
    JSON".  ``carry`` is parser state (small, JSON-able) to hand back to the next read of the
    same file, typically through ``offsets``.  ``seen`` is the file size the read observed
    (-1 if it stopped early at its byte budget); ``offsets`` uses it to skip unchanged files.
    """

    records: tuple[Usage, ...]
    offset: int
    line: int
    skipped: int = 0
    reasons: tuple[str, ...] = ()
    carry: Mapping[str, object] = {}  # never mutated: readers build a new carry
    seen: int = -1


class Skips:
    """Counts skipped lines and keeps the first MAX_REASONS short reasons."""

    __slots__ = ("count", "reasons")

    def __init__(self) -> None:
        self.count = 0
        self.reasons: list[str] = []

    def add(self, line: int, why: str) -> None:
        self.count += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(f"line {line}: {why}")

    def note(self, text: str) -> None:
        """A reason that is not a skipped line (e.g. a file restarted from 0)."""
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(text)


class Totals(NamedTuple):
    """Sums over records, for reports, tests and benchmarks."""

    records: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    reasoning_tokens: int = 0


def totals(records: Iterable[Usage]) -> Totals:
    n = i = o = cw = cr = rs = 0
    for u in records:
        n += 1
        i += u.input_tokens
        o += u.output_tokens
        cw += u.cache_write_tokens
        cr += u.cache_read_tokens
        rs += u.reasoning_tokens
    return Totals(n, i, o, cw, cr, rs)
