"""What a report reads from git: the range ``merge-base(base, head)..head`` oldest first in git's
``--topo-order``, and the config at given revisions, with everything that changes pricing pinned to
the base (a pull request cannot bring its own ``.mailmap`` or config)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from token_exchange import git
from token_exchange.errors import ConfigError, UserError

MAX_CONFIG_BYTES = 1_000_000


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
    with tempfile.TemporaryDirectory(prefix="tx-report-") as empty:
        commits = pinned_commits(repo, f"{mb}..{head_sha}", mailmap_rev or base_sha, empty)
    return Range(base_sha, head_sha, mb, commits)


def pinned_commits(repo: Path, rng: str, mailmap_rev: str, empty_dir: str) -> list[git.Commit]:
    """``git log`` of ``rng`` with only ``mailmap_rev:.mailmap`` applied: git also reads ``.mailmap``
    from the top of the work tree (the pull request's checkout), so point it at an empty work tree."""
    token = os.urandom(8).hex()  # a record separator no message can forge
    proc = git.run("--work-tree", empty_dir, "-c", "mailmap.file=", "-c", f"mailmap.blob={mailmap_rev}:.mailmap",
                   "-c", "log.showSignature=false", "log", "--no-color", "--topo-order", "--reverse",
                   f"--format=%x01{token}{git.LOG_FORMAT}", "--end-of-options", rng, "--", repo=repo, check=False)
    if proc.returncode != 0:
        raise UserError(f"git log {rng[:60]} failed: {git.last_line(proc.stderr)}")
    return git.parse_log(proc.stdout, token)


def config_texts_at(repo: Path, revs: Sequence[str], path: str) -> list[str | None]:
    """The config file's text at each revision (None where it is not a file there), one git process."""
    if any(c in path for c in "\n\r\0"):
        raise UserError(f"invalid config path {path[:60]!r}")
    try:
        return git.blobs_at(revs, path, repo, MAX_CONFIG_BYTES)
    except UserError as e:
        raise ConfigError(str(e)) from None
