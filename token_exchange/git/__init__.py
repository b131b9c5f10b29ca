"""The one place that runs git: one environment policy, one output decoder, one batch object reader.

Everything that talks to git (hooks, report, settlement, the notes backend, bd project names) goes
through this module.  It uses plain ``git`` processes: the hooks run on every commit and cannot afford
GitPython's import (~90 ms).  GitPython is used where a porcelain API is worth it and nothing is hot:
``tx sync`` (fetch/push results), see ``token_exchange.git.remote``.

Environment policy: git itself exports ``GIT_DIR``, ``GIT_INDEX_FILE`` and friends to hooks.  A
command about *the repository git is working on* keeps them; a command about *another* repository
(``repo=`` given) drops every variable that points git at a repository, so a hook can never write
into the wrong one.  Output is decoded as UTF-8 with ``surrogateescape`` (never raises).
"""

# No ``from __future__ import annotations``: NamedTuple fields are real types here (docs/DEVELOPING.md, Hot paths).

import os
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from token_exchange.errors import UserError

REPO_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES",
            "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_PREFIX", "GIT_NOTES_REF", "GIT_CEILING_DIRECTORIES")
MAX_MESSAGE = 65536


class GitError(UserError):
    """git failed; the message is its last line of stderr."""


def environment(repo: Path | str | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a git process (see the module docstring)."""
    env = dict(os.environ)
    if repo is not None:
        for key in REPO_ENV:
            env.pop(key, None)
    env["GIT_TERMINAL_PROMPT"] = "0"
    if extra:
        env.update(extra)
    return env


def run(*args: str, repo: Path | str | None = None, input: bytes | None = None, check: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``git ARGS`` (in ``repo`` if given) and return the finished process."""
    try:
        proc = subprocess.run(["git", *args], cwd=repo, input=input, capture_output=True,
                              stdin=None if input is not None else subprocess.DEVNULL,
                              env=environment(repo, env))
    except FileNotFoundError:
        raise GitError("git is not installed") from None
    if check and proc.returncode != 0:
        raise GitError(f"git {args[0]} failed: {last_line(proc.stderr) or f'exit {proc.returncode}'}")
    return proc


def out(*args: str, repo: Path | str | None = None, check: bool = True, input: bytes | None = None) -> str:
    """git's stdout as text (surrogate-escaped), trailing newline removed."""
    return decode(run(*args, repo=repo, check=check, input=input).stdout).rstrip("\n")


def ok(*args: str, repo: Path | str | None = None) -> bool:
    """Whether ``git ARGS`` succeeds (for questions such as ``merge-base --is-ancestor``)."""
    return run(*args, repo=repo, check=False).returncode == 0


def decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def last_line(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return " ".join(lines[-1].split())[:300] if lines else ""


def git(*args: str, cwd: Path | str | None = None, check: bool = True) -> str:
    """Compatibility spelling of :func:`out` for a command run in ``cwd`` (another repository)."""
    return decode(run(*args, repo=cwd, check=check).stdout)


# --- where we are -----------------------------------------------------------------------------
class Where(NamedTuple):
    """A repository as git resolves it from a directory."""

    toplevel: Path | None  # the work tree (None for a bare repository)
    git_dir: Path  # this work tree's git dir (a linked worktree has its own)
    common_dir: Path  # the repository's shared git dir


def where(cwd: Path | str | None = None, *, inherit: bool = False) -> Where | None:
    """The repository at ``cwd`` (None outside one).  ``inherit``: keep git's own environment (in a hook)."""
    proc = run("rev-parse", "--path-format=absolute", "--git-dir", "--git-common-dir", "--show-toplevel",
               repo=None if inherit else (cwd or Path.cwd()), check=False)
    if proc.returncode != 0 and not proc.stdout:
        return None
    lines = decode(proc.stdout).splitlines()
    if len(lines) < 2:
        return None
    top = Path(lines[2]) if len(lines) > 2 and lines[2] else None
    return Where(top, Path(lines[0]), Path(lines[1]))


def toplevel(cwd: Path | str | None = None) -> Path | None:
    w = where(cwd)
    return w.toplevel if w else None


def main_worktree(w: Where) -> Path | None:
    """The main work tree of a repository (a linked worktree shares its ledger), if it has one."""
    if w.common_dir.name == ".git":
        return w.common_dir.parent
    return w.toplevel


def project_name(repo: Path, configured: str = "") -> str:
    """Project for contracts: config, else the origin remote's repository name, else the directory of the
    main work tree (every worktree of a repository is one project)."""
    if configured:
        return configured
    found = project_from_url(out("config", "--get", "remote.origin.url", repo=repo, check=False))
    if found:
        return found
    w = where(repo)
    main = main_worktree(w) if w else None
    return (main or repo.resolve()).name


def project_from_url(url: str) -> str:
    name = url.strip().rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return name[:-4] if name.endswith(".git") else name


def config_map(pattern: str, repo: Path | str | None = None) -> dict[str, str]:
    """Every git setting whose name matches ``pattern`` (one process), first value wins."""
    proc = run("config", "-z", "--get-regexp", pattern, repo=repo, check=False)
    found: dict[str, str] = {}
    for item in decode(proc.stdout).split("\0"):
        name, _, value = item.partition("\n")
        if name:
            found.setdefault(name.lower(), value)
    return found


def resolve(rev: str, repo: Path | str | None = None, what: str = "revision") -> str:
    """The commit ``rev`` names, or a one-line error."""
    if not rev or rev.startswith("-") or len(rev) > 256 or any(c in rev for c in "\0\n"):
        raise UserError(f"invalid {what} {rev[:40]!r}")
    proc = run("rev-parse", "--verify", "-q", "--end-of-options", f"{rev}^{{commit}}", repo=repo, check=False)
    if proc.returncode != 0:
        raise UserError(f"{what} {rev[:60]!r} is not a commit in this repository "
                        "(in CI, check out with fetch-depth: 0)")
    return decode(proc.stdout).strip()


# --- commits ----------------------------------------------------------------------------------
class Commit(NamedTuple):
    sha: str
    parents: tuple[str, ...]
    email: str  # author email, .mailmap applied (%aE)
    name: str
    message: str
    time: int = 0  # committer date, seconds since the epoch (%ct): when it was committed, or landed


LOG_FORMAT = "%H%x00%P%x00%aE%x00%aN%x00%ct%x00%B"


def commits(*revs: str, repo: Path | str | None = None, no_walk: bool = False, topo: bool = False,
            reverse: bool = False, first_parent: bool = False, max_count: int | None = None,
            since: str | None = None, mailmap_rev: str | None = None) -> list[Commit]:
    """Commits of ``git log REVS`` (with ``no_walk``: exactly the named commits, in the given order).

    With ``mailmap_rev`` author emails are mapped by ``mailmap_rev:.mailmap`` and nothing else: git also
    reads ``.mailmap`` from the top of the work tree (a pull request's checkout), so it is pointed at an
    empty one."""
    token = os.urandom(8).hex()  # a record separator a message cannot forge
    args = ["-c", "log.showSignature=false", "log", "--no-color", f"--format=%x01{token}{LOG_FORMAT}"]
    if no_walk:
        args.append("--no-walk=unsorted")
    if topo:
        args.append("--topo-order")
    if reverse:
        args.append("--reverse")
    if first_parent:
        args.append("--first-parent")
    if max_count is not None:
        args.append(f"-n{max_count}")
    if since:
        args.append(f"--since={since}")
    args += ["--end-of-options", *revs, "--"]
    if mailmap_rev is None:
        proc = run(*args, repo=repo, check=False)
    else:
        import tempfile  # only here: the hooks never map by a revision's .mailmap, and pay no tempfile import

        with tempfile.TemporaryDirectory(prefix="tx-log-") as empty:
            proc = run("--work-tree", empty, "-c", "mailmap.file=", "-c", f"mailmap.blob={mailmap_rev}:.mailmap",
                       *args, repo=repo, check=False)
    if proc.returncode != 0:
        raise GitError(f"git log failed: {last_line(proc.stderr)}")
    return parse_log(proc.stdout, token)


def parse_log(data: bytes, token: str) -> list[Commit]:
    found = []
    for record in data.split(b"\x01" + token.encode())[1:]:
        parts = record.decode("utf-8", "replace").split("\x00", 5)
        if len(parts) != 6:  # pragma: no cover - git prints every field
            continue
        sha, parents, email, name, when, body = parts
        found.append(Commit(sha, tuple(parents.split()), email, name, body.rstrip("\n")[:MAX_MESSAGE],
                            int(when) if when.isdigit() else 0))
    return found


def patch_ids(shas: Iterable[str], repo: Path | str | None = None) -> dict[str, str]:
    """Stable patch-ids of many commits with two processes, however many commits (merges get none)."""
    shas = [s for s in shas if s]
    if not shas:
        return {}
    env = environment(repo)
    show = subprocess.Popen(["git", "-c", "core.quotePath=false", "show", "--no-color", "--no-ext-diff",
                             "--format=commit %H", "--patch", "--no-renames", "--stdin"],
                            cwd=repo, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    pid = subprocess.Popen(["git", "patch-id", "--stable"], cwd=repo, env=env, stdin=show.stdout,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert show.stdin is not None and show.stdout is not None
    show.stdout.close()
    try:
        show.stdin.write(("\n".join(shas) + "\n").encode())
        show.stdin.close()
    except BrokenPipeError:  # pragma: no cover - git exited early
        pass
    data, _ = pid.communicate()
    show.wait()
    found: dict[str, str] = {}
    for line in data.decode("ascii", "replace").splitlines():
        parts = line.split()
        if len(parts) == 2:
            found[parts[1]] = parts[0]
    return found


def merge_base(a: str, b: str, repo: Path | str | None = None) -> str:
    proc = run("merge-base", a, b, repo=repo, check=False)
    base = decode(proc.stdout).strip()
    if proc.returncode != 0 or not base:
        raise UserError(f"{a[:40]} and {b[:40]} have no merge base (shallow clone? use fetch-depth: 0)")
    return base


def is_ancestor(ancestor: str, descendant: str, repo: Path | str | None = None) -> bool:
    return ok("merge-base", "--is-ancestor", ancestor, descendant, repo=repo)


def reachable(shas: Sequence[str], tip: str, repo: Path | str | None = None) -> set[str]:
    """Which of ``shas`` are ancestors of (or equal to) ``tip``: one ``rev-list`` for all of them."""
    shas = [s for s in dict.fromkeys(shas) if s]
    if not shas:
        return set()
    # Commits in `shas` that are NOT reachable from tip survive `--no-walk ... --not tip`.
    proc = run("rev-list", "--no-walk", "--stdin", repo=repo, check=False,
               input=("\n".join(shas) + f"\n--not\n{tip}\n").encode())
    if proc.returncode != 0:  # an unknown object among them: ask one by one
        return {s for s in shas if is_ancestor(s, tip, repo)}
    outside = set(decode(proc.stdout).split())
    return {s for s in shas if s not in outside}


def blob_at(rev: str, path: str, repo: Path | str | None = None, limit: int = 1_000_000) -> str | None:
    """The text of ``path`` at ``rev`` (None when it is not a file there); larger than ``limit``: error."""
    found = blobs_at([rev], path, repo, limit)
    return found[0]


def blobs_at(revs: Sequence[str], path: str, repo: Path | str | None = None,
             limit: int = 1_000_000) -> list[str | None]:
    """``path`` at each revision, with one ``cat-file --batch``."""
    if any(c in path for c in "\0\n\r"):
        raise UserError(f"invalid path {path[:60]!r}")
    with Batch(repo) as batch:
        out_: list[str | None] = []
        for rev in revs:
            obj = batch.get(f"{rev}:{path}", limit=limit, what=f"{rev[:12]}:{path}")
            out_.append(obj[1].decode("utf-8", "replace") if obj is not None and obj[0] == "blob" else None)
        return out_


class Batch:
    """One ``git cat-file --batch`` process answering many object questions (the one batch reader)."""

    def __init__(self, repo: Path | str | None = None) -> None:
        self.repo = repo
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "Batch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._proc is not None:
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.close()
            except BrokenPipeError:  # pragma: no cover
                pass
            self._proc.wait()
            self._proc = None

    def get(self, name: str, *, limit: int | None = None, what: str = "") -> tuple[str, bytes] | None:
        """(type, content) of the object ``name`` (``REV:PATH`` or an id), None when it is missing."""
        if any(c in name for c in "\n\0"):
            raise UserError(f"invalid object name {name[:60]!r}")
        if self._proc is None:
            try:
                self._proc = subprocess.Popen(["git", "cat-file", "--batch"], cwd=self.repo, stdin=subprocess.PIPE,
                                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                              env=environment(self.repo))
            except FileNotFoundError:
                raise GitError("git is not installed") from None
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(name.encode("utf-8", "surrogateescape") + b"\n")
        self._proc.stdin.flush()
        header = self._proc.stdout.readline().split()
        if len(header) != 3 or not header[2].isdigit():
            return None  # "<name> missing" / "ambiguous"
        size = int(header[2])
        body = self._proc.stdout.read(size + 1)[:size]
        if limit is not None and size > limit:
            raise UserError(f"{what or name[:60]}: larger than {limit} bytes")
        return header[1].decode("ascii", "replace"), body

    def many(self, names: Iterable[str]) -> Iterator[tuple[str, tuple[str, bytes] | None]]:
        for name in names:
            yield name, self.get(name)
