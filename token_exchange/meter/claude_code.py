"""Claude Code: the hook's stdin JSON, a session's transcript files, and their usage records.
Long because it is one format, with its sources and the charge-once rule written out below (40
lines), and every hook run reads all of it (the hook input names the transcripts): a split would
only add an import to each hook's start-up.

Sources checked (late 2026):

- Hook input: code.claude.com/docs/en/hooks ("Common input fields", "Stop input", "SubagentStop
  input", "SessionEnd input").  Every event gets ``session_id``, ``transcript_path``, ``cwd``,
  ``hook_event_name`` (``permission_mode`` on some); Stop and SubagentStop add
  ``stop_hook_active``; SubagentStop adds ``agent_id``, ``agent_type`` and
  ``agent_transcript_path`` ("the subagent's own transcript stored in a nested subagents/
  folder"); SessionEnd adds ``reason``.  The docs warn that the transcript "is written
  asynchronously and may lag", so a record missing at one Stop is read at the next.
- Layout: ``~/.claude/projects/<project>/<session_id>.jsonl``, subagents in
  ``<session_id>/subagents/agent-<id>.jsonl`` and, for Workflow agents, one level deeper in
  ``<session_id>/subagents/workflows/<run>/agent-<id>.jsonl`` (the SubagentStop example in the
  docs; anthropics/claude-code #93620 and #84223 on GitHub).  ``agent-*.meta.json`` and
  ``journal.jsonl`` files next to them carry no usage and are not read.
- Assistant lines: ``{"type": "assistant", "sessionId", "timestamp", "isSidechain", "agentId",
  "requestId", "message": {"id", "model", "stop_reason", "usage": {"input_tokens",
  "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", ...}}}``.  One line
  is written per content block, all sharing ``message.id``.  Early lines can carry a snapshot
  ``output_tokens`` (1..8) and ``stop_reason: null``; the final line has a non-null
  ``stop_reason`` and the real count (anthropics/claude-code #84223, #93620, #27361).  Subagent
  files sometimes never get the final line.  The same ``message.id`` can be replayed in a
  subagent file (rajbos/ai-engineering-fluency #1632).  ``<synthetic>`` model lines are
  Claude Code's own messages, not API calls (ryoppippi/ccusage ``src/data-loader.ts`` skips them).
  Anthropic usage: ``input_tokens`` excludes cache writes and cache reads, which are reported
  separately, and thinking tokens are inside ``output_tokens``.

How a message is charged once, with its best figures:

- a message is *settled* when a line of it has a non-null ``stop_reason`` (that line is used);
  or when a later assistant line of the same chain (main or one sidechain) has another id (the
  next request only starts after this one ended: its best line, the highest ``output_tokens``,
  the later line on a tie, is used); or when the caller says the file is final (SessionEnd, or
  SubagentStop for that subagent's file);
- until then it is *pending* and travels in the file's carry to the next read;
- a settled id is remembered (the last ``SEEN_CAP`` per file) and later lines with it, in this
  file or in another file of the session, are ignored.

``record_id`` is ``cc:<message.id>``: the same in the main and a subagent file, and across replays.
"""

# No ``from __future__ import annotations``: NamedTuple fields are real types here (docs/DEVELOPING.md, Hot paths).

import os
import re
import stat
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, NamedTuple, cast

from token_exchange.meter._jsonl import MAX_READ_BYTES, loads, objects, open_regular, read_lines
from token_exchange.meter.offsets import OffsetState, advance, key
from token_exchange.meter.records import (
    MeterError,
    ReadResult,
    Skips,
    Usage,
    make_record_id,
    plain_text,
    short,
    short_path,
    token_count,
)

MAX_HOOK_INPUT = 8 * 1024 * 1024
MAX_PATH = 4096
SEEN_CAP = 2048
MAX_SUBAGENT_FILES = 10_000
SYNTHETIC = "<synthetic>"
SESSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
EVENT_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
METER_EVENTS = ("Stop", "SubagentStop", "SessionEnd")


class HookInput(NamedTuple):
    """The fields of a Claude Code hook's stdin JSON that metering and the guard use."""

    event: str
    session_id: str
    transcript_path: Path | None = None
    cwd: str | None = None
    permission_mode: str | None = None
    stop_hook_active: bool = False
    reason: str | None = None
    agent_id: str | None = None
    agent_type: str | None = None
    agent_transcript_path: Path | None = None
    prompt: str | None = None

    def transcript(self) -> Path:
        """The main transcript path, or a one-line MeterError when the input has none."""
        if self.transcript_path is None:
            raise MeterError(f"{self.event} hook input has no transcript_path")
        return self.transcript_path


