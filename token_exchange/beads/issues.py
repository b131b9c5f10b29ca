"""bd issues as plain values: one validated ``Issue`` per record, from bd's JSON or its JSONL export.

Field names and defaults follow bd's ``internal/types/types.go`` (v1.0.5): ``status`` defaults to
open and ``issue_type`` to task (``Issue.SetDefaults``); ``id``, ``title`` and ``priority`` are
always there.  Every problem is a ``BeadsDataError`` naming where the record came from
(``issues.jsonl line 12 (tx-b71c)``), so a bad record is one line, never a traceback.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from token_exchange.amounts import to_decimal
from token_exchange.errors import UserError, clean_text
from token_exchange.rules.engine import IssueFacts
from token_exchange.rules.rewards import IssueReward, priority_label

STATUSES = ("open", "in_progress", "blocked", "deferred", "closed", "pinned", "hooked")
EXTRA_STATUSES_ENV = "TX_BD_EXTRA_STATUSES"  # custom bd statuses (bd config status.custom), comma-separated
# Beads that are not work: gates (async waits), agent/rig/role identity beads, mail.  bd list hides
# them even with --all (storage.DefaultInfraTypes + gates); closing them never pays, on every path.
NOT_WORK_TYPES = frozenset({"gate", "agent", "rig", "role", "message"})
ISSUE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,150}")
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})?")
MAX_FILE = 512 * 1024 * 1024  # 512 MiB: far beyond any real tracker export
MAX_LINE = 16 * 1024 * 1024   # one issue line (also the largest hook input)
_LABELS = tuple(f"P{n}" for n in range(10))


class BeadsDataError(UserError):
    """An issue record (JSONL line, bd output, hook input) is malformed; the message names where."""


class Issue(NamedTuple):
    id: str
    title: str
    status: str
    priority: int | str
    label: str  # P0-P9
    issue_type: str
    assignee: str = ""
    labels: tuple[str, ...] = ()
    closed_at: str = ""
    updated_at: str = ""
    close_reason: str = ""
    is_template: bool = False
    pinned: bool = False
    ephemeral: bool = False  # a wisp: bd list --json merges them in, bd export leaves them out
    where: str = ""

    @property
    def priority_label(self) -> str:
        return self.label

    @property
    def not_work(self) -> str:
        """Why closing this is not work ("" when it is): wisps, templates, gates, identity beads, mail."""
        if self.ephemeral:
            return "a wisp (ephemeral issue)"
        if self.is_template:
            return "a template"
        kind = self.issue_type.lower()
        return f"a {kind}" if kind in NOT_WORK_TYPES else ""

    @property
    def is_work(self) -> bool:
        return not self.not_work

    def facts(self, project: str = "") -> IssueFacts:
        """The engine's view of this issue."""
        return IssueFacts(self.id, self.title, self.status, self.label, self.issue_type, self.labels,
                          self.closed_at, self.updated_at, project, self.not_work)


def known_statuses() -> tuple[str, ...]:
    extra = os.environ.get(EXTRA_STATUSES_ENV, "")
    return STATUSES + tuple(s.strip() for s in extra.split(",") if s.strip())


def _clean(value: str, limit: int) -> str:
    """clean_text with a fast path for the usual plain ASCII text (10,000-issue exports)."""
    if len(value) <= limit and value.isascii() and "\x00" not in value:
        return value
    return clean_text(value, limit=limit)


def _text(obj: dict[str, Any], key: str, where: str, *, required: bool = False, limit: int = 500) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise BeadsDataError(f"{where}: missing field {key!r}")
        return ""
    if value.__class__ is not str:
        raise BeadsDataError(f"{where}: field {key!r} must be text, got {type(value).__name__}")
    return _clean(value, limit)


def _time(obj: dict[str, Any], key: str, where: str) -> str:
    value = _text(obj, key, where, limit=64)
    if value and not TIMESTAMP.fullmatch(value):
        raise BeadsDataError(f"{where}: {key} {value[:40]!r} is not an RFC 3339 time")
    return value


