"""What a report reads from git: the range ``merge-base(base, head)..head`` oldest first in git's
``--topo-order``, with the ``.mailmap`` pinned to the base (a pull request cannot bring its own; its
config is read at the base by ``services.revision``)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from token_exchange import git


class Range(NamedTuple):
    base: str
    head: str
    merge_base: str
    commits: list[git.Commit]


def read_range(repo: Path, base: str, head: str, *, mailmap_rev: str | None = None) -> Range:
    """The commits of ``merge-base(base, head)..head``; author emails mapped by the ``.mailmap`` of
    ``mailmap_rev`` (default: the base) and nothing else."""
    base_sha = git.resolve(base, repo, "--base")
    head_sha = git.resolve(head, repo, "--head")
    mb = git.merge_base(base_sha, head_sha, repo)
    commits = git.commits(f"{mb}..{head_sha}", repo=repo, topo=True, reverse=True, mailmap_rev=mailmap_rev or base_sha)
    return Range(base_sha, head_sha, mb, commits)
