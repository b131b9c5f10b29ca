"""Reading complete JSONL lines from a byte offset, safely, for every meter parser.

Only complete lines (ending in ``\\n``) are returned: the line an agent is still writing stays
for the next read.  A line longer than ``max_bytes`` is skipped (reported as oversize) instead of
stalling every later read.  Only regular files are opened (a FIFO or device named as a transcript
would block or never end), without blocking on open.

JSON is read with the standard library, held to what orjson accepts (UTF-8 only, no NaN or
Infinity, no lone surrogates): importing orjson pulls in ``dataclasses``, ``uuid`` and
``platform``, which a Claude Code hook (a fresh process per event) pays on every run, while it
only parses the few lines that are new.
"""

# No ``from __future__ import annotations``: NamedTuple fields are real types here (docs/DEVELOPING.md, Hot paths).

import errno
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from token_exchange.meter.records import MeterError, Skips, short_path

MAX_READ_BYTES = 64 * 1024 * 1024
_SCAN = 1024 * 1024


def open_regular(path: Path | str) -> tuple[BinaryIO, os.stat_result]:
    """Open a regular file for reading (no blocking on FIFOs); one-line MeterError otherwise."""
    name = short_path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise MeterError(f"{name}: no such file") from None
    except PermissionError:
        raise MeterError(f"{name}: permission denied") from None
    except OSError as e:
        raise MeterError(f"{name}: cannot open ({e.strerror or errno.errorcode.get(e.errno or 0)})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise MeterError(f"{name}: not a regular file")
        return os.fdopen(fd, "rb"), st
    except BaseException:
        os.close(fd)
        raise


class Lines(NamedTuple):
    """Complete lines after the start offset: (line number, bytes without the newline).

    ``seen`` is the file size this read observed (start + bytes read, complete or not), or -1
    when the read stopped at ``max_bytes`` before the end of the file.
    """

    lines: list[tuple[int, bytes]]
    offset: int
    line: int
    oversize: list[int]
    seen: int


def read_lines(f: BinaryIO, offset: int, line: int, max_bytes: int = MAX_READ_BYTES) -> Lines:
    """The complete lines after ``offset`` (at most ``max_bytes`` of them, whole lines only)."""
    f.seek(offset)
    data = f.read(max_bytes)
    seen = offset + len(data) if len(data) < max_bytes else -1
    last = data.rfind(b"\n")
    if last < 0:
        if len(data) < max_bytes:
            return Lines([], offset, line, [], seen)
        # One line longer than max_bytes: skip to its end so later lines still get read.
        pos = offset + len(data)
        while True:
            block = f.read(_SCAN)
            if not block:
                return Lines([], offset, line, [], -1)  # still being written; try again next time
            nl = block.find(b"\n")
            if nl >= 0:
                return Lines([], pos + nl + 1, line + 1, [line + 1], -1)
            pos += len(block)
    out: list[tuple[int, bytes]] = []
    n = line
    for raw in data[: last + 1].split(b"\n")[:-1]:
        n += 1
        out.append((n, raw[:-1] if raw.endswith(b"\r") else raw))
    return Lines(out, offset + last + 1, n, [], seen)


_SURROGATE_ESCAPE = rb"\\u[dD][89a-fA-F]"  # compiled on first use: most lines have no \\u escape


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def loads(raw: bytes) -> object:
    """Strict JSON from bytes: ValueError (or RecursionError, for absurd nesting) unless it is
    UTF-8 without NaN, Infinity or lone surrogates."""
    obj = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    if b"\\u" in raw and re.search(_SURROGATE_ESCAPE, raw):  # "\ud83d\ude00" is one character; a lone half is not text
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("lone surrogate in a string") from None
    return obj


def parse(raw: bytes) -> tuple[object, str | None]:
    """A line's JSON value, or the reason it cannot be used (never an exception)."""
    if not raw.strip():
        return None, "empty line"
    try:
        return loads(raw), None
    except (ValueError, RecursionError):
        return None, "invalid JSON"


def objects(chunk: Lines, skips: Skips, max_bytes: int,
            parse: Callable[[bytes], tuple[object, str | None]] = parse) -> Iterator[tuple[int, dict[str, Any]]]:
    """The JSON objects on a chunk's lines, with their line numbers; every other non-blank line is
    counted in ``skips`` with its reason (too long, not JSON, not an object), never raised."""
    for n in chunk.oversize:
        skips.add(n, f"longer than {max_bytes} bytes")
    for lineno, raw in chunk.lines:
        if not raw.strip():
            continue
        obj, err = parse(raw)
        if err is not None:
            skips.add(lineno, err)
            continue
        if not isinstance(obj, dict):
            skips.add(lineno, f"not a JSON object ({type(obj).__name__})")
            continue
        yield lineno, obj
