"""Which change a commit is: the ids that make amend, rebase and cherry-pick pay once.

A change is known by its ``Reward-Id:`` trailer (added by the commit-msg hook and kept by amend,
rebase and cherry-pick, like Gerrit's Change-Id), else by its stable patch-id (same diff, same id on
any branch), else by its SHA (merges, empty commits).  A trailer that the commit only *copied* from a
commit still in its own history (``git commit -C HEAD`` on new work) is not its identity: the caller,
which can ask git and the ledger, names such trailers in ``copied``.
"""

from __future__ import annotations

import re
from collections.abc import Collection

TRAILER_KEY = "Reward-Id"
TRAILER_RE = re.compile(r"^Reward-Id:[ \t]*(R[0-9a-f]{16,64})[ \t]*$", re.MULTILINE | re.IGNORECASE)


def trailer_ids(message: str) -> list[str]:
    """Reward-Id trailer values in order, without duplicates (lower-cased hex)."""
    if "d:" not in message and "D:" not in message:
        return []  # no "Reward-Id:" in any case (a report reads thousands of messages)
    out: list[str] = []
    for value in TRAILER_RE.findall(message):
        value = "R" + value[1:].lower()
        if value not in out:
            out.append(value)
    return out


def new_reward_id() -> str:
    import os

    return "R" + os.urandom(20).hex()


def patch_ref(patch_id: str | None) -> str:
    return f"patch-{patch_id}" if patch_id else ""


def sha_ref(sha: str) -> str:
    return f"sha-{sha}" if sha else ""


def identity(trailers: list[str], sha: str, patch_id: str | None,
             copied: Collection[str] = ()) -> tuple[str, tuple[str, ...]]:
    """(the change's id, its other ids): its own first trailer, else its patch id, else its sha.

    The other ids are its further own trailers and its sha.  The patch id is only computed (by the
    caller) and used for a commit without an own trailer, so every payer and the report derive the
    same ids from the same commit.
    """
    own = [t for t in trailers if t not in copied]
    primary = own[0] if own else (patch_ref(patch_id) or sha_ref(sha))
    others = [*own[1:], sha_ref(sha)]
    return primary, tuple(i for i in dict.fromkeys(others) if i and i != primary)


def needs_patch_id(trailers: list[str], parents: int, copied: Collection[str] = ()) -> bool:
    """Whether ``identity`` will want the commit's patch id (no own trailer; merges have none)."""
    return parents <= 1 and not [t for t in trailers if t not in copied]
