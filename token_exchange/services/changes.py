"""From git commits to the engine's facts: which change each commit is, under which ids.

Shared by every payer and previewer that starts from git (post-commit, ``tx catch-up``, ``tx report``,
``tx settle``), so they all derive the same ids from the same commit (``rules.reward_ids``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from token_exchange import git
from token_exchange.errors import clean_text
from token_exchange.rules.engine import CommitFacts, LedgerView
from token_exchange.rules.reward_ids import identity, needs_patch_id, patch_ref, sha_ref, trailer_ids

Copied = Callable[[str, list[str]], set[str]]  # (sha, trailers) -> the trailers only copied from its history


def copied_from_history(view: LedgerView, repo: Path | str | None) -> Copied:
    """Trailers a commit carries that the ledger shows paid for one of its own ancestors
    (``git commit -C HEAD`` on new work): not this change's identity."""

    def copied(sha: str, trailers: list[str]) -> set[str]:
        found: dict[str, str] = {}
        for t in trailers:
            for p in view.payments([t]):
                if p.sha and p.sha != sha:
                    found[t] = p.sha
                    break
        if not found:
            return set()
        ancestors = git.reachable(list(found.values()), sha, repo) if sha else set()
        return {t for t, paid_sha in found.items() if paid_sha in ancestors}

    return copied


def facts_for(commits: Sequence[git.Commit], project: str, repo: Path | str | None = None, *,
              copied: Copied | None = None, origins: dict[str, tuple[str, ...]] | None = None,
              patch_ids: dict[str, str] | None = None) -> list[CommitFacts]:
    """The engine's facts for each commit, with one batched patch-id run for those that need one."""
    project = clean_text(project, limit=200)
    messages = [clean_text(c.message, limit=65536) for c in commits]
    trailers = [trailer_ids(m) for m in messages]
    drop = [copied(c.sha, t) if copied and t else set() for c, t in zip(commits, trailers, strict=True)]
    want = [c.sha for c, t, d in zip(commits, trailers, drop, strict=True) if needs_patch_id(t, len(c.parents), d)]
    pids = dict(patch_ids or {})
    missing = [s for s in want if s not in pids]
    if missing:
        pids.update(git.patch_ids(missing, repo))
    out = []
    for c, message, t, d in zip(commits, messages, trailers, drop, strict=True):
        primary, aliases = identity(t, c.sha, pids.get(c.sha) if needs_patch_id(t, len(c.parents), d) else None, d)
        out.append(CommitFacts(c.email, message, project, len(c.parents), primary, aliases,
                               (origins or {}).get(c.sha, ()), c.sha, c.time * 1_000_000))
    return out


def ids_of(shas: Sequence[str], repo: Path | str | None = None) -> tuple[str, ...]:
    """Every id the given commits could have been paid under (their trailers, patch ids and SHAs)."""
    shas = [s for s in dict.fromkeys(shas) if s]
    if not shas:
        return ()
    found = git.commits(*shas, repo=repo, no_walk=True)
    ids: list[str] = []
    need_patch = []
    for c in found:
        trailers = trailer_ids(c.message)
        ids.extend(trailers)
        ids.append(sha_ref(c.sha))
        if needs_patch_id(trailers, len(c.parents)):
            need_patch.append(c.sha)
    ids.extend(patch_ref(p) for p in git.patch_ids(need_patch, repo).values())
    return tuple(dict.fromkeys(i for i in ids if i))
