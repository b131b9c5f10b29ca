"""bd's own hooks: what bd hands them, the scripts ``tx-bd install-hook`` writes, the pre_write protocol.

``on_close`` / ``on_update`` (``internal/hooks/hooks.go``, ``hooks_unix.go``, ``internal/storage/
hook_decorator.go``, v1.0.5): bd runs ``<resolved beads dir>/hooks/on_<event> <issue-id> <event>``
with the issue as compact JSON on stdin, bd's environment (``BEADS_DIR`` set to the resolved dir)
and working directory, asynchronously after the write, killed after 10 s, and possibly never
started when bd exits first; ``BD_NO_HOOKS=1`` turns them off.  ``bd close`` fires only
``on_close``; ``bd update --status closed`` (and ``bd reopen``) only ``on_update``.

``pre_write`` (``internal/hooks/prewrite.go``, newer than 1.0.5) is synchronous: bd runs it with
``{"version": 1, "operation": "issue.update", "repository": {"root", "beads_dir"}}`` on stdin, the
repository root as working directory and an environment of ``PATH`` ONLY, and denies the write unless
stdout is exactly one ``{"allow": true}`` object (a malformed answer, a timeout, a non-zero exit or
more than 32 KiB of output deny it).  The request names no issue and no actor.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, NamedTuple

from token_exchange.beads.issues import MAX_LINE, BeadsDataError, Issue, parse_issue
from token_exchange.beads.shapes import as_list, error_of, one_line, unwrap
from token_exchange.errors import UserError

MARKER = "# token-exchange bd hook"
LEGACY_MARKER = "# token-exchange on_close hook"  # what earlier versions wrote
EVENTS = ("close", "update")  # the hooks that can see a close (and a reopen)
PRE_WRITE = "pre_write"
PRE_WRITE_VERSION = 1
MAX_PRE_WRITE_REQUEST = 32 * 1024
CLAIM_WORDS = ("claim",)  # operations that take new work (bd names them issue.claim, ...claim_next)


def issue_from_hook(issue_id: str, text: str) -> Issue | None:
    """The issue bd handed a hook on stdin (any shape), or None if it gave none."""
    if len(text) > MAX_LINE:
        raise BeadsDataError(f"hook input for {one_line(issue_id, 60)} is larger than {MAX_LINE} bytes")
    if not text.strip():
        return None
    try:
        data = unwrap(json.loads(text))
    except (ValueError, RecursionError):
        raise BeadsDataError(f"hook input for {one_line(issue_id, 60)} is not JSON") from None
    if error_of(data):
        return None
    items = as_list(data, "hook input")
    found = [i for o in items if (i := parse_issue(o, "hook input")) is not None]
    for i in found:
        if i.id == issue_id:
            return i
    if found:
        raise BeadsDataError(f"hook input is issue {found[0].id}, not {one_line(issue_id, 60)}")
    return None


# --------------------------------------------------------------------------- scripts

def is_ours(path: Path) -> bool:
    try:
        head = path.read_text("utf-8", "replace")[:2000]
    except OSError:
        return False
    return MARKER in head or LEGACY_MARKER in head


def _command(home: Path | None, *args: str) -> str:
    opts = ["--home", str(home)] if home is not None else []
    return " ".join(shlex.quote(a) for a in [sys.executable, "-m", "token_exchange.cli.bd", *opts, *args])


def event_script(event: str, repo: Path, home: Path | None, closing_env: str) -> str:
    """``on_close`` / ``on_update``: pay (or reverse) at once from the issue bd hands over."""
    return f"""#!/bin/sh
{MARKER}: on_{event} (written by `tx-bd install-hook`; rerun it to update).
# bd runs this as `on_{event} <issue-id> {event}` with the issue JSON on stdin, asynchronously and
# with a short timeout, and may cut it off when it exits: `tx-bd sync` (cron, CI) pays what a hook
# missed. Paying is idempotent: one payment per close, whichever path sees it first.
[ "${{{closing_env}:-}}" = 1 ] && exit 0  # `tx-bd close` is paying this one itself
cd {shlex.quote(str(repo))} || exit 0
exec {_command(home, "hook")} "$@"
"""


def pre_write_script(repo: Path, home: Path) -> str:
    """``pre_write``: refuse a claim by an agent below its reserve.  bd gives it only PATH: every path
    it needs is written here."""
    return f"""#!/bin/sh
{MARKER}: pre_write (written by `tx-bd install-hook --pre-write`; rerun it to update).
# bd runs this before each write with {{"version", "operation", "repository"}} on stdin and only PATH in
# the environment; it must print {{"allow": true|false, "reason": ...}}. `tx-bd pre-write` always
# answers, and refuses only a claim by an agent whose balance is below its reserve.
cd {shlex.quote(str(repo))} 2>/dev/null || true
exec {_command(home, "pre-write")}
"""


def write_script(path: Path, text: str) -> None:
    """Atomically, executable, never through a symlink someone planted at the hook's path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        raise UserError(f"{path} is a symbolic link; remove it first")
    tmp = path.with_name(f".{path.name}.tx-tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o755)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- pre_write

class PreWriteRequest(NamedTuple):
    operation: str
    root: str
    beads_dir: str


def parse_pre_write(text: str) -> PreWriteRequest:
    """bd's request, checked (``PreWriteRequest`` in internal/hooks/hooks.go); UserError if it is not one."""
    if len(text) > MAX_PRE_WRITE_REQUEST:
        raise UserError(f"pre_write request is larger than {MAX_PRE_WRITE_REQUEST} bytes")
    try:
        data: Any = json.loads(text)
    except (ValueError, RecursionError):
        raise UserError("pre_write request is not JSON") from None
    if not isinstance(data, dict):
        raise UserError("pre_write request is not a JSON object")
    version, operation, repo = data.get("version"), data.get("operation"), data.get("repository")
    if version != PRE_WRITE_VERSION or isinstance(version, bool):
        raise UserError(f"pre_write protocol version {one_line(str(version), 20)} (this tx-bd speaks"
                        f" {PRE_WRITE_VERSION})")
    if not isinstance(operation, str) or not operation or len(operation) > 200:
        raise UserError("pre_write request has no operation")
    if not isinstance(repo, dict):
        repo = {}
    root, beads_dir = repo.get("root"), repo.get("beads_dir")
    return PreWriteRequest(operation, root if isinstance(root, str) else "",
                           beads_dir if isinstance(beads_dir, str) else "")


def is_claim(operation: str) -> bool:
    """Whether an operation takes new work (only those are gated; anything else is always allowed)."""
    return any(w in operation.lower() for w in CLAIM_WORDS)


def answer(allow: bool, reason: str = "") -> str:
    """The one JSON object bd accepts (``PreWriteResponse``: unknown fields are refused)."""
    d: dict[str, Any] = {"allow": allow}
    if reason:
        d["reason"] = one_line(reason, 500)
    return json.dumps(d, ensure_ascii=True)
