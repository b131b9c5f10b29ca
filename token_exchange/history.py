"""The commits of a pull request, read from git: ``merge-base(base, head)..head``, oldest first.

Only ``subprocess`` and ``os``: ``tx report`` starts git's walk of the range (the slow part) before it
imports the rules and renderers, which then load while git works.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from collections.abc import Sequence
from typing import NamedTuple

from token_exchange.errors import ConfigError, UserError

MAX_CONFIG_BYTES = 1_000_000


class RawCommit(NamedTuple):
    sha: str
    parents: tuple[str, ...]
    email: str
    name: str
    message: str


def run_git(repo: Path, *args: str, check: bool = True) -> bytes:
    try:
        proc = subprocess.run(["git", *args], cwd=repo, capture_output=True)
    except FileNotFoundError:
        raise UserError("git is not installed") from None
    if check and proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise UserError(f"git {args[0]} failed: {err[-1] if err else 'exit ' + str(proc.returncode)}")
    return proc.stdout


def merge_bases(base: str, head: str, proc: subprocess.CompletedProcess[bytes]) -> list[str]:
    bases = proc.stdout.decode().split() if proc.returncode == 0 else []
    if not bases:
        raise UserError(f"{base[:40]} and {head[:40]} have no merge base (shallow clone? use fetch-depth: 0)")
    return bases  # `git merge-base` (without --all) prints the first


def range_commits(repo: Path, base: str, head: str, base_sha: str, head_sha: str) -> tuple[str, list[RawCommit]]:
    """The merge base and the commits of merge-base..head, oldest first (see ``start_range``)."""
    return finish_range(repo, base, head, start_range(repo, base_sha, head_sha))


class Started(NamedTuple):
    log: subprocess.Popen[bytes]
    tok: str
    base_sha: str
    head_sha: str


def start_range(repo: Path, base_sha: str, head_sha: str) -> Started:
    """Start ``git log --boundary base..head``; the caller works meanwhile, ``finish_range`` collects it.

    The report's range is merge-base(base, head)..head.  Every merge base is a boundary commit of
    base..head (its child towards head is in the range), and every boundary commit is a common ancestor,
    so one boundary commit B means B is the only merge base -- and then the two ranges are equal (a
    commit reachable from both tips is a common ancestor, so an ancestor of B).  That is the usual pull
    request, read with one git process.  Otherwise ``finish_range`` asks ``git merge-base --all`` and,
    with several merge bases (criss-cross merges), reads the log again from the first, as
    ``git merge-base`` picks it.
    """
    tok = os.urandom(12).hex()  # a random record boundary per run: a message cannot forge one
    try:
        log = subprocess.Popen(log_args(tok, f"{base_sha}..{head_sha}", boundary=True), cwd=repo,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise UserError("git is not installed") from None
    return Started(log, tok, base_sha, head_sha)


def finish_range(repo: Path, base: str, head: str, started: Started) -> tuple[str, list[RawCommit]]:
    data, _err = started.log.communicate()
    if started.log.returncode == 0:
        commits, boundary = parse_log_boundary(data, started.tok)
        if len(boundary) == 1:
            return boundary[0], commits
    else:
        commits = []
    bases = merge_bases(base, head, subprocess.run(["git", "merge-base", "--all", started.base_sha,
                                                    started.head_sha], cwd=repo, capture_output=True))
    if len(bases) > 1 or started.log.returncode != 0:
        return bases[0], read_commits(repo, bases[0], started.head_sha)
    return bases[0], commits


def log_args(tok: str, rng: str, boundary: bool = False) -> list[str]:
    """``git log`` of a range, oldest first, as NUL-separated records (``%m``: "-" marks a boundary)."""
    return ["git", "-c", "log.showSignature=false", "log", "--no-color", "--topo-order", "--reverse",
            "--no-show-signature", *(["--boundary"] if boundary else []),
            f"--format=%x00{tok}%m%x00%H%x00%P%x00%aE%x00%aN%x00%B", rng, "--"]


def read_commits(repo: Path, merge_base: str, head: str) -> list[RawCommit]:
    """Every commit in merge_base..head, oldest first, with one ``git log``."""
    tok = os.urandom(12).hex()
    return parse_log(run_git(repo, *log_args(tok, f"{merge_base}..{head}")[1:]), tok)


def parse_log(data: bytes, tok: str) -> list[RawCommit]:
    """The commits of ``log_args`` output."""
    return parse_log_boundary(data, tok)[0]


def parse_log_boundary(data: bytes, tok: str) -> tuple[list[RawCommit], list[str]]:
    """The commits of ``log_args`` output, and the SHAs of its boundary commits apart.

    Decoded once (\\ufffd for invalid UTF-8, as decoding field by field would: NUL is valid UTF-8, so
    no invalid sequence spans two fields)."""
    out: list[RawCommit] = []
    edge: list[str] = []
    new = tuple.__new__  # RawCommit's own __new__ is a Python function: 10,000 calls cost ~5 ms
    for rec in data.decode("utf-8", "replace").split("\x00" + tok)[1:]:
        parts = rec.split("\x00", 5)
        if len(parts) != 6:  # pragma: no cover - git always prints every field
            continue
        mark, sha, parents, email, name, body = parts
        if mark == "-":
            edge.append(sha)
            continue
        out.append(new(RawCommit, (sha, tuple(parents.split()), email, name,
                                   body[:-1] if body.endswith("\n") else body)))
    return out, edge


def config_text_at(repo: Path, rev: str, path: str) -> str | None:
    """The config file's text at a revision, or None when the file is not there."""
    return config_texts_at(repo, [rev], path)[0]


