"""OpenAI Codex CLI: usage records from a rollout file (``~/.codex/sessions/YYYY/MM/DD/rollout-*.jsonl``).

Format, from openai/codex ``codex-rs/protocol/src/protocol.rs``: every line is a ``RolloutLine``
``{"timestamp": ..., "type": ..., "payload": ...}`` with ``type`` one of ``session_meta`` (payload
``SessionMeta``: ``id`` is the session/thread UUID), ``turn_context`` (payload ``TurnContextItem``
with the turn's ``model``), ``response_item``, ``compacted`` and ``event_msg``.  An ``event_msg``
whose payload ``type`` is ``token_count`` is a ``TokenCountEvent``: ``{"info": TokenUsageInfo |
null, "rate_limits": ...}``, ``TokenUsageInfo = {"total_token_usage", "last_token_usage",
"model_context_window"}`` and ``TokenUsage = {"input_tokens", "cached_input_tokens",
"output_tokens", "reasoning_output_tokens", "total_tokens"}``.

Accounting, as Codex itself does it (``TokenUsage::non_cached_input`` is ``input_tokens -
cached_input_tokens``; ``blended_total`` is non-cached input + ``output_tokens``, reasoning not
added again): ``input_tokens`` includes the cached input and ``output_tokens`` includes the
reasoning tokens.  So a record has ``input = input - cached``, ``cache_read = cached``,
``output = output`` and ``reasoning = reasoning_output_tokens`` (informational).  OpenAI has no
cache-write charge: ``cache_write`` is 0.

Each ``token_count`` with ``info`` charges its ``last_token_usage`` (one model response).  Codex
writes the event again when only rate limits change; such a repeat has the same cumulative
``total_token_usage`` as the event before it and is skipped.  The record id is
``cx:<session id>:<cumulative total_tokens>:<digest of both usages>``: stable across replays and
distinct for every real response.  The session id comes from the ``session_meta`` line (the
file name's UUID before it); the model from the latest ``turn_context`` line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, cast

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
)

MAX_CUMULATIVE = 10**15
FIELDS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens", "total_tokens")
_UUID_RE = re.compile(r"([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\.jsonl$")
_SID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def session_from_name(path: Path | str) -> str:
    """The UUID at the end of ``rollout-<timestamp>-<uuid>.jsonl``, or ''."""
    m = _UUID_RE.match(Path(path).name[-42:])
    return m.group(1).lower() if m else ""


def _usage(value: object, what: str, limit: int) -> tuple[tuple[int, int, int, int, int] | None, str | None]:
    if not isinstance(value, dict):
        return None, f"{what} is not an object"
    out: list[int] = []
    for name in FIELDS:
        raw = value.get(name)
        if raw is None and name != "input_tokens" and name != "output_tokens":
            out.append(-1 if name == "total_tokens" else 0)
            continue
        if type(raw) is not int or raw < 0 or raw > limit:
            return None, f"{what}.{name} is not a valid token count ({short(raw, 24)})"
        out.append(raw)
    i, c, o, r, t = out
    if t < 0:
        t = i + o
    if c > i:
        return None, f"{what}: cached_input_tokens exceeds input_tokens"
    if r > o:
        return None, f"{what}: reasoning_output_tokens exceeds output_tokens"
    return (i, c, o, r, t), None


def scan_rollout(f: BinaryIO, offset: int, line: int, carry: Mapping[str, object], *, name: str,
                 session_id: str = "", max_bytes: int = MAX_READ_BYTES) -> ReadResult:
    """Read the complete lines after ``offset`` of an open rollout file (see the module docstring)."""
    carried_sid, prev_raw = carry.get("sid"), carry.get("prev")
    sid = carried_sid if isinstance(carried_sid, str) and _SID_RE.fullmatch(carried_sid) else session_id
    model = plain_text(carry.get("model"))
    prev: tuple[int, ...] | None = None
    if isinstance(prev_raw, list) and len(prev_raw) == 5 and all(type(x) is int for x in prev_raw):
        prev = tuple(prev_raw)
    skips = Skips()
    out: list[Usage] = []
    chunk = read_lines(f, offset, line, max_bytes)
    for lineno, obj in objects(chunk, skips, max_bytes):
        kind, payload = obj.get("type"), obj.get("payload")
        if kind == "session_meta":
            meta_id = payload.get("id") if isinstance(payload, dict) else None
            if isinstance(meta_id, str) and _SID_RE.fullmatch(meta_id):
                sid = meta_id
            else:
                skips.add(lineno, "session_meta without a usable id")
            continue
        if kind == "turn_context":
            if isinstance(payload, dict) and isinstance(payload.get("model"), str):
                model = plain_text(payload["model"])
            continue
        if kind != "event_msg" or not isinstance(payload, dict) or payload.get("type") != "token_count":
            continue
        info = payload.get("info")
        if info is None:
            continue  # a rate-limit-only update
        if not isinstance(info, dict):
            skips.add(lineno, "token_count info is not an object")
            continue
        total, why = _usage(info.get("total_token_usage"), "total_token_usage", MAX_CUMULATIVE)
        last, why2 = _usage(info.get("last_token_usage"), "last_token_usage", 10**10)
        if total is None or last is None:
            skips.add(lineno, cast(str, why or why2))
            continue
        if total == prev:
            continue  # the same cumulative total again: a repeated event, already charged
        prev = total
        li, lc, lo, lr, _ = last
        if li + lo == 0:
            continue
        if not sid:
            skips.add(lineno, "token_count before any session id is known")
            continue
        rid = make_record_id("codex", sid, str(total[4]), digest(",".join(map(str, total + last)), 12))
        out.append(Usage("codex", rid, sid, model, li - lc, lo, 0, lc, lr,
                         plain_text(obj.get("timestamp"), 64), f"{name}:{lineno}"))
    new_carry: dict[str, object] = {"sid": sid, "model": model}
    if prev is not None:
        new_carry["prev"] = list(prev)
    return ReadResult(tuple(out), chunk.offset, chunk.line, skips.count, tuple(skips.reasons),
                      new_carry, chunk.seen)


def read_rollout(path: Path | str, offset: int = 0, line: int = 0,
                 carry: Mapping[str, object] | None = None, *, max_bytes: int = MAX_READ_BYTES) -> ReadResult:
    """One rollout file from ``offset`` (no state file): a convenience around ``scan_rollout``."""
    f, _ = open_regular(path)
    with f:
        return scan_rollout(f, offset, line, carry or {}, name=str(path),
                            session_id=session_from_name(path), max_bytes=max_bytes)


def reader_for(path: Path | str, *, max_bytes: int = MAX_READ_BYTES) -> Reader:
    """A ``offsets.Reader`` for ``path`` (pass it to ``offsets.advance``)."""
    name, sid = str(path), session_from_name(path)

    def reader(f: BinaryIO, offset: int, line: int, carry: Mapping[str, object]) -> ReadResult:
        return scan_rollout(f, offset, line, carry, name=name, session_id=sid, max_bytes=max_bytes)

    return reader
