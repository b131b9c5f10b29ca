"""Where issues come from: the real ``bd`` CLI, or bd's JSONL export when bd is not installed.

``BdClient`` runs ``bd <args> --json`` as beads-mcp does (``integrations/beads-mcp/src/beads_mcp/
bd_client.py``): ``$BEADS_PATH`` or ``bd`` on PATH, stdin from /dev/null, the caller's environment
(``BEADS_DIR``, ``BD_ACTOR``, ``BD_JSON_ENVELOPE`` pass through), ``--actor NAME`` when given.  Every
output shape real bd versions print becomes plain values (see ``shapes``); every failure one
``BdError`` line.  ``bd list`` always gets ``--limit 0`` (its default is 50, 20 in agent mode).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from token_exchange.beads import workspace
from token_exchange.beads.issues import Issue, known_statuses, parse_issue, read_jsonl
from token_exchange.beads.shapes import (
    BdError,
    as_list,
    error_of,
    json_in,
    one_line,
    plain_error,
    unwrap,
)
from token_exchange.errors import UserError

MAX_OUTPUT = 256 * 1024 * 1024
BD_TIMEOUT = 120
CLOSING_ENV = "TOKEN_EXCHANGE_BD_CLOSING"  # set while `tx-bd close` runs bd: our hooks then stay quiet
OPEN_STATUSES = "open,in_progress,blocked,deferred,hooked"


def find_bd() -> str | None:
    """$BEADS_PATH (as beads-mcp), else ``bd`` on PATH."""
    explicit = os.environ.get("BEADS_PATH")
    if explicit:
        if not os.path.isfile(explicit) or not os.access(explicit, os.X_OK):
            raise BdError(f"BEADS_PATH={one_line(explicit, 200)} is not an executable")
        return explicit
    return shutil.which("bd")


class BdResult(NamedTuple):
    data: Any
    stderr: str
    code: int
    error: str = ""


class BdClient:
    """The real ``bd`` CLI (or anything that prints what it prints)."""

    def __init__(self, binary: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                 actor: str | None = None) -> None:
        self.binary = binary
        self.cwd = cwd
        self.env = env
        self.actor = actor  # passed as `--actor NAME` (bd's first actor source)

    def run(self, *args: str, extra_env: dict[str, str] | None = None, allow_fail: bool = False) -> BdResult:
        """Run ``bd ARGS --json``; return its unwrapped JSON, or raise one clear BdError."""
        env = dict(os.environ if self.env is None else self.env)
        env.update(extra_env or {})
        cmd = [self.binary, *args, "--json"] + (["--actor", self.actor] if self.actor else [])
        what = f"bd {args[0]}" if args else "bd"
        try:
            proc = subprocess.run(cmd, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=BD_TIMEOUT, check=False)
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
                    raise BdError(f"{what} printed no JSON (is this bd? got {one_line(out, 80)!r})") from None
                data = None
        msg = error_of(data) if data is not None else None
        if msg is None and proc.returncode != 0:
            msg = error_of(json_in(err)) or plain_error(err) or f"exit status {proc.returncode}"
        if msg is not None:
            if allow_fail:  # the caller reports it (e.g. per-id close refusals)
                return BdResult(None, err, proc.returncode, one_line(msg))
            raise BdError(f"{what}: {one_line(msg)}")
        return BdResult(unwrap(data), err, proc.returncode)

    # ------------------------------------------------------------------ commands
    def show(self, issue_id: str) -> Issue:
        res = self.run("show", issue_id)
        items = as_list(res.data, "bd show")
        issues = [i for i in (parse_issue(o, "bd show output") for o in items) if i is not None]
        for i in issues:
            if i.id == issue_id:
                return i
        if len(issues) == 1 and matches(issue_id, issues[0].id):
            return issues[0]  # a partial id bd resolved
        raise BdError(f"bd show: no issue {one_line(issue_id, 60)}")

    def list_issues(self, *filters: str) -> list[Issue]:
        res = self.run("list", *filters, "--limit", "0")
        items = as_list(res.data, "bd list")
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
        items = as_list(res.data, "bd close", key="closed")
        closed = [i for n, o in enumerate(items, 1) if (i := parse_issue(o, f"bd close item {n}")) is not None]
        return closed, res.stderr, ""


# --------------------------------------------------------------------------- what bd did with what we asked

def matches(requested: str, issue_id: str) -> bool:
    """Whether bd could have resolved ``requested`` to ``issue_id`` (``internal/utils/id_parser.go``
    ResolvePartialID: the full id, ``<prefix>-`` added, or a part of the hash after the prefix, at the
    same depth of the hierarchy)."""
    if requested == issue_id or issue_id.endswith("-" + requested):
        return True
    prefix, dash, hash_part = issue_id.rpartition("-")
    if not dash:
        return False
    wanted = requested[len(prefix) + 1:] if requested.startswith(prefix + "-") else requested
    # never across a level of the hierarchy: tx-1 is not a partial id of its child tx-1.1
    return bool(wanted) and "-" not in wanted and wanted in hash_part and wanted.count(".") == hash_part.count(".")


def answered(requested: Sequence[str], returned: Sequence[Issue]) -> tuple[list[Issue], list[Issue]]:
    """(the returned issues that answer a request, those nobody asked for).

    ``tx-bd close tx-1`` must never pay ``tx-2`` because bd (or something posing as bd) returned it:
    each request takes the issue with its exact id, else the one issue its partial id can mean.
    """
    taken: dict[str, Issue] = {}
    for ident in requested:
        exact = next((i for i in returned if i.id == ident), None)
        hits = [exact] if exact is not None else [i for i in returned if matches(ident, i.id)]
        if len(hits) == 1 and hits[0].id not in taken:
            taken[hits[0].id] = hits[0]
    return list(taken.values()), [i for i in returned if i.id not in taken]


def refusals(requested: Sequence[str], closed: Sequence[Issue], stderr: str, error: str = "") -> list[tuple[str, str]]:
    """Requested ids bd did not close, each with bd's reason from stderr (if it gave one)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.lstrip().startswith(("{", "}", '"'))]
    fallback = error or error_of(json_in(stderr)) or plain_error(stderr)
    out = []
    for ident in requested:
        if any(matches(ident, c.id) for c in closed):
            continue
        pat = re.compile(rf"(?<![\w.-]){re.escape(ident)}(?![\w.-])")
        hits = [(m.start(), ln) for ln in lines if (m := pat.search(ln))]
        why = min(hits)[1] if hits else ""  # the line that names this id first (not as a blocker)
        if why.startswith("Error:"):
            why = why[6:].strip()
        out.append((ident, one_line(why or fallback or "bd did not close it (no reason given)")))
    return out


