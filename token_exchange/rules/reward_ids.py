"""Stable reward ids for commits: what makes amend, rebase and cherry-pick pay once.

Precedence: the ``Reward-Id:`` trailer the commit-msg hook adds (kept by amend,
rebase and cherry-pick, like Gerrit's Change-Id); else the commit's stable
patch-id (same change, same id, on any branch); else the commit SHA (merges,
empty commits).  A message may carry several trailers (a squash of paid
commits): all of them identify the commit.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

TRAILER_KEY = "Reward-Id"
TRAILER_RE = re.compile(r"^Reward-Id:[ \t]*(R[0-9a-f]{16,64})[ \t]*$", re.MULTILINE | re.IGNORECASE)


def trailer_ids(message: str) -> list[str]:
    """Reward-Id trailer values in order, without duplicates."""
    if "d:" not in message and "D:" not in message:
        return []  # no "Reward-Id:" in any case: skip the regex (a report reads thousands of messages)
    out: list[str] = []
    for value in TRAILER_RE.findall(message):
        value = "R" + value[1:].lower()
        if value not in out:
            out.append(value)
    return out


def new_reward_id() -> str:
    import secrets  # only the commit-msg hook needs it (4 ms of imports)

    return "R" + secrets.token_hex(20)


def reward_id(message: str, sha: str, patch_id: str | None) -> str:
    """The one id a commit is paid under (see module docstring)."""
    return reward_id_of(trailer_ids(message), sha, patch_id)


def reward_id_of(trailers: list[str], sha: str, patch_id: str | None) -> str:
    """``reward_id`` given the message's trailer ids."""
    if trailers:
        return trailers[0]
    if patch_id:
        return f"patch-{patch_id}"
    return f"sha-{sha}"


def patch_ids(repo: Path | str, shas: Iterable[str]) -> dict[str, str]:
    """Stable patch-ids of many commits with two processes, however many commits (merges get none)."""
    shas = list(shas)
    if not shas:
        return {}
    show = subprocess.Popen(["git", "-c", "core.quotePath=false", "show", "--no-color", "--no-ext-diff",
                             "--format=commit %H", "--patch", "--no-renames", "--stdin"],
                            cwd=repo, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    pid = subprocess.Popen(["git", "patch-id", "--stable"], cwd=repo, stdin=show.stdout,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert show.stdin is not None and show.stdout is not None
    show.stdout.close()
    show.stdin.write(("\n".join(shas) + "\n").encode())
    show.stdin.close()
    data, _ = pid.communicate()
    show.wait()
    out: dict[str, str] = {}
    for line in data.decode().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[1]] = parts[0]
    return out