def config_texts_at(repo: Path, revs: Sequence[str], path: str) -> list[str | None]:
    """The config file's text at each revision (None where it is not a file there), with one git process."""
    if "\n" in path or "\r" in path:
        raise UserError(f"invalid config path {path[:60]!r}")
    proc = subprocess.run(["git", "cat-file", "--batch"], cwd=repo, capture_output=True,
                          input="".join(f"{rev}:{path}\n" for rev in revs).encode("utf-8", "surrogateescape"))
    data, pos, out = proc.stdout, 0, []
    for rev in revs:
        end = data.find(b"\n", pos)
        header = data[pos:end].split() if end >= 0 else []
        if len(header) != 3 or not header[2].isdigit():  # "<rev:path> missing" (or git failed)
            out.append(None)
            pos = end + 1 if end >= 0 else len(data)
            continue
        size = int(header[2])
        body, pos = data[end + 1:end + 1 + size], end + 1 + size + 1
        if header[1] != b"blob":
            out.append(None)
            continue
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{rev[:12]}:{path}: larger than {MAX_CONFIG_BYTES} bytes")
        out.append(body.decode("utf-8", "replace"))
    return out


def rev(repo: Path, ref: str, what: str) -> str:
    if not ref or ref.startswith("-") or len(ref) > 256:
        raise UserError(f"invalid revision {ref[:40]!r}")
    proc = subprocess.run(["git", "rev-parse", "--verify", "--end-of-options", f"{ref}^{{commit}}"],
                          cwd=repo, capture_output=True)
    if proc.returncode != 0:
        raise UserError(f"{what} {ref[:60]!r} is not a commit in this repository "
                        "(in CI, check out with fetch-depth: 0)")
    return proc.stdout.decode().strip()


class Begun(NamedTuple):
    base_sha: str
    head_sha: str
    started: Started


def begin(repo: Path, base: str, head: str) -> Begun:
    """Resolve both tips and start the range's git processes (``finish_range`` collects them)."""
    base_sha, head_sha = rev(repo, base, "--base"), rev(repo, head, "--head")
    return Begun(base_sha, head_sha, start_range(repo, base_sha, head_sha))


def abandon(started: Started) -> None:
    """Stop the git process of a range nobody will read (an error came first)."""
    started.log.kill()
    started.log.communicate()
