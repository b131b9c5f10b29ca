"""The beads (``bd``) integration as plain functions: talk to bd, read its JSONL export, pay closes.

No typer, no rich here (``bd.py`` is the thin CLI).  Three layers:

1. **Getting issues.**  ``BdClient`` runs the real ``bd`` (``$BEADS_PATH`` or ``bd`` on PATH)
   with ``--json``, stdin from /dev/null, ``BEADS_DIR`` passed through, and turns every output
   shape real bd versions print into plain dicts: ``show`` as a list (v0.11+) or one object
   (v0.9), objects with ``schema_version``, the ``BD_JSON_ENVELOPE=1`` envelope
   ``{"schema_version": 1, "data": ...}``, and errors as ``{"error": ...}`` JSON on stdout or
   stderr or plain text on stderr -- each becomes one ``BdError`` line.  Without bd,
   ``read_jsonl`` reads ``.beads/issues.jsonl`` (bd's export) and validates *every* line first.
2. **Parsing.**  ``parse_issue`` validates one raw object into an ``Issue`` and names where it
   came from (``issues.jsonl line 12``) on any problem.
3. **Paying.**  ``plan_payment`` decides reward and payee (pure); ``pay`` writes the plans in one
   atomic append, idempotently by issue id (txn id ``issue:<id>``).  A second close, a sync
   after a close, or the hook firing twice pays nothing new; if the reward would differ now
   (priority/type changed) the first payment stands and the outcome says so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from token_exchange.amounts import Units, fmt
from token_exchange.rules.config import Config
from token_exchange.errors import UserError, clean_text
from token_exchange.rules.identities import agent_for
from token_exchange.rules.rewards import IssueReward, issue_reward, match_contract, priority_label

STATUSES = ("open", "in_progress", "blocked", "deferred", "closed", "pinned", "hooked")
EXTRA_STATUSES_ENV = "TX_BD_EXTRA_STATUSES"  # custom bd statuses (bd config status.custom), comma-separated
# Beads that are not work: gates (async waits), agent/rig/role identity beads, mail.  bd list
# hides them even with --all; we never pay for closing them (same rule on every path).
NOT_WORK_TYPES = frozenset({"gate", "agent", "rig", "role", "message"})
ISSUE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,150}")
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})?")
MAX_FILE = 512 * 1024 * 1024  # 512 MiB: far beyond any real tracker export
MAX_LINE = 16 * 1024 * 1024   # one issue line
MAX_OUTPUT = 256 * 1024 * 1024
BD_TIMEOUT = 120
CLOSING_ENV = "TOKEN_EXCHANGE_BD_CLOSING"  # set while `tx-bd close` runs bd: our hook then stays quiet
TXN_PREFIX = "issue:"
_LABELS = tuple(f"P{n}" for n in range(10))


class BdError(UserError):
    """bd failed or printed something we cannot use (one clear line)."""


class BeadsDataError(UserError):
    """An issue record (JSONL line or bd output) is malformed; the message names where."""


# --------------------------------------------------------------------------- issues

@dataclass(frozen=True)
class Issue:
    id: str
    title: str
    status: str
    priority: int | str
    label: str  # P0-P9
    issue_type: str
    assignee: str = ""
    labels: tuple[str, ...] = ()
    closed_at: str = ""
    close_reason: str = ""
    is_template: bool = False
    pinned: bool = False
    where: str = ""

    @property
    def priority_label(self) -> str:
        return self.label

    @property
    def is_work(self) -> bool:
        return not self.is_template and self.issue_type.lower() not in NOT_WORK_TYPES


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


def parse_issue(obj: Any, where: str, statuses: Sequence[str] | None = None) -> Issue | None:
    """Validate one raw issue object; None for records that are not live issues (tombstones)."""
    if not isinstance(obj, dict):
        raise BeadsDataError(f"{where}: expected an issue object, got {type(obj).__name__}")
    raw_id = obj.get("id")
    if not isinstance(raw_id, str) or not raw_id:
        raise BeadsDataError(f"{where}: missing field 'id'" if raw_id in (None, "")
                             else f"{where}: field 'id' must be text")
    if not ISSUE_ID.fullmatch(raw_id):
        raise BeadsDataError(f"{where}: invalid issue id {raw_id[:60]!r}")
    where = f"{where} ({raw_id})"
    status = obj.get("status") or "open"  # bd's Issue.SetDefaults
    if not isinstance(status, str):
        raise BeadsDataError(f"{where}: field 'status' must be text")
    if status == "tombstone":  # deleted (exports before v0.51); bd import skips them
        return None
    statuses = known_statuses() if statuses is None else statuses
    if status not in statuses:
        raise BeadsDataError(f"{where}: unknown status {status[:40]!r} (known: {', '.join(statuses)};"
                             f" custom statuses go in ${EXTRA_STATUSES_ENV})")
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
    assignee = _text(obj, "assignee", where, limit=320)
    labels = obj.get("labels") or []
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise BeadsDataError(f"{where}: field 'labels' must be a list of text")
    closed_at = _text(obj, "closed_at", where, limit=64)
    if closed_at and not TIMESTAMP.fullmatch(closed_at):
        raise BeadsDataError(f"{where}: closed_at {closed_at[:40]!r} is not an RFC 3339 time")
    template = obj.get("is_template", False)
    return Issue(id=raw_id, title=title, status=status, priority=priority, label=label, issue_type=issue_type,
                 assignee=assignee.strip(), labels=tuple(_clean(x, 100) for x in labels[:200]),
                 closed_at=closed_at, close_reason=_text(obj, "close_reason", where),
                 is_template=template is True, pinned=obj.get("pinned") is True, where=where)


# --------------------------------------------------------------------------- JSONL export

def find_jsonl(cwd: Path | None = None) -> Path | None:
    """$BEADS_DIR/issues.jsonl, else .beads/issues.jsonl in the nearest directory that has one."""
    beads_dir = os.environ.get("BEADS_DIR")
    if beads_dir:
        return Path(beads_dir).expanduser() / "issues.jsonl"
    cur = (cwd or Path.cwd()).absolute()
    for d in (cur, *cur.parents):
        if (d / ".beads").is_dir():
            return d / ".beads" / "issues.jsonl"
    return None


def read_jsonl(path: Path, statuses: Sequence[str] | None = None) -> list[Issue]:
    """Every live issue in a bd export, validated line by line before anything is used.

    Skips blank lines, the ``_schema`` header, ``"_type": "memory"`` records and tombstones;
    a later line for the same id replaces an earlier one (as bd import upserts).  Anything
    else odd -> ``BeadsDataError`` naming the line.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BeadsDataError(f"no bd export at {path}") from None
    if size > MAX_FILE:
        raise BeadsDataError(f"{path}: {size} bytes is too large for an issue export (max {MAX_FILE})")
    statuses = known_statuses() if statuses is None else statuses
    name = path.name
    data = path.read_bytes()
    numbered = [(n, raw) for n, raw in enumerate(data.split(b"\n"), 1) if raw.strip()]
    for n, raw in numbered:
        if len(raw) > MAX_LINE:
            raise BeadsDataError(f"{name} line {n}: line is {len(raw)} bytes (max {MAX_LINE})")
    objs = _bulk_parse([raw for _n, raw in numbered])
    if objs is None:  # something is wrong: parse line by line to name the line
        objs = [_parse_line(raw, f"{name} line {n}") for n, raw in numbered]
    issues: dict[str, Issue] = {}
    for (n, _raw), obj in zip(numbered, objs):
        where = f"{name} line {n}"
        if obj.__class__ is dict:
            kind = obj.get("_type", "issue")
            if kind != "issue":
                if kind == "memory":
                    continue
                raise BeadsDataError(f"{where}: unknown record type {str(kind)[:40]!r}")
            if "_schema" in obj:
                continue
        issue = parse_issue(obj, where, statuses)
        if issue is not None:
            issues[issue.id] = issue
        else:
            issues.pop(obj["id"], None)
    return list(issues.values())