def parse_issue(obj: Any, where: str, statuses: Sequence[str] | None = None) -> Issue | None:
    """Validate one raw issue object; None for records that are not live issues (tombstones)."""
    if not isinstance(obj, dict):
        raise BeadsDataError(f"{where}: expected an issue object, got {type(obj).__name__}")
    raw_id = obj.get("id")
    if not isinstance(raw_id, str) or not raw_id:
        raise BeadsDataError(f"{where}: missing field 'id'" if raw_id in (None, "")
                             else f"{where}: field 'id' must be text")
    if not ISSUE_ID.fullmatch(raw_id):
        raise BeadsDataError(f"{where}: invalid issue id {clean_text(raw_id, limit=60)!r}")
    where = f"{where} ({raw_id})"
    status = obj.get("status") or "open"  # bd's Issue.SetDefaults
    if not isinstance(status, str):
        raise BeadsDataError(f"{where}: field 'status' must be text")
    if status == "tombstone":  # deleted (exports before v0.51); bd import skips them
        return None
    statuses = known_statuses() if statuses is None else statuses
    if status not in statuses:
        raise BeadsDataError(f"{where}: unknown status {clean_text(status, limit=40)!r} (known: "
                             f"{', '.join(statuses)}; custom statuses go in ${EXTRA_STATUSES_ENV})")
    title = _text(obj, "title", where, required=True)
    if "priority" not in obj:
        raise BeadsDataError(f"{where}: missing field 'priority'")
    priority = obj["priority"]
    if isinstance(priority, bool) or not isinstance(priority, (int, str)):
        raise BeadsDataError(f"{where}: invalid priority {str(priority)[:20]!r} (bd uses 0-4)")
    if priority.__class__ is int and 0 <= priority <= 9:
        label = _LABELS[priority]
    else:
        try:
            label = priority_label(priority)
        except UserError as e:
            raise BeadsDataError(f"{where}: {e}") from None
    issue_type = _text(obj, "issue_type", where, limit=64) or "task"
    labels = obj.get("labels") or []
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise BeadsDataError(f"{where}: field 'labels' must be a list of text")
    # "wisp" is the legacy name of "ephemeral" (bd import treats it so); anything but true is false
    ephemeral = obj.get("ephemeral") is True or obj.get("wisp") is True
    return Issue(id=raw_id, title=title, status=status, priority=priority, label=label, issue_type=issue_type,
                 assignee=_text(obj, "assignee", where, limit=320).strip(),
                 labels=tuple(_clean(x, 100) for x in labels[:200]),
                 closed_at=_time(obj, "closed_at", where), updated_at=_time(obj, "updated_at", where),
                 close_reason=_text(obj, "close_reason", where), is_template=obj.get("is_template") is True,
                 pinned=obj.get("pinned") is True, ephemeral=ephemeral, where=where)


# --------------------------------------------------------------------------- the JSONL export

def read_jsonl(path: os.PathLike[str], statuses: Sequence[str] | None = None) -> list[Issue]:
    """Every live issue in a bd export, each line parsed ON ITS OWN and validated before anything is used.

    Skips blank lines, the ``_schema`` header, ``"_type": "memory"`` records and tombstones; a later
    line for the same id replaces an earlier one (as bd import upserts).  Anything else odd ->
    ``BeadsDataError`` naming the line.  Lines are never joined: two lines that are each invalid
    but would be valid together (``{"id": ..., "title": "a"`` / ``"priority": 1}``) are two errors.
    """
    from pathlib import Path

    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BeadsDataError(f"no bd export at {path}") from None
    if size > MAX_FILE:
        raise BeadsDataError(f"{path}: {size} bytes is too large for an issue export (max {MAX_FILE})")
    statuses = known_statuses() if statuses is None else statuses
    name = path.name
    issues: dict[str, Issue] = {}
    for n, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        if not raw.strip():
            continue
        where = f"{name} line {n}"
        if len(raw) > MAX_LINE:
            raise BeadsDataError(f"{where}: line is {len(raw)} bytes (max {MAX_LINE})")
        obj = parse_json_line(raw, where)
        if obj.__class__ is dict:
            kind = obj.get("_type", "issue")
            if kind != "issue":
                if kind == "memory":
                    continue
                raise BeadsDataError(f"{where}: unknown record type {clean_text(str(kind), limit=40)!r}")
            if "_schema" in obj:
                continue
        issue = parse_issue(obj, where, statuses)
        if issue is not None:
            issues[issue.id] = issue
        else:
            issues.pop(obj["id"], None)
    return list(issues.values())


def parse_json_line(raw: bytes, where: str) -> Any:
    """One JSON value from one line (UTF-8); a one-line ``BeadsDataError`` otherwise."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BeadsDataError(f"{where}: not valid UTF-8") from None
    except RecursionError:
        raise BeadsDataError(f"{where}: JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, or an integer too long to convert
        raise BeadsDataError(f"{where}: invalid JSON: {str(e)[:100]}") from None


# --------------------------------------------------------------------------- JSON for our output

def reward_json(reward: IssueReward) -> dict[str, Any]:
    return {"reward": to_decimal(reward.amount), "priority_tokens": reward.base, "multiplier": reward.multiplier,
            "multiplier_from": reward.multiplier_from, "reason": reward.reason}


def issue_json(issue: Issue, reward: IssueReward | None, reward_part: dict[str, Any] | None = None,
               ) -> dict[str, Any]:
    d: dict[str, Any] = {"id": issue.id, "title": issue.title, "status": issue.status,
                         "priority": issue.priority, "priority_label": issue.label,
                         "issue_type": issue.issue_type, "labels": list(issue.labels),
                         "assignee": issue.assignee or None}
    if issue.ephemeral:
        d["ephemeral"] = True
    if reward is not None:
        d.update(reward_part if reward_part is not None else reward_json(reward))
    return d
