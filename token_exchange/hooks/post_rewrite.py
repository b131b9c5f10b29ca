"""post-rewrite (``amend`` or ``rebase``): git's own list of which commit became which.

post-commit already links most rewrites (see its docstring); this hook closes the gaps it cannot see
(an amend with neither commit-msg nor a reflog): for each rewritten pair whose old commit was paid and
whose new commit is not known to the ledger, the new commit's ids are linked to that payment, so a
later rewrite of it still finds it.  A pair whose old commit is still an ancestor of the new one is
not a rewrite (a new commit made at an ``edit`` stop) and is ignored.
"""

from __future__ import annotations

import os
import sys

from token_exchange import git
from token_exchange.hooks import HookError
from token_exchange.hooks.context import GitConfig, locate, open_exchange, project

MAX_PAIRS = 10_000


def run(args: list[str]) -> None:
    from token_exchange.rules.engine import plan_commit
    from token_exchange.services.changes import facts_for, ids_of
    from token_exchange.services.exchange import IndexView, commit_txns

    kind = args[0] if args else os.environ.get("PRE_COMMIT_REWRITE_COMMAND", "")  # pre-commit passes no stdin
    if kind not in ("amend", "rebase"):
        raise HookError("expected amend or rebase")
    pairs = []
    text = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read(MAX_PAIRS * 200)
    for line in text.splitlines()[:MAX_PAIRS]:
        parts = line.split()
        if len(parts) >= 2 and parts[0] != parts[1]:
            pairs.append((parts[0], parts[1]))
    if not pairs and kind == "amend":
        pairs = _amend_from_reflog()
    if not pairs:
        return
    repo = locate()
    ex = open_exchange(repo)
    try:
        proj = project(repo, ex.cfg, GitConfig())
        news = {c.sha: c for c in git.commits(*{n for _, n in pairs}, no_walk=True)}
        rewrites = [(o, n) for o, n in pairs if n in news and not git.is_ancestor(o, n)]
        with ex.ledger.locked() as idx:
            view = IndexView(idx, provisional=ex.cfg.on_merge)
            for old, new in rewrites:
                facts = facts_for([news[new]], proj, origins={new: ids_of([old])})[0]
                plan = plan_commit(ex.cfg, facts, view)
                txns = commit_txns(plan, idx) if plan.already else []  # links only
                if txns:
                    ex.ledger.append_many(txns)
    finally:
        ex.close()


def _amend_from_reflog() -> list[tuple[str, str]]:
    """Without git's list (under pre-commit): the commit the amend replaced, from HEAD's reflog."""
    rows = git.out("log", "-g", "-2", "--format=%H %gs", "HEAD", check=False).splitlines()
    if len(rows) == 2 and " commit (amend)" in f" {rows[0].split(' ', 1)[-1]}":
        return [(rows[1].split()[0], rows[0].split()[0])]
    return []
