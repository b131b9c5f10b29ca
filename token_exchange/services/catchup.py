"""``tx catch-up``: pay commits whose hooks did not pay them (skipped, ``--no-verify`` without a
post-commit, the ledger busy), once each, through the same engine and the same ids as the hooks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from token_exchange import git
from token_exchange.errors import UserError
from token_exchange.services.changes import copied_from_history, facts_for
from token_exchange.services.exchange import CommitResult, Exchange, IndexView

DEFAULT_MAX = 500
QUEUE = "token-exchange/unpaid"  # under the repository's common git dir: commits a hook could not pay
MAX_QUEUE = 1 << 20


# --- the queue of commits a hook could not pay (ledger busy) ---------------------------------------
def queue_unpaid(common_dir: Path, sha: str) -> None:
    path = common_dir / QUEUE
    path.parent.mkdir(exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(sha + "\n")


def unpaid(common_dir: Path) -> list[str]:
    """Queued SHAs (oldest first, once each)."""
    try:
        fd = os.open(common_dir / QUEUE, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as f:
        text = f.read(MAX_QUEUE).decode("ascii", "replace")
    return [s for s in dict.fromkeys(text.split()) if len(s) in (40, 64)]


def clear_unpaid(common_dir: Path, done: set[str]) -> None:
    left = [s for s in unpaid(common_dir) if s not in done]
    path = common_dir / QUEUE
    if not left:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(f".unpaid.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(left) + "\n")
    os.replace(tmp, path)




def pay_commits(ex: Exchange, commits: Sequence[git.Commit], project: str,
                repo: Path | str | None) -> list[CommitResult]:
    """Pay ``commits`` oldest first, each once per change (already paid ones pay nothing new)."""
    if not commits:
        return []
    view = IndexView(ex.ledger.fresh(), provisional=ex.cfg.on_merge)
    facts = facts_for(commits, project, repo, copied=copied_from_history(view, repo))
    return [ex.pay_commit(f) for f in facts]


def catch_up(ex: Exchange, repo: Path, rev: str = "HEAD", *, since: str | None = None,
             max_commits: int = DEFAULT_MAX) -> list[CommitResult]:
    """Walk ``rev``'s history (newest ``max_commits``; by default only what came after HEAD at
    ``tx hooks install``, else what was committed since the ledger's first transaction, or since
    ``since``) and pay every commit not paid yet, oldest first.  Also drains the hooks' queue of
    commits the ledger was too busy to pay."""
    if since is not None and (not since.isprintable() or len(since) > 100):
        raise UserError(f"--since: {since[:40]!r} is not a date git understands")
    tip = git.resolve(rev, repo, "revision")
    where = git.where(repo)
    start = _start(where, tip, repo) if since is None else ""
    if since is None and not start:
        first = next(iter(ex.ledger.fresh().iter_txns()), None)
        since = first.ts if first is not None else None
    found = git.commits(f"{start}..{tip}" if start else tip, repo=repo, max_count=max_commits, since=since)
    found.reverse()
    queued: list[str] = unpaid(where.common_dir) if where else []
    if queued:
        live = git.reachable(queued, tip, repo)
        have = {c.sha for c in found}
        found = git.commits(*[s for s in queued if s in live and s not in have], repo=repo, no_walk=True) + found
    results = pay_commits(ex, found, git.project_name(repo, ex.cfg.project), repo)
    if queued and where:
        clear_unpaid(where.common_dir, set(queued))
    return results


def _start(where: git.Where | None, tip: str, repo: Path) -> str:
    """HEAD when the hooks were installed (see ``hooks.install``), if it is in ``tip``'s history."""
    if where is None:
        return ""
    try:
        start = (where.common_dir / "token-exchange" / "start").read_text("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return start if len(start) in (40, 64) and git.is_ancestor(start, tip, repo) else ""
