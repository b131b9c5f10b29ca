"""The commits of a pull request, read from git: ``merge-base(base, head)..head``, oldest first.

``tx report`` starts git's walk of the range (the slow part) first thing, with ``os.posix_spawnp``
(``start_log``: this module imports nothing heavy), then imports the rules and renderers while git works.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from pathlib import Path

from token_exchange.errors import ConfigError, UserError

MAX_CONFIG_BYTES = 1_000_000


class RawCommit(NamedTuple):
    sha: str
    parents: tuple[str, ...]
    email: str
    name: str
    message: str


def merge_bases(base: str, head: str, proc: subprocess.CompletedProcess[bytes]) -> list[str]:
    bases = proc.stdout.decode().split() if proc.returncode == 0 else []
    if not bases:
        raise UserError(f"{base[:40]} and {head[:40]} have no merge base (shallow clone? use fetch-depth: 0)")
    return bases  # `git merge-base` (without --all) prints the first


class GitOutput:
    """A git process whose whole stdout we want (stderr discarded), drained by a thread as git writes it:
    ``os.posix_spawnp``, not ``subprocess`` (whose import costs more than starting git)."""

    def __init__(self, args: list[str]) -> None:
        import threading

        r, w = os.pipe()
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            self.pid = os.posix_spawnp("git", args, os.environ, file_actions=[
                (os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_DUP2, null, 2), (os.POSIX_SPAWN_CLOSE, r)])
        except FileNotFoundError:
            os.close(r)
            raise UserError("git is not installed") from None
        finally:
            os.close(w)
            os.close(null)
        import queue

        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._ended = False
        self._reader = threading.Thread(target=self._drain, args=(r,), daemon=True)
        self._reader.start()

    def _drain(self, fd: int) -> None:
        try:
            while chunk := os.read(fd, 1 << 20):
                self._queue.put(chunk)
        finally:
            os.close(fd)
            self._queue.put(None)

    def chunks(self) -> Iterator[bytes]:
        """stdout as git writes it (read once; nothing more after the end)."""
        while not self._ended:
            chunk = self._queue.get()
            if chunk is None:
                self._ended = True
                return
            yield chunk

    def wait(self) -> int:
        """The exit status once git is done (its output read or not)."""
        for _ in self.chunks():
            pass
        self._reader.join()
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)

    def result(self) -> tuple[int, bytes]:
        """(exit status, stdout) once git is done."""
        data = b"".join(self.chunks())
        return self.wait(), data

    def kill(self) -> None:
        import signal

        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.wait()


class Started(NamedTuple):
    log: GitOutput
    tok: str
    base: str  # the revisions as given: the log runs before they are resolved
    head: str


def start_log(repo: Path | str, base: str, head: str) -> Started:
    """Start ``git log --boundary BASE..HEAD`` now, newest first; ``finish_range`` collects it.

    The report's range is merge-base(base, head)..head.  Every merge base is a boundary commit of
    base..head (its child towards head is in the range), and every boundary commit is a common ancestor,
    so one boundary commit B means B is the only merge base -- and then the two ranges are equal (a
    commit reachable from both tips is a common ancestor, so an ancestor of B).  That is the usual pull
    request, read with one git process.  Otherwise ``finish_range`` asks ``git merge-base --all`` and,
    with several merge bases (criss-cross merges), reads the log again from the first, as
    ``git merge-base`` picks it.  The revisions are checked (``rev``) while the log runs; a log that
    fails is diagnosed by them.

    Git's default order streams from the first commit (``--topo-order --reverse`` prints nothing until
    it has walked everything), so the report parses and prices while git walks.  The report lists
    commits in git's ``--topo-order``, oldest first: for a chain (the usual PR) that is the stream
    reversed; with merges ``finish_range`` takes the order from ``git rev-list --topo-order``.
    """
    tok = os.urandom(12).hex()  # a random record boundary per run: a message cannot forge one
    if base.startswith("-") or head.startswith("-"):
        raise UserError(f"invalid revision {(base if base.startswith('-') else head)[:40]!r}")
    args = log_args(tok, f"{base}..{head}", boundary=True, topo=False)
    return Started(GitOutput(["git", "-C", str(repo), *args[1:]]), tok, base, head)


def finish_range(repo: Path, base_sha: str, head_sha: str, started: Started,
                 on_commits: Callable[[list[RawCommit]], None] | None = None) -> tuple[str, list[RawCommit]]:
    """The merge base and the commits of merge-base..head, oldest first in git's ``--topo-order``
    (``base_sha``/``head_sha``: the resolved tips).

    The log is parsed as git writes it; ``on_commits`` sees each batch (the report prices messages
    meanwhile), and may also see commits of a range that is then read again (it keys by SHA)."""
    import subprocess

    commits: list[RawCommit] = []
    boundary: list[str] = []
    topo: GitOutput | None = None  # started at the first sign that the range is not a chain
    for batch, edges in parse_stream(started.log.chunks(), started.tok):
        if topo is None and not _chain(commits[-1] if commits else None, batch):
            topo = GitOutput(["git", "-C", str(repo), "rev-list", "--topo-order", "--reverse", "--end-of-options",
                              f"{base_sha}..{head_sha}", "--"])
        commits += batch
        boundary += edges
        if on_commits is not None and batch:
            on_commits(batch)
    code = started.log.wait()
    if code != 0:
        commits, boundary = [], []
    # The tips were resolved while the log ran: if the head moved meanwhile, read the range again.
    tip_ok = commits[0].sha == head_sha if commits else True
    if topo is not None:
        order_code, order = topo.result()
        if order_code == 0 and len(order.split()) == len(commits):
            where = {sha: i for i, sha in enumerate(order.decode().split())}
            commits.sort(key=lambda rc: where.get(rc.sha, -1))
        else:  # pragma: no cover - git failed or disagrees with itself: read it the slow way
            tip_ok = False
    else:
        commits.reverse()
    if code == 0 and len(boundary) == 1 and tip_ok:
        return boundary[0], commits
    bases = merge_bases(started.base, started.head, subprocess.run(
        ["git", "merge-base", "--all", base_sha, head_sha], cwd=repo, capture_output=True))
    if len(bases) > 1 or code != 0 or not tip_ok:
        return bases[0], read_commits(repo, bases[0], head_sha)
    return bases[0], commits


def _chain(previous: RawCommit | None, batch: list[RawCommit]) -> bool:
    """Newest first, is every commit the one parent of the commit before it (a range without merges)?"""
    for rc in batch:
        if len(rc.parents) != 1 or (previous is not None and previous.parents[0] != rc.sha):
            return False
        previous = rc
    return True


def log_args(tok: str, rng: str, boundary: bool = False, topo: bool = True) -> list[str]:
    """``git log`` of a range as NUL-separated records (``%m``: "-" marks a boundary), oldest first in
    ``--topo-order`` (else newest first, in git's default order, which streams)."""
    return ["git", "-c", "log.showSignature=false", "log", "--no-color",
            *(["--topo-order", "--reverse"] if topo else []), "--no-show-signature",
            *(["--boundary"] if boundary else []),
            f"--format=%x00{tok}%m%x00%H%x00%P%x00%aE%x00%aN%x00%B", "--end-of-options", rng, "--"]


def read_commits(repo: Path, merge_base: str, head: str) -> list[RawCommit]:
    """Every commit in merge_base..head, oldest first, with one ``git log``."""
    from token_exchange.git import git_bytes

    tok = os.urandom(12).hex()
    return parse_log_boundary(git_bytes(*log_args(tok, f"{merge_base}..{head}")[1:], cwd=repo), tok)[0]


def parse_log_boundary(data: bytes, tok: str) -> tuple[list[RawCommit], list[str]]:
    """The commits of ``log_args`` output, and the SHAs of its boundary commits apart."""
    commits: list[RawCommit] = []
    edges: list[str] = []
    for batch, batch_edges in parse_stream([data], tok):
        commits += batch
        edges += batch_edges
    return commits, edges


def parse_stream(chunks: Iterable[bytes], tok: str) -> Iterator[tuple[list[RawCommit], list[str]]]:
    """``log_args`` output arriving in chunks -> batches of (commits, boundary SHAs), as records complete.

    Each record is decoded on its own (\\ufffd for invalid UTF-8): a record ends just before a NUL, which
    is valid UTF-8, so this equals decoding the whole output at once."""
    sep = b"\x00" + tok.encode()
    new = tuple.__new__  # RawCommit's own __new__ is a Python function: 10,000 calls cost ~5 ms
    pending = b""
    for chunk in _with_end(chunks):
        pending += chunk if chunk is not None else sep  # the end completes the last record
        records = pending.split(sep)
        pending = records.pop()  # incomplete (or, at the end, the empty tail)
        out: list[RawCommit] = []
        edges: list[str] = []
        for rec in records:
            if not rec:
                continue  # before the first record
            parts = rec.decode("utf-8", "replace").split("\x00", 5)
            if len(parts) != 6:  # pragma: no cover - git always prints every field
                continue
            mark, sha, parents, email, name, body = parts
            if mark == "-":
                edges.append(sha)
                continue
            out.append(new(RawCommit, (sha, tuple(parents.split()), email, name,
                                       body[:-1] if body.endswith("\n") else body)))
        yield out, edges


def _with_end(chunks: Iterable[bytes]) -> Iterator[bytes | None]:
    yield from chunks
    yield None


def config_texts_at(repo: Path, revs: Sequence[str], path: str) -> list[str | None]:
    """The config file's text at each revision (None where it is not a file there), with one git process."""
    import subprocess

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
    import subprocess

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


def begin(repo: Path, base: str, head: str, started: Started | None = None) -> Begun:
    """Start the range's log (unless ``started`` already did) and resolve both tips while it runs."""
    started = started or start_log(repo, base, head)
    try:
        return Begun(rev(repo, base, "--base"), rev(repo, head, "--head"), started)
    except BaseException:
        abandon(started)
        raise


def abandon(started: Started) -> None:
    """Stop the git process of a range nobody will read (an error came first)."""
    started.log.kill()
