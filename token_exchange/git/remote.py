"""Talking to a remote: fetch and push without force, with per-ref results.

``tx sync`` and ``tx checkpoint --push`` need to know, ref by ref, whether a push was rejected (someone
else pushed first: fetch, merge, try again) or failed for good.  ``git push --porcelain`` states it in
one line per ref (``<flag>\\t<from>:<to>\\t<summary>``, flag ``!`` for rejected), and a fetch that would
move a ref backwards says ``[rejected]`` and exits non-zero.  That is all the parsing there is, so it
lives here with plain git rather than behind GitPython (see README: why GitPython is not a dependency).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from token_exchange import git
from token_exchange.errors import UserError

REMOTE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
RETRY = ("fetch first", "non-fast-forward", "stale info", "cannot lock", "failed to update", "incorrect old value",
         "failed to lock")


class Pushed(NamedTuple):
    ok: bool
    rejected: bool  # the remote moved on (fetch, merge and push again); else a real failure when not ok
    summary: str


def check_remote(name: str) -> str:
    if not REMOTE_RE.fullmatch(name) or ".." in name or name.endswith(".lock"):
        raise UserError(f"invalid remote name {name[:40]!r}")
    return name


def fetch(common_dir: Path, remote: str, refspec: str) -> bool:
    """Fetch ``refspec`` (forced only where it says ``+``); False when the remote does not have the ref.
    A fetch that would move a ref backwards raises UserError naming it as non-fast-forward."""
    check_remote(remote)
    proc = git.run("fetch", "--no-tags", "--no-write-fetch-head", remote, refspec, repo=common_dir,
                   check=False)
    if proc.returncode == 0:
        return True
    err = proc.stderr.decode("utf-8", "replace")
    if "couldn't find remote ref" in err:
        return False
    if "[rejected]" in err or "non-fast-forward" in err:
        raise UserError(f"git fetch {remote}: {refspec.lstrip('+').split(':')[-1]} was rejected (non-fast-forward)")
    raise UserError(f"git fetch {remote} failed: {git.last_line(proc.stderr)}")


def push(common_dir: Path, remote: str, refspec: str) -> Pushed:
    """Push ``refspec`` without force; tell a rejection (retry after a merge) from a failure."""
    check_remote(remote)
    proc = git.run("push", "--porcelain", "--no-verify", remote, refspec, repo=common_dir, check=False)
    out = git.decode(proc.stdout)
    rows = [line.split("\t") for line in out.splitlines() if line.count("\t") >= 2]
    if proc.returncode == 0 and rows and all(r[0] != "!" for r in rows):
        return Pushed(True, False, "")
    text = f"{out}\n{proc.stderr.decode('utf-8', 'replace')}"
    rejected = any(r[0] == "!" for r in rows) and any(word in text for word in RETRY)
    summary = next((r[2].strip() for r in rows if r[0] == "!"), "") or git.last_line(proc.stderr) or "push failed"
    return Pushed(False, rejected, " ".join(summary.split())[:300])
