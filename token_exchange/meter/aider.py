"""aider: usage records from its ``--analytics-log FILE`` (JSONL).

Format, from Aider-AI/aider ``aider/analytics.py`` (``Analytics.event``): each line is
``{"event": NAME, "properties": {...}, "user_id": UUID, "time": int(time.time())}``; property
values that are not numbers are written as ``str(value)`` (so a model aider cannot name is
``"None"``, and one outside its model list is redacted to ``"provider/REDACTED"``).
``message_send`` is emitted once per reply by ``Coder.show_usage_report``
(``aider/coders/base_coder.py``) with ``main_model``, ``weak_model``, ``editor_model``,
``edit_format``, ``prompt_tokens``, ``completion_tokens``, ``total_tokens``, ``cost`` and
``total_cost``.  ``prompt_tokens`` is aider's "tokens sent" (for Anthropic it already adds the
cache-write tokens; the cache split is not in the event), so every prompt token is charged as
input and ``completion_tokens`` as output.

The record id is ``ai:<time>:<digest of the whole event>``: the event's own fields (time, user,
models, token counts, cumulative ``total_cost``) identify it across replays.  An identical event
repeated within the same second (the time is part of the event, so only there can two be identical)
gets ``:2``, ``:3``... in the order the log has them, whatever lies between them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import orjson

from token_exchange.meter._jsonl import MAX_READ_BYTES, objects, open_regular, read_lines
from token_exchange.meter.offsets import Reader
from token_exchange.meter.records import (
    ReadResult,
    Skips,
    Usage,
    digest,
    make_record_id,
    plain_text,
    short,
    token_count,
)

MAX_SEEN = 4096  # distinct events within one second (only events without a usable time come near it)


def parse(raw: bytes) -> tuple[object, str | None]:
    """A line's JSON value (orjson: the fingerprint below re-encodes it with orjson, so both sides
    agree on every number), or the reason it cannot be used."""
    if not raw.strip():
        return None, "empty line"
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError:
        return None, "invalid JSON"


def _when(value: object) -> tuple[str, str]:
    """(id part, ISO timestamp) of the event's ``time``; ('t', '') when it is unusable."""
    if type(value) is int and 0 < value < 10**11:
        return str(value), datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return "t", ""


def scan_log(f: BinaryIO, offset: int, line: int, carry: Mapping[str, object], *, name: str,
             max_bytes: int = MAX_READ_BYTES) -> ReadResult:
    """Read the complete lines after ``offset`` of an open analytics log (see the module docstring)."""
    second_raw, seen_raw = carry.get("second"), carry.get("seen")
    second = second_raw if isinstance(second_raw, str) else ""
    # fingerprint -> how many times it was seen in ``second`` (earlier seconds can no longer repeat)
    seen: dict[str, int] = {k: v for k, v in seen_raw.items() if isinstance(k, str) and type(v) is int
                            and 0 < v < 2**31} if isinstance(seen_raw, dict) else {}
    skips = Skips()
    out: list[Usage] = []
    chunk = read_lines(f, offset, line, max_bytes)
    for lineno, obj in objects(chunk, skips, max_bytes, parse):
        if obj.get("event") != "message_send":
            continue
        props = obj.get("properties")
        if not isinstance(props, dict):
            skips.add(lineno, "message_send without a properties object")
            continue
        prompt, completion = token_count(props.get("prompt_tokens")), token_count(props.get("completion_tokens"))
        if prompt is None or completion is None:
            bad = "prompt_tokens" if prompt is None else "completion_tokens"
            skips.add(lineno, f"{bad} is not a valid token count ({short(props.get(bad), 24)})")
            continue
        fingerprint = digest(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode("utf-8"), 24)
        when, ts = _when(obj.get("time"))
        if when != second or len(seen) >= MAX_SEEN:
            second, seen = when, {}
        repeat = seen[fingerprint] = seen.get(fingerprint, 0) + 1
        if prompt + completion == 0:
            continue
        parts = [when, fingerprint] + ([str(repeat)] if repeat > 1 else [])
        out.append(Usage("aider", make_record_id("aider", *parts), plain_text(obj.get("user_id"), 128),
                         plain_text(props.get("main_model")), prompt, completion, 0, 0, 0, ts,
                         f"{name}:{lineno}"))
    return ReadResult(tuple(out), chunk.offset, chunk.line, skips.count, tuple(skips.reasons),
                      {"second": second, "seen": seen}, chunk.seen)


def read_log(path: Path | str, offset: int = 0, line: int = 0, carry: Mapping[str, object] | None = None,
             *, max_bytes: int = MAX_READ_BYTES) -> ReadResult:
    """One analytics log from ``offset`` (no state file): a convenience around ``scan_log``."""
    f, _ = open_regular(path)
    with f:
        return scan_log(f, offset, line, carry or {}, name=str(path), max_bytes=max_bytes)


def reader_for(path: Path | str, *, max_bytes: int = MAX_READ_BYTES) -> Reader:
    """A ``offsets.Reader`` for ``path`` (pass it to ``offsets.advance``)."""
    name = str(path)

    def reader(f: BinaryIO, offset: int, line: int, carry: Mapping[str, object]) -> ReadResult:
        return scan_log(f, offset, line, carry, name=name, max_bytes=max_bytes)

    return reader