# --------------------------------------------------------------------------- where issues come from

class Source:
    """bd (preferred when installed) or the JSONL export."""

    def __init__(self, client: BdClient | None = None, jsonl: Path | None = None) -> None:
        self.client = client
        self.jsonl = jsonl
        self._all: list[Issue] | None = None

    @property
    def name(self) -> str:
        return f"bd ({self.client.binary})" if self.client else f"{self.jsonl}"

    def _file(self) -> list[Issue]:
        assert self.jsonl is not None
        if self._all is None:
            self._all = read_jsonl(self.jsonl)
        return self._all

    def issue(self, issue_id: str) -> Issue:
        if self.client:
            return self.client.show(issue_id)
        for i in self._file():
            if i.id == issue_id:
                return i
        raise UserError(f"no issue {one_line(issue_id, 60)} in {self.jsonl}")

    def open_issues(self) -> list[Issue]:
        """Open work: what ``bd list`` shows by default, less what is not work (wisps, templates, gates...)."""
        if self.client:
            issues = self.client.list_issues("--status", OPEN_STATUSES)
        else:
            issues = [i for i in self._file() if i.status not in ("closed", "pinned") and not i.pinned]
        return [i for i in issues if i.is_work]

    def all_issues(self) -> list[Issue]:
        """Every issue ``bd list --all`` returns (closed ones too; wisps included: callers skip them)."""
        if self.client:
            return self.client.list_issues("--all")
        return list(self._file())


def open_source(jsonl: Path | None = None, cwd: Path | None = None, *, need_bd: bool = False,
                actor: str | None = None) -> Source:
    if jsonl is not None and not need_bd:
        return Source(jsonl=jsonl)
    binary = find_bd()
    if binary:
        return Source(client=BdClient(binary, cwd=cwd, actor=actor))
    if need_bd:
        raise BdError("bd is not installed (not on PATH, BEADS_PATH unset): closing needs bd;"
                      " `tx-bd sync` pays issues closed elsewhere")
    found = workspace.resolve(cwd)
    if found is None or not found.export.exists():
        raise UserError("bd is not installed and there is no .beads/issues.jsonl here"
                        " (install bd, set BEADS_PATH, or set BEADS_DIR)")
    return Source(jsonl=found.export)
