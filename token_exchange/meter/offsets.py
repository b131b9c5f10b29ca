"""Per-file read offsets, so a hook reads only what was appended since its last run.

The state is one small JSON file whose path the caller chooses (one per session keeps it small:
every hook run loads and rewrites the whole file).  For each file read it records the byte offset
and line number reached, the file's identity (device, inode), the size and mtime seen, a CRC-32
of its first 512 bytes (enough to notice a rewrite; not a security check), and the parser's
``carry``.  A file that was replaced (other inode), truncated
(smaller than the offset) or rewritten (its first bytes changed) is read again from 0: the record
ids are idempotent, so re-reading charges nothing twice.

Order of operations for a caller: read -> charge the records -> ``save`` the new state.  A crash
between charging and saving only means the next run re-reads (and re-charges nothing).

``save`` writes atomically (temp file in the same directory, fsync, ``os.replace``, fsync of the
directory) and, like ``load``, refuses a state path that is a symlink.
"""

# No ``from __future__ import annotations``: NamedTuple fields are real types here (docs/DEVELOPING.md, Hot paths).

import json
import os
import stat
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import BinaryIO, NamedTuple

from token_exchange.meter._jsonl import loads as json_loads
from token_exchange.meter._jsonl import open_regular
from token_exchange.meter.records import MeterError, ReadResult, short, short_path
from token_exchange.storage import atomic_write

VERSION = 1
HEAD_BYTES = 512
MAX_STATE_BYTES = 64 * 1024 * 1024
_HEX = frozenset("0123456789abcdef")

Carry = Mapping[str, object]
Reader = Callable[[BinaryIO, int, int, Carry], ReadResult]


def key(path: Path | str) -> str:
    """The state key of a file: its absolute, user-expanded path."""
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


class BadMark(ValueError):
    """A state file entry that is not what ``FileMark.to_json`` writes."""


class FileMark(NamedTuple):
    """How far one file has been read, and how to recognise that it is still the same file."""

    offset: int
    line: int
    device: int
    inode: int
    size: int  # size seen by the last read, -1 if unknown
    mtime_ns: int
    head_len: int
    head: str  # CRC-32 (8 hex digits) of the first head_len bytes
    carry: Carry = {}  # never mutated: readers build a new carry

    def to_json(self) -> dict[str, object]:
        return {"offset": self.offset, "line": self.line, "dev": self.device, "ino": self.inode,
                "size": self.size, "mtime_ns": self.mtime_ns, "head_len": self.head_len,
                "head": self.head, "carry": dict(self.carry)}

    @classmethod
    def from_json(cls, data: object) -> "FileMark":
        if not isinstance(data, dict):
            raise BadMark("a file entry is not an object")
        ints = {}
        for name in ("offset", "line", "dev", "ino", "size", "mtime_ns", "head_len"):
            v = data.get(name)
            if type(v) is not int or v < (-1 if name == "size" else 0) or v >= 2**63:
                raise BadMark(f"{name} is not a valid number")
            ints[name] = v
        head, carry = data.get("head"), data.get("carry", {})
        if not isinstance(head, str) or len(head) != 8 or not _HEX.issuperset(head):
            raise BadMark("head is not a CRC-32")
        if not isinstance(carry, dict):
            raise BadMark("carry is not an object")
        if ints["head_len"] > HEAD_BYTES:
            raise BadMark("head_len is too large")
        return cls(ints["offset"], ints["line"], ints["dev"], ints["ino"], ints["size"],
                   ints["mtime_ns"], ints["head_len"], head, carry)


class OffsetState(NamedTuple):
    """All file marks of one state file (immutable; ``with_mark`` returns a new state)."""

    marks: Mapping[str, FileMark] = {}  # never mutated: with_mark and without build new ones

    def get(self, path: Path | str) -> FileMark | None:
        return self.marks.get(key(path))

    def with_mark(self, path: Path | str, mark: FileMark) -> "OffsetState":
        return OffsetState({**self.marks, key(path): mark})

    def without(self, paths: Iterable[Path | str]) -> "OffsetState":
        gone = {key(p) for p in paths}
        return OffsetState({k: m for k, m in self.marks.items() if k not in gone})

    def forget_missing(self) -> "OffsetState":
        """Drop the marks of files that no longer exist (one stat per mark)."""
        return OffsetState({k: m for k, m in self.marks.items() if os.path.exists(k)})


def dumps(state: OffsetState) -> bytes:
    files = {k: m.to_json() for k, m in sorted(state.marks.items())}
    return json.dumps({"version": VERSION, "files": files}, separators=(",", ":")).encode("ascii")