def _text(doc: Mapping[str, object], name: str, *, limit: int, required: bool = False) -> str | None:
    value = doc.get(name)
    if value is None:
        if required:
            raise MeterError(f"hook input: {name} is missing")
        return None
    if not isinstance(value, str):
        raise MeterError(f"hook input: {name} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise MeterError(f"hook input: {name} is longer than {limit} characters")
    if "\x00" in value:
        raise MeterError(f"hook input: {name} contains a NUL character")
    return value


def _path(doc: Mapping[str, object], name: str) -> Path | None:
    value = _text(doc, name, limit=MAX_PATH)
    if value is None or value == "":
        return None
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        raise MeterError(f"hook input: {name} {short(value)} is not an absolute path")
    return path


def parse_hook_input(data: bytes | str, *, max_bytes: int = MAX_HOOK_INPUT) -> HookInput:
    """Parse a hook's stdin JSON: tolerant of unknown fields, one-line MeterError on anything odd."""
    if len(data) > max_bytes:
        raise MeterError(f"hook input is larger than {max_bytes} bytes")
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    if not raw.strip():
        raise MeterError("hook input is empty (expected a JSON object on stdin)")
    try:
        doc = loads(raw)
    except (ValueError, RecursionError):
        raise MeterError("hook input is not valid JSON") from None
    if not isinstance(doc, dict):
        raise MeterError(f"hook input must be a JSON object, got {type(doc).__name__}")
    event = cast(str, _text(doc, "hook_event_name", limit=64, required=True))
    if not EVENT_RE.fullmatch(event):
        raise MeterError(f"hook input: hook_event_name {short(event)} is not an event name")
    session_id = cast(str, _text(doc, "session_id", limit=128, required=True))
    if not SESSION_RE.fullmatch(session_id):
        raise MeterError(f"hook input: session_id {short(session_id)} is not a session id")
    active = doc.get("stop_hook_active", False)
    if active is None:
        active = False
    if not isinstance(active, bool):
        raise MeterError(f"hook input: stop_hook_active must be true or false, got {type(active).__name__}")
    return HookInput(
        event=event,
        session_id=session_id,
        transcript_path=_path(doc, "transcript_path"),
        cwd=_text(doc, "cwd", limit=MAX_PATH),
        permission_mode=_text(doc, "permission_mode", limit=64),
        stop_hook_active=active,
        reason=_text(doc, "reason", limit=200),
        agent_id=_text(doc, "agent_id", limit=200),
        agent_type=_text(doc, "agent_type", limit=200),
        agent_transcript_path=_path(doc, "agent_transcript_path"),
        prompt=_text(doc, "prompt", limit=max_bytes),
    )


# --- files of a session ------------------------------------------------------------------------
def _subagent_files(root: Path) -> list[Path]:
    """``agent-*.jsonl`` regular files under ``root`` (depth <= 4), never through symlinks."""
    found: list[Path] = []
    stack: list[tuple[Path, int]] = [(root, 0)]
    while stack and len(found) < MAX_SUBAGENT_FILES:
        directory, depth = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if depth < 4:
                        stack.append((Path(entry.path), depth + 1))
                elif (entry.name.startswith("agent-") and entry.name.endswith(".jsonl")
                      and entry.is_file(follow_symlinks=False)):
                    found.append(Path(entry.path))
            except OSError:
                continue
    return sorted(found)[:MAX_SUBAGENT_FILES]


def session_files(transcript_path: Path | str, session_id: str | None = None,
                  extra: Iterable[Path | str] = ()) -> list[Path]:
    """The main transcript first, then the session's subagent transcripts in path order.

    Subagents live in ``<transcript dir>/<session_id>/subagents/`` (recursively, for Workflow
    agents); ``extra`` adds files named elsewhere (a SubagentStop ``agent_transcript_path``).
    """
    main = Path(os.path.expanduser(os.fspath(transcript_path)))
    sid = session_id or main.stem
    files = [main]
    if SESSION_RE.fullmatch(sid) and sid not in (".", ".."):
        root = main.parent / sid / "subagents"
        try:
            if stat.S_ISDIR(os.lstat(root).st_mode):
                files.extend(_subagent_files(root))
        except OSError:
            pass
    seen = {key(p) for p in files}
    for p in extra:
        if key(p) not in seen:
            seen.add(key(p))
            files.append(Path(p))
    return files


def files_for_hook(hook: HookInput) -> list[Path]:
    """All transcript files of the hook's session (main, subagents, the stopping subagent's)."""
    extra = [hook.agent_transcript_path] if hook.agent_transcript_path else []
    return session_files(hook.transcript(), hook.session_id, extra)


def final_files_for(hook: HookInput, files: Iterable[Path | str]) -> frozenset[str]:
    """Files whose pending messages can be charged now: all at SessionEnd, the subagent's at
    SubagentStop.  At Stop nothing is forced: current versions write ``stop_reason`` on the main
    transcript's lines, and a message without one is settled by the next request."""
    if hook.event == "SessionEnd":
        return frozenset(key(p) for p in files)
    if hook.event == "SubagentStop" and hook.agent_transcript_path is not None:
        return frozenset({key(hook.agent_transcript_path)})
    return frozenset()


# --- one transcript -----------------------------------------------------------------------------
class _Pending:
    __slots__ = ("usage", "chain")

    def __init__(self, usage: Usage, chain: str) -> None:
        self.usage = usage
        self.chain = chain


def _load_carry(carry: Mapping[str, object]) -> tuple[dict[str, _Pending], dict[str, None]]:
    pending: dict[str, _Pending] = {}
    raw = carry.get("pending")
    if isinstance(raw, list):
        for item in raw:
            if isinstance(item, dict) and isinstance(item.get("chain"), str):
                u = Usage.from_json(item.get("usage"))
                if u is not None and u.source == "claude-code":
                    pending[u.record_id] = _Pending(u, cast(str, item["chain"]))
    seen_raw = carry.get("seen")
    seen = dict.fromkeys(s for s in seen_raw if isinstance(s, str)) if isinstance(seen_raw, list) else {}
    return pending, seen


def _usage_fields(usage: Mapping[str, object]) -> tuple[tuple[int, int, int, int] | None, str | None]:
    values: list[int] = []
    for name, required in (("input_tokens", True), ("output_tokens", True),
                           ("cache_creation_input_tokens", False), ("cache_read_input_tokens", False)):
        raw = usage.get(name)
        if raw is None and not required:
            values.append(0)
            continue
        n = token_count(raw)
        if n is None:
            if raw is None:
                return None, f"usage.{name} is missing"
            return None, f"usage.{name} is not a valid token count ({short(raw, 24)})"
        values.append(n)
    return (values[0], values[1], values[2], values[3]), None


def scan_transcript(f: BinaryIO, offset: int, line: int, carry: Mapping[str, object], *, name: str,
                    session_id: str = "", final: bool = False, exclude: Collection[str] = (),
                    max_bytes: int = MAX_READ_BYTES) -> ReadResult:
    """Read the complete lines after ``offset`` of an open transcript (see the module docstring).

    Records whose id is in ``exclude`` (already charged from another file) are not returned.
    """
    pending, seen = _load_carry(carry)
    skips = Skips()
    out: list[Usage] = []

    def settle(rid: str) -> None:
        p = pending.pop(rid)
        seen[rid] = None
        if rid not in exclude:
            out.append(p.usage)

    chunk = read_lines(f, offset, line, max_bytes)
    for lineno, obj in objects(chunk, skips, max_bytes):
        if obj.get("type") != "assistant":
            continue  # user, system, summary...: no billable usage of their own
        message = obj.get("message")
        if not isinstance(message, dict):
            skips.add(lineno, "assistant line without a message object")
            continue
        if message.get("model") == SYNTHETIC:
            continue
        mid = message.get("id")
        if not isinstance(mid, str) or not mid or len(mid) > 200:
            skips.add(lineno, "assistant message without a usable id")
            continue
        usage = message.get("usage")
        if not isinstance(usage, dict):
            skips.add(lineno, "assistant message without a usage object")
            continue
        counts, why = _usage_fields(usage)
        if counts is None:
            skips.add(lineno, cast(str, why))
            continue
        rid = make_record_id("claude-code", mid)
        if rid in seen:
            continue  # a later line of a message already charged
        side = obj.get("isSidechain") is True
        chain = f"side:{plain_text(obj.get('agentId'))}" if side else "main"
        for other in [k for k, p in pending.items() if p.chain == chain and k != rid]:
            settle(other)  # the next request of this chain started, so that one has ended
        i, o, cw, cr = counts
        if i + o + cw + cr == 0:
            continue  # nothing billable (an aborted request)
        u = Usage("claude-code", rid, plain_text(obj.get("sessionId"), 128) or session_id,
                  plain_text(message.get("model")), i, o, cw, cr, 0,
                  plain_text(obj.get("timestamp"), 64), f"{name}:{lineno}")
        stop = message.get("stop_reason")
        prev = pending.get(rid)
        if prev is None or o >= prev.usage.output_tokens:
            pending[rid] = _Pending(u, chain)
        if isinstance(stop, str) and stop:
            pending[rid] = _Pending(u, chain)  # the final line of the response: prefer it
            settle(rid)
    if final:
        for rid in list(pending):
            settle(rid)
    keep = list(seen)[-SEEN_CAP:]
    new_carry: dict[str, object] = {"seen": keep}
    if pending:
        new_carry["pending"] = [{"usage": p.usage.to_json(), "chain": p.chain} for p in pending.values()]
    return ReadResult(tuple(out), chunk.offset, chunk.line, skips.count, tuple(skips.reasons),
                      new_carry, chunk.seen)


def read_transcript(path: Path | str, offset: int = 0, line: int = 0,
                    carry: Mapping[str, object] | None = None, *, session_id: str = "",
                    final: bool = False, max_bytes: int = MAX_READ_BYTES) -> ReadResult:
    """One transcript from ``offset`` (no state file): a convenience around ``scan_transcript``."""
    f, _ = open_regular(path)
    with f:
        return scan_transcript(f, offset, line, carry or {}, name=str(path),
                               session_id=session_id or Path(path).stem, final=final,
                               max_bytes=max_bytes)


# --- a whole session ----------------------------------------------------------------------------
class SessionRead(NamedTuple):
    """The new records of a session's files, and the state to save once they are charged."""

    records: tuple[Usage, ...]
    state: OffsetState
    skipped: int
    reasons: tuple[str, ...]
    files: tuple[str, ...]
    pending: int = 0  # messages seen but not settled yet (charged by a later read)


def _seen_of(carry: Mapping[str, object]) -> list[str]:
    raw = carry.get("seen")
    return [s for s in raw if isinstance(s, str)] if isinstance(raw, list) else []


def read_session(files: Sequence[Path | str], state: OffsetState, *, session_id: str = "",
                 final_files: Collection[str] = (), max_bytes: int = MAX_READ_BYTES) -> SessionRead:
    """Read what is new in every file of a session (main first), once per message id overall.

    An unreadable main transcript (the first file) is a MeterError; an unreadable subagent file
    is only a reason, and its mark is left as it was.  ``final_files`` (keys as ``offsets.key``
    makes them, see ``final_files_for``) have their pending messages charged now.  The caller
    charges ``records`` and then saves ``state``.
    """
    exclude: set[str] = set()
    for p in files:
        mark = state.get(p)
        if mark is not None:
            exclude.update(_seen_of(mark.carry))
    finals = {key(p) for p in final_files}
    out: list[Usage] = []
    skipped = pending = 0
    reasons: list[str] = []
    for p in files:
        name = str(p)
        is_final = key(p) in finals
        mark = state.get(p)
        sid = session_id or Path(p).stem

        def reader(f: BinaryIO, offset: int, line: int, carry: Mapping[str, object],
                   name: str = name, sid: str = sid, is_final: bool = is_final) -> ReadResult:
            return scan_transcript(f, offset, line, carry, name=name, session_id=sid, final=is_final,
                                   exclude=exclude, max_bytes=max_bytes)

        has_pending = mark is not None and bool(mark.carry.get("pending"))
        try:
            adv = advance(p, mark, reader, force=is_final and has_pending)
        except MeterError as e:
            if p is files[0]:
                raise  # the main transcript must be readable
            reasons.append(str(e))  # a subagent file that vanished or cannot be read: the rest still counts
            continue
        for u in adv.result.records:
            if u.record_id not in exclude:
                exclude.add(u.record_id)
                out.append(u)
        exclude.update(_seen_of(adv.result.carry))
        waiting = adv.result.carry.get("pending")
        pending += len(waiting) if isinstance(waiting, list) else 0
        skipped += adv.result.skipped
        reasons.extend(f"{short_path(name)}: {r}" if r.startswith("line ") else r
                       for r in adv.result.reasons)
        state = state.with_mark(p, adv.mark)
    return SessionRead(tuple(out), state, skipped, tuple(reasons[:20]), tuple(str(p) for p in files), pending)
