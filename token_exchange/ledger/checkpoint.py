"""Checkpoints: the journal's head (position, last hash, count) recorded in git, pushed, verified by doctor.

The hash chain has no key, so by itself it only proves the journal is *consistent*: anyone who can
write ``ledger.toml`` can edit an amount and recompute every hash after it, or drop the last blocks.
A checkpoint pins what the journal held at a moment, somewhere the agent cannot rewrite: a commit on
the branch ``token-exchange/checkpoints`` of the repository that holds the home, pushed to the
remote, where the branch is protected (no force-push, no deletion).  Each checkpoint is a child of
the previous one, so the branch is the whole history of heads; ``tx doctor`` verifies every
checkpoint reachable from the local branch and from each remote-tracking copy
(``refs/remotes/REMOTE/token-exchange/checkpoints``, refreshed by ``git fetch`` or
``tx doctor --remote REMOTE``) with ``Journal.verify_position``: for the TOML journal, the block that
ends at the recorded byte must still carry the recorded hash (an edit before it changes the chain,
a deletion shortens the file); for git notes, the recorded notes commit must still be an ancestor.

What it cannot see: changes after the newest pushed checkpoint, and anyone who can force-push the
remote branch.  docs/ledger.md has the threat model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from token_exchange.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from token_exchange.ledger.backends.notes import Repo
    from token_exchange.ledger.ledger import Ledger
    from token_exchange.ledger.txn import Txn

BRANCH = "token-exchange/checkpoints"
REF = f"refs/heads/{BRANCH}"
FILE = "checkpoint.json"
IDENT = {"GIT_AUTHOR_NAME": "token-exchange", "GIT_AUTHOR_EMAIL": "token-exchange@localhost",
         "GIT_COMMITTER_NAME": "token-exchange", "GIT_COMMITTER_EMAIL": "token-exchange@localhost"}


def _repo(home: Path) -> Repo | None:
    from token_exchange.ledger.backends.notes import resolve_repo

    dotgit = home.parent / ".git"
    if not (dotgit / "HEAD").is_file():  # only the repository that holds the home (never the cwd's)
        return None
    try:
        return resolve_repo(home)
    except UserError:
        return None


def _home(ledger: Ledger) -> Path:
    return ledger.index_path.parent


def record(ledger: Ledger, push: str | None = None) -> dict[str, Any]:
    """Write a checkpoint of the journal's committed head (under the ledger lock) and optionally push it."""
    home = _home(ledger)
    repo = _repo(home)
    if repo is None:
        raise UserError(f"checkpoints live in git: {home} is not the .exchange/ of a git repository")
    with ledger.locked() as idx:
        head = {"position": idx.meta("position") or "", "last_hash": idx.meta("last_hash") or "",
                "count": idx.count(), "backend": ledger.journal.name, "at": idx.last_ts()}
    parent = repo.out("rev-parse", "--verify", "-q", REF + "^{commit}", check=False)
    if parent:
        last = _read(repo, parent)
        if last is not None and (last.get("position"), last.get("last_hash")) == (head["position"], head["last_hash"]):
            result = {**head, "commit": parent, "created": False}
            return _pushed(repo, result, push)
    blob = repo.run("hash-object", "-w", "--stdin", input=(json.dumps(head, sort_keys=True) + "\n").encode()
                    ).stdout.decode().strip()
    tree = repo.run("mktree", input=f"100644 blob {blob}\t{FILE}\n".encode()).stdout.decode().strip()
    args = ["commit-tree", tree, "-m", f"token-exchange checkpoint: {head['count']} transactions"]
    if parent:
        args[2:2] = ["-p", parent]
    commit = repo.run(*args, env=IDENT).stdout.decode().strip()
    repo.run("update-ref", "-m", "token-exchange checkpoint", REF, commit, parent or "0" * len(commit))
    return _pushed(repo, {**head, "commit": commit, "created": True}, push)


def _pushed(repo: Repo, result: dict[str, Any], push: str | None) -> dict[str, Any]:
    if push is None:
        return result
    from token_exchange.git import remote as remotes

    outcome = remotes.push(repo.common_dir, remotes.check_remote(push), f"{REF}:{REF}")
    if not outcome.ok:
        raise UserError(f"git push {push} {BRANCH} failed (never forced: a rejected push means the remote "
                        f"history differs; run `tx doctor --remote {push}`): {outcome.summary}")
    repo.run("update-ref", f"refs/remotes/{push}/{BRANCH}", result["commit"], check=False)
    return {**result, "pushed": push}


def _read(repo: Repo, commit: str) -> dict[str, Any] | None:
    proc = repo.run("cat-file", "blob", f"{commit}:{FILE}", check=False)
    if proc.returncode != 0:
        return None
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def verify(ledger: Ledger, txns: list[Txn], problems: list[str], remote: str | None = None) -> int:
    """Check the journal against every checkpoint in git; appends problems; returns how many were checked."""
    home = _home(ledger)
    repo = _repo(home)
    if repo is None:
        return 0
    if remote is not None:
        fetch(repo, remote, problems)
    refs = [REF] + repo.out("for-each-ref", "--format=%(refname)", "refs/remotes/", check=False).splitlines()
    refs = [r for r in refs if r == REF or r.endswith("/" + BRANCH)]
    seen: set[str] = set()
    checked = 0
    for ref in refs:
        tip = repo.out("rev-parse", "--verify", "-q", ref + "^{commit}", check=False)
        if not tip:
            continue
        for commit in repo.out("rev-list", "--first-parent", tip, check=False).splitlines():
            if commit in seen:
                continue
            seen.add(commit)
            cp = _read(repo, commit)
            if cp is None or cp.get("backend") != ledger.journal.name:
                continue
            checked += 1
            position, last_hash = str(cp.get("position", "")), str(cp.get("last_hash", ""))
            if not position or position in ("0",):
                continue
            why = ledger.journal.verify_position(position, last_hash)
            if why:
                short = ref.removeprefix("refs/heads/").removeprefix("refs/remotes/")
                problems.append(f"checkpoint {commit[:12]} ({short}: {cp.get('count')} transactions up to "
                                f"{cp.get('at', '?')}) no longer holds: {why}")
                break  # older checkpoints of this ref say the same
    return checked


def fetch(repo: Repo, remote: str, problems: list[str]) -> None:
    """Refresh the remote-tracking copy without force: a rewritten remote history is itself a problem."""
    from token_exchange.git import remote as remotes

    tracking = f"refs/remotes/{remote}/{BRANCH}"
    try:
        remotes.fetch(repo.common_dir, remotes.check_remote(remote), f"{REF}:{tracking}")  # never forced
    except UserError as e:
        if "non-fast-forward" not in str(e):
            raise
        problems.append(f"the checkpoints on {remote} were rewritten (not a fast-forward of what was fetched "
                        "before): someone force-pushed them")


__all__ = ["BRANCH", "REF", "fetch", "record", "verify"]
