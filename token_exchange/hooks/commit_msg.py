"""commit-msg: add a ``Reward-Id:`` trailer unless the message has one, and preview what the commit earns.

It also records, for post-commit, what only this moment shows: HEAD before the commit (an amend
replaces it rather than building on it), the commits of a ``merge --squash`` (``SQUASH_MSG``) and a
cherry-pick being concluded (``CHERRY_PICK_HEAD``).  The author is not final yet: git exports the
author it will use as ``GIT_AUTHOR_EMAIL`` (``--author`` included), else ``git var GIT_AUTHOR_IDENT``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from token_exchange import git
from token_exchange.hooks import HookError, say
from token_exchange.hooks.context import GitConfig, Repo, locate, open_exchange, project, save_pending
from token_exchange.rules.reward_ids import TRAILER_KEY, new_reward_id, trailer_ids
from token_exchange.rules.rewards import clean_message

SQUASHED = r"(?m)^commit ([0-9a-f]{40,64})$"  # compiled only during a `merge --squash`


def run(args: list[str]) -> None:
    paths = [a for a in args if a != "--msg-file"]
    if not paths:
        raise HookError("no message file given")
    path = Path(paths[-1])
    repo = locate()
    config = GitConfig()
    try:
        raw = path.read_bytes().decode("utf-8", "surrogateescape")
    except OSError as e:
        raise HookError(f"cannot read {path}: {e.strerror}") from None
    char = config.get("core.commentchar").strip()
    message = clean_message(raw, char[:1] if char and char != "auto" else "#")
    if not message:
        return  # git aborts an empty message; adding a trailer would make it commit
    ids = trailer_ids(message)
    rid = "" if ids else new_reward_id()
    # For post-commit: the situation, and the git settings read here (for the commit that carries this id).
    save_pending(repo, {**situation(repo), "reward_id": ids[0] if ids else rid, "git_config": config.values()})
    if rid:
        git.run("interpret-trailers", "--in-place", "--if-exists", "doNothing", "--trailer", f"{TRAILER_KEY}: {rid}",
                str(path))
        ids = [rid]
    preview(repo, config, message, ids)


def situation(repo: Repo) -> dict[str, object]:
    """What post-commit needs to know about the commit being made (see the module docstring)."""
    record: dict[str, object] = {"head": repo.head, "head_parents": list(repo.head_parents)}
    squash = _read(repo.git_dir / "SQUASH_MSG", 4 << 20)
    if squash:
        record["squash"] = re.findall(SQUASHED, squash)[:1000]
    pick = _read(repo.git_dir / "CHERRY_PICK_HEAD", 200).strip()
    if pick and re.fullmatch(r"[0-9a-f]{40,64}", pick):
        record["cherry_pick"] = pick
    return record


def _read(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def author_email(config: GitConfig, top: Path) -> str:
    email = os.environ.get("GIT_AUTHOR_EMAIL")
    if email is None:
        m = re.search(r"<([^<>]*)>", git.out("var", "GIT_AUTHOR_IDENT", check=False))
        email = m.group(1) if m else ""
    if email and ((top / ".mailmap").exists() or config.get("mailmap.file") or config.get("mailmap.blob")):
        m = re.search(r"<([^<>]*)>\s*$", git.out("check-mailmap", f"<{email}>", check=False))
        email = m.group(1) if m else email
    return email


def preview(repo: Repo, config: GitConfig, message: str, ids: list[str]) -> None:
    from token_exchange.rules.engine import CommitFacts

    ex = open_exchange(repo)
    try:
        parents = 2 if (repo.git_dir / "MERGE_HEAD").exists() else 1
        facts = CommitFacts(author_email(config, repo.top), message, project(repo, ex.cfg, config), parents,
                            ids[0], tuple(ids[1:]))
        say(ex.preview_commit(facts).preview())
    finally:
        ex.close()