def _bulk_parse(lines: list[bytes]) -> list[Any] | None:
    """All lines as one JSON array (one C call, ~30% faster); None when any line is not one value."""
    try:
        objs = json.loads(b"[" + b",".join(lines) + b"]")
    except (ValueError, RecursionError):
        return None
    return objs if len(objs) == len(lines) else None


def _parse_line(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BeadsDataError(f"{where}: not valid UTF-8") from None
    except RecursionError:
        raise BeadsDataError(f"{where}: JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, or an integer too long to convert
        raise BeadsDataError(f"{where}: invalid JSON: {str(e)[:100]}") from None


# --------------------------------------------------------------------------- talking to bd

def find_bd() -> str | None:
    """$BEADS_PATH (as beads-mcp), else ``bd`` on PATH."""
    explicit = os.environ.get("BEADS_PATH")
    if explicit:
        if not os.path.isfile(explicit) or not os.access(explicit, os.X_OK):
            raise BdError(f"BEADS_PATH={explicit[:200]} is not an executable")
        return explicit
    return shutil.which("bd")


def _unwrap(value: Any) -> Any:
    """Remove the BD_JSON_ENVELOPE wrapper {"schema_version": N, "data": ...}."""
    if isinstance(value, dict) and "data" in value and set(value) <= {"data", "schema_version"}:
        return value["data"]
    return value


def _error_of(value: Any) -> str | None:
    value = _unwrap(value)
    if isinstance(value, dict) and "error" in value:
        msg = str(value.get("error") or "failed")
        if value.get("hint"):
            msg += f" ({value['hint']})"
        return msg
    return None


def _json_in(text: str) -> Any:
    """The first JSON document in text that may have plain lines before it (stderr)."""
    stripped = text.strip()
    if not stripped:
        return None
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    dec = json.JSONDecoder()
    for m in re.finditer(r"^[{\[]", text, re.M):
        try:
            return dec.raw_decode(text, m.start())[0]
        except ValueError:
            continue
    return None


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def plain_error(stderr: str) -> str:
    """bd's plain-text error: the 'Error: ...' line (and its hint), else the last line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.startswith("Error:"):
            msg = ln[len("Error:"):].strip()
            if i + 1 < len(lines) and lines[i + 1].startswith("Hint:"):
                msg += f" ({lines[i + 1][5:].strip()})"
            return msg
    return lines[-1] if lines else ""


@dataclass
class BdResult:
    data: Any
    stderr: str
    code: int
    error: str = ""


class BdClient:
    """The real ``bd`` CLI (or anything that prints what it prints)."""

    def __init__(self, binary: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.binary = binary
        self.cwd = cwd
        self.env = env

    def run(self, *args: str, extra_env: dict[str, str] | None = None, allow_fail: bool = False) -> BdResult:
        """Run ``bd ARGS --json``; return its unwrapped JSON, or raise one clear BdError."""
        env = dict(os.environ if self.env is None else self.env)
        env.update(extra_env or {})
        cmd = [self.binary, *args, "--json"]
        what = f"bd {args[0]}" if args else "bd"
        try:
            proc = subprocess.run(cmd, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=BD_TIMEOUT)
        except FileNotFoundError:
            raise BdError(f"bd not found at {self.binary}") from None
        except PermissionError:
            raise BdError(f"cannot run {self.binary} (permission denied)") from None
        except subprocess.TimeoutExpired:
            raise BdError(f"{what} did not answer within {BD_TIMEOUT} s") from None
        if len(proc.stdout) > MAX_OUTPUT:
            raise BdError(f"{what} printed more than {MAX_OUTPUT} bytes")
        out = proc.stdout.decode("utf-8", "replace")
        err = proc.stderr.decode("utf-8", "replace")
        data: Any = None
        if out.strip():
            try:
                data = json.loads(out)
            except RecursionError:
                raise BdError(f"{what} printed JSON nested too deeply") from None
            except ValueError:
                if proc.returncode == 0:
                    raise BdError(f"{what} printed no JSON (is this bd? got {_one_line(out, 80)!r})") from None
                data = None
        msg = _error_of(data) if data is not None else None
        if msg is None and proc.returncode != 0:
            msg = _error_of(_json_in(err)) or plain_error(err) or f"exit status {proc.returncode}"
        if msg is not None:
            if allow_fail:  # the caller reports it (e.g. per-id close refusals)
                return BdResult(None, err, proc.returncode, _one_line(msg))
            raise BdError(f"{what}: {_one_line(msg)}")
        return BdResult(_unwrap(data), err, proc.returncode)

    # ------------------------------------------------------------------ commands
    def show(self, issue_id: str) -> Issue:
        res = self.run("show", issue_id)
        items = _as_list(res.data, "bd show")
        issues = [i for i in (parse_issue(o, "bd show output") for o in items) if i is not None]
        for i in issues:
            if i.id == issue_id:
                return i
        if len(issues) == 1:
            return issues[0]  # a partial id bd resolved
        raise BdError(f"bd show: no issue {issue_id}")

    def list(self, status: str) -> list[Issue]:
        res = self.run("list", "--status", status, "--limit", "0")
        items = _as_list(res.data, "bd list")
        statuses = known_statuses()
        return [i for n, o in enumerate(items, 1)
                if (i := parse_issue(o, f"bd list item {n}", statuses)) is not None]

    def close(self, ids: Sequence[str], reason: str | None,
              extra_env: dict[str, str]) -> tuple[list[Issue], str, str]:
        """(issues bd closed, its stderr, its error line when it closed nothing)."""
        args = ["close", *ids]
        if reason:
            args += ["--reason", reason]
        res = self.run(*args, extra_env=extra_env, allow_fail=True)
        if res.error:
            return [], res.stderr, res.error
        items = _as_list(res.data, "bd close", key="closed")
        closed = [i for n, o in enumerate(items, 1) if (i := parse_issue(o, f"bd close item {n}")) is not None]
        return closed, res.stderr, ""


def _as_list(data: Any, what: str, key: str = "issues") -> list[Any]:
    """bd prints lists; legacy show printed one object; --skip-labels/--suggest-next wrap in an object."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        if isinstance(data.get(key), list):
            return data[key]
        if "id" in data:
            return [{k: v for k, v in data.items() if k != "schema_version"}]
    if data is None:
        return []
    raise BdError(f"{what}: unexpected output ({type(data).__name__})")


# --------------------------------------------------------------------------- where issues come from

@dataclass
class Source:
    """bd (preferred when installed) or the JSONL export."""

    client: BdClient | None = None
    jsonl: Path | None = None

    @property
    def name(self) -> str:
        return f"bd ({self.client.binary})" if self.client else f"{self.jsonl}"

    def issue(self, issue_id: str) -> Issue:
        if self.client:
            return self.client.show(issue_id)
        assert self.jsonl is not None
        for i in read_jsonl(self.jsonl):
            if i.id == issue_id:
                return i
        raise UserError(f"no issue {issue_id[:60]} in {self.jsonl}")

    def open_issues(self) -> list[Issue]:
        """Open work: what ``bd list`` shows by default (no closed, pinned, templates, non-work types)."""
        if self.client:
            issues = self.client.list("open,in_progress,blocked,deferred,hooked")
        else:
            assert self.jsonl is not None
            issues = [i for i in read_jsonl(self.jsonl) if i.status not in ("closed", "pinned") and not i.pinned]
        return [i for i in issues if i.is_work]

    def closed_issues(self) -> list[Issue]:
        if self.client:
            return self.client.list("closed")
        assert self.jsonl is not None
        return [i for i in read_jsonl(self.jsonl) if i.status == "closed"]


def open_source(jsonl: Path | None = None, cwd: Path | None = None, *, need_bd: bool = False) -> Source:
    if jsonl is not None and not need_bd:
        return Source(jsonl=jsonl)
    binary = find_bd()
    if binary:
        return Source(client=BdClient(binary, cwd=cwd))
    if need_bd:
        raise BdError("bd is not installed (not on PATH, BEADS_PATH unset): closing needs bd;"
                      " `tx-bd sync` pays issues closed elsewhere")
    path = find_jsonl(cwd)
    if path is None or not path.exists():
        raise UserError("bd is not installed and there is no .beads/issues.jsonl here"
                        " (install bd, set BEADS_PATH, or set BEADS_DIR)")
    return Source(jsonl=path)


# --------------------------------------------------------------------------- payees and rewards

def actor(cwd: Path | None = None) -> str:
    """Who is closing: $BEADS_ACTOR / $BD_ACTOR, else git user.email."""
    for var in ("BEADS_ACTOR", "BD_ACTOR"):
        if os.environ.get(var, "").strip():
            return os.environ[var].strip()
    try:
        proc = subprocess.run(["git", "config", "--get", "user.email"], cwd=cwd, capture_output=True,
                              stdin=subprocess.DEVNULL)
    except OSError:
        return ""
    return proc.stdout.decode("utf-8", "replace").strip() if proc.returncode == 0 else ""


@dataclass(frozen=True)
class Payee:
    agent: str | None
    source: str  # "assignee", "--agent", "actor", or "" when none
    detail: str  # the address/name it came from, or why none


def payee_for(cfg: Config, issue: Issue, agent: str | None, closer: str) -> Payee:
    """Assignee when it is a known agent, else --agent, else the closing actor."""
    if issue.assignee:
        name = agent_for(cfg, issue.assignee)
        if name:
            return Payee(name, "assignee", issue.assignee)
    if agent:
        cfg.agent(agent)
        return Payee(agent, "--agent", agent)
    if closer:
        name = agent_for(cfg, closer)
        if name:
            return Payee(name, "actor", closer)
    why = [f"assignee {issue.assignee[:80]!r} is not an agent" if issue.assignee else "no assignee",
           "no --agent", f"actor {closer[:80]!r} is not an agent" if closer else "no actor (BEADS_ACTOR,"
           " BD_ACTOR, git user.email)"]
    return Payee(None, "", "; ".join(why))


def reward_for(cfg: Config, issue: Issue) -> IssueReward:
    try:
        return issue_reward(cfg, issue.label, issue.issue_type, issue.labels)
    except UserError as e:
        raise BeadsDataError(f"{issue.where or issue.id}: {e}") from None


def rewards_for(cfg: Config, issues: Sequence[Issue]) -> list[IssueReward]:
    """reward_for each issue, memoised: exports repeat few priority/type/label combinations."""
    memo: dict[tuple[str, str, tuple[str, ...]], IssueReward] = {}
    out = []
    for i in issues:
        key = (i.label, i.issue_type, i.labels)
        r = memo.get(key)
        if r is None:
            r = memo[key] = reward_for(cfg, i)
        out.append(r)
    return out


@dataclass
class Plan:
    """What paying one issue means: computed before anything is written."""

    issue: Issue
    reward: IssueReward
    payee: Payee

    @property
    def txn_id(self) -> str:
        return TXN_PREFIX + self.issue.id


@dataclass
class Outcome:
    issue: Issue
    reward: IssueReward
    agent: str | None
    paid: Units = 0
    created: bool = False
    already: Any = None  # the earlier Txn
    note: str = ""
    payee_source: str = ""

    def to_json(self) -> dict[str, Any]:
        from token_exchange.amounts import to_decimal

        d: dict[str, Any] = issue_json(self.issue, self.reward)
        d.update(agent=self.agent, payee_from=self.payee_source or None, paid=self.created,
                 already_paid=self.already is not None, amount=to_decimal(self.paid))
        if self.already is not None:
            d["paid_to"] = self.already.agent
            d["paid_at"] = self.already.ts
        if self.note:
            d["note"] = self.note
        return d


def reward_json(reward: IssueReward) -> dict[str, Any]:
    from token_exchange.amounts import to_decimal

    return {"reward": to_decimal(reward.amount), "priority_tokens": reward.base, "multiplier": reward.multiplier,
            "multiplier_from": reward.multiplier_from, "reason": reward.reason}


def issue_json(issue: Issue, reward: IssueReward | None, reward_part: dict[str, Any] | None = None,
               ) -> dict[str, Any]:
    d: dict[str, Any] = {"id": issue.id, "title": issue.title, "status": issue.status,
                         "priority": issue.priority, "priority_label": issue.label,
                         "issue_type": issue.issue_type, "labels": list(issue.labels),
                         "assignee": issue.assignee or None}
    if reward is not None:
        d.update(reward_part if reward_part is not None else reward_json(reward))
    return d


def plan(cfg: Config, issues: Iterable[Issue], agent: str | None, closer: str) -> list[Plan]:
    """Reward and payee for every issue; raises on the first malformed one (nothing written yet)."""
    issues = list(issues)
    return [Plan(i, r, payee_for(cfg, i, agent, closer)) for i, r in zip(issues, rewards_for(cfg, issues))]


def _changed_note(p: Plan, old: Any) -> str:
    was = old.breakdown
    now = p.reward
    if old.amount == now.amount and was.get("priority") == now.priority and was.get("issue_type") == now.issue_type:
        return ""
    return (f"{p.issue.id} is now {now.priority} {now.issue_type} ({fmt(now.amount)} tokens) but was paid as "
            f"{was.get('priority', '?')} {was.get('issue_type', '?')} ({fmt(old.amount)}): the first payment stands")


def pay(ex: Any, plans: Sequence[Plan], project: str, via: str) -> list[Outcome]:
    """Pay every plan that has a payee and is not paid yet, in ONE atomic append (all or nothing)."""
    from token_exchange.ledger.txn import REWARDS, make_txn

    contract = match_contract(ex.cfg.contracts, project).name if project else ""
    outcomes: list[Outcome] = []
    with ex.ledger.locked() as idx:
        txns = []
        pending: list[tuple[Outcome, int]] = []
        seen: set[str] = set()
        for p in plans:
            old = idx.get(p.txn_id)
            out = Outcome(p.issue, p.reward, p.payee.agent, payee_source=p.payee.source)
            outcomes.append(out)
            if old is not None:
                out.already, out.agent, out.paid = old, old.agent, old.amount
                out.payee_source = old.breakdown.get("payee_from", "")
                out.note = _changed_note(p, old)
                continue
            if p.payee.agent is None or p.issue.id in seen:
                continue
            seen.add(p.issue.id)
            bd = p.reward.breakdown()
            bd["payee_from"] = p.payee.source
            source: dict[str, str | int] = {"type": "bd", "issue": p.issue.id, "via": via}
            if p.issue.closed_at:
                source["closed_at"] = p.issue.closed_at
            if contract:
                source["contract"] = contract
            ex.ensure_open(idx, p.payee.agent)
            txns.append(make_txn(p.txn_id, "award", REWARDS, p.payee.agent, p.reward.amount, agent=p.payee.agent,
                                 project=project, description=f"closed {p.issue.id}: {p.issue.title}",
                                 source=source, breakdown=bd, ref=p.txn_id))
            pending.append((out, len(txns) - 1))
        if txns:
            appended = ex.ledger.append_many(txns)
            for out, i in pending:
                a = appended[i]
                out.created, out.paid = a.created, a.txn.amount
                if not a.created:  # pragma: no cover - only if another writer raced past the lock
                    out.already = a.txn
    return outcomes


def paid_ids(ex: Any) -> dict[str, Any]:
    """Issue id -> its payment txn, for every issue ever paid (one query)."""
    from token_exchange.ledger.txn import Txn

    idx = ex.ledger.fresh()
    rows = idx.db.execute("SELECT data FROM txns WHERE id >= ? AND id < ?", (TXN_PREFIX, "issue;"))
    out = {}
    for (data,) in rows:
        t = Txn.from_json(json.loads(data))
        out[t.id[len(TXN_PREFIX):]] = t
    return out


@dataclass
class CloseReport:
    outcomes: list[Outcome] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


def refusals(requested: Sequence[str], closed: Sequence[Issue], stderr: str, error: str = "") -> list[tuple[str, str]]:
    """Requested ids bd did not close, each with bd's reason from stderr (if it gave one)."""
    closed_ids = [i.id for i in closed]
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.lstrip().startswith(("{", "}", '"'))]
    fallback = error or _error_of(_json_in(stderr)) or plain_error(stderr)
    out = []
    for ident in requested:
        if ident in closed_ids or any(c.endswith(ident) or c.endswith("-" + ident) for c in closed_ids):
            continue
        pat = re.compile(rf"(?<![\w.-]){re.escape(ident)}(?![\w.-])")
        hits = [(m.start(), ln) for ln in lines if (m := pat.search(ln))]
        why = min(hits)[1] if hits else ""  # the line that names this id first (not as a blocker)
        if why.startswith("Error:"):
            why = why[6:].strip()
        out.append((ident, _one_line(why or fallback or "bd did not close it (no reason given)")))
    return out


def issue_from_hook(issue_id: str, text: str) -> Issue | None:
    """The issue bd handed the on_close hook on stdin (any shape), or None if it gave none."""
    if len(text) > MAX_LINE:
        raise BeadsDataError(f"hook input for {issue_id[:60]} is larger than {MAX_LINE} bytes")
    if not text.strip():
        return None
    try:
        data = _unwrap(json.loads(text))
    except (ValueError, RecursionError):
        raise BeadsDataError(f"hook input for {issue_id[:60]} is not JSON") from None
    if _error_of(data):
        return None
    items = _as_list(data, "hook input")
    found = [i for n, o in enumerate(items, 1) if (i := parse_issue(o, "hook input")) is not None]
    for i in found:
        if i.id == issue_id:
            return i
    if found:
        raise BeadsDataError(f"hook input is issue {found[0].id}, not {issue_id[:60]}")
    return None