def loads(data: bytes, *, name: str = "state file") -> OffsetState:
    """Parse a state file's bytes; a damaged one is a one-line MeterError (nothing is guessed)."""
    hint = f"{name} is damaged ({{}}); remove it to read the files again from the start"
    try:
        doc = json_loads(data)
    except (ValueError, RecursionError):
        raise MeterError(hint.format("invalid JSON")) from None
    if not isinstance(doc, dict) or doc.get("version") != VERSION or not isinstance(doc.get("files"), dict):
        raise MeterError(hint.format(f"not a version {VERSION} offsets file"))
    marks: dict[str, FileMark] = {}
    for k, v in doc["files"].items():
        if not os.path.isabs(k) or "\x00" in k:
            raise MeterError(hint.format(f"{short(k)} is not an absolute path"))
        try:
            marks[k] = FileMark.from_json(v)
        except BadMark as e:
            raise MeterError(hint.format(f"{short(k)}: {e}")) from None
    return OffsetState(marks)


def _refuse_symlink(path: Path) -> bool:
    """True if ``path`` exists (as a regular file); MeterError if it is a symlink or not a file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        raise MeterError(f"state file {short_path(path)} is a symlink; refusing to follow it")
    if not stat.S_ISREG(st.st_mode):
        raise MeterError(f"state file {short_path(path)} is not a regular file")
    return True


def load(path: Path | str) -> OffsetState:
    """The state at ``path``; an empty state if the file does not exist yet."""
    p = Path(path)
    if not _refuse_symlink(p):
        return OffsetState()
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise MeterError(f"state file {short_path(p)}: cannot open ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_STATE_BYTES + 1)
    if len(data) > MAX_STATE_BYTES:
        raise MeterError(f"state file {short_path(p)} is larger than {MAX_STATE_BYTES} bytes")
    return loads(data, name=f"state file {short_path(p)}")


def save(path: Path | str, state: OffsetState, *, sync: bool = True) -> None:
    """Write ``state`` atomically (temp + fsync + rename + directory fsync); refuses symlinks.

    ``sync=False`` skips both fsyncs (still temp + rename): for a caller whose charges are idempotent
    and that reads a lost or damaged state as "start again from 0", a state file lost in a crash costs
    one re-read, while two fsyncs cost a hook several milliseconds on every run.
    """
    p = Path(path)
    _refuse_symlink(p)
    try:
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(p, dumps(state), mode=0o600, sync=sync)
    except OSError as e:
        raise MeterError(f"state file {short_path(p)}: cannot write ({e.strerror})") from None


class Advance(NamedTuple):
    """One incremental read of one file: the parser's result, the new mark, and why it restarted."""

    result: ReadResult
    mark: FileMark
    restarted: str | None = None  # "replaced" | "truncated" | "rewritten" | None
    unchanged: bool = False


def _crc(data: bytes) -> str:
    return f"{zlib.crc32(data):08x}"


def _unchanged(mark: FileMark, st: os.stat_result) -> bool:
    return (mark.size >= 0 and st.st_size == mark.size and st.st_mtime_ns == mark.mtime_ns
            and st.st_ino == mark.inode and st.st_dev == mark.device)


def _restart_reason(mark: FileMark, st: os.stat_result, head: bytes) -> str | None:
    if st.st_ino != mark.inode or st.st_dev != mark.device:
        return "replaced"
    if st.st_size < mark.offset or len(head) < mark.head_len:
        return "truncated"
    if _crc(head[: mark.head_len]) != mark.head:
        return "rewritten"
    return None


def advance(path: Path | str, mark: FileMark | None, reader: Reader, *, force: bool = False) -> Advance:
    """Read ``path`` from where ``mark`` left it (or from 0 if the file is new or was replaced).

    An unchanged file (same identity, size and mtime) is not even opened unless ``force``.
    """
    if mark is not None and not force:
        try:
            st = os.stat(path)
        except OSError:
            st = None  # open_regular below reports it in one line
        if st is not None and _unchanged(mark, st):
            return Advance(ReadResult((), mark.offset, mark.line, carry=mark.carry, seen=mark.size),
                           mark, None, True)
    f, st = open_regular(path)
    with f:
        head = os.pread(f.fileno(), HEAD_BYTES, 0)
        restarted = _restart_reason(mark, st, head) if mark is not None else None
        carry: Carry = {}
        offset = line = 0
        if mark is not None and not restarted:
            offset, line, carry = mark.offset, mark.line, mark.carry
        result = reader(f, offset, line, carry)
    if restarted:
        result = result._replace(reasons=(f"{short_path(path)}: {restarted}, read again from the start",
                                          *result.reasons))
    new = FileMark(result.offset, result.line, st.st_dev, st.st_ino, result.seen, st.st_mtime_ns,
                   len(head), _crc(head), result.carry)
    return Advance(result, new, restarted)
