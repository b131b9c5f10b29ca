"""Where the meter keeps its state: the exchange home, and per-source read offsets under a lock.

A hook run finds the home the way ``services.home.find_home`` does, but without running git (Claude
Code starts a fresh process for every hook).  Each source's offsets live in ``HOME/meter/<source>/``:
one JSON file per Claude Code session (by session id) or per codex / aider file (by a digest of its
path), each with a ``.lock`` beside it, so two hooks racing on one session wait for each other.  The
state only saves re-reading: every charge is idempotent (``services.meter_charge``), so a damaged
or lost state file is read again from the start and charges nothing twice.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from token_exchange.errors import UserError
from token_exchange.meter.records import MeterError, Source, short_path

if TYPE_CHECKING:
    from token_exchange.meter.offsets import OffsetState

# The same names as services.home (a test checks it), without that module's git import.
HOME_ENV = "TOKEN_EXCHANGE_HOME"
HOME_DIR = ".exchange"
METER_DIR = "meter"
LOCK_WAIT = 10.0  # seconds a hook waits for the session's state or the ledger before leaving it to the next run


class Busy(MeterError):
    """Another process holds the state or the ledger: nothing is lost, the next run charges it."""


def repo_main_worktree(start: Path) -> Path | None:
    """The main work tree of the repository containing ``start`` (git's rules, without running git).

    ``.git`` a directory: that work tree.  ``.git`` a file (``gitdir: X``, a linked worktree or a
    submodule): the parent of X's ``commondir`` when that is a ``.git`` directory, else this work
    tree, as ``git.main_worktree`` decides from ``git rev-parse --git-common-dir``.
    """
    here = Path(os.path.abspath(start))
    for d in (here, *here.parents):
        dot = d / ".git"
        try:
            st = os.stat(dot)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            return d
        if not stat.S_ISREG(st.st_mode):
            return None
        try:
            with open(dot, encoding="utf-8", errors="replace") as f:
                text = f.read(4096)
        except OSError:
            return d
        if not text.startswith("gitdir:"):
            return d
        gitdir = Path(text[len("gitdir:"):].strip())
        gitdir = gitdir if gitdir.is_absolute() else d / gitdir
        common = gitdir
        try:
            with open(gitdir / "commondir", encoding="utf-8", errors="replace") as f:
                rel = Path(f.read(4096).strip())
            common = rel if rel.is_absolute() else gitdir / rel
        except OSError:
            pass  # a submodule (or an old layout): its own repository
        common = Path(os.path.normpath(common))
        return common.parent if common.name == ".git" else d
    return None


def find_home(option: str | Path | None, cwd: str | Path | None, env: Mapping[str, str]) -> Path:
    """``--home``, else ``$TOKEN_EXCHANGE_HOME``, else ``.exchange/`` of the main work tree of the
    repository at ``cwd`` (the session's working directory): ``services.home.find_home``'s order."""
    if option:
        return Path(option).expanduser().absolute()
    if env.get(HOME_ENV):
        return Path(env[HOME_ENV]).expanduser().absolute()
    top = repo_main_worktree(Path(cwd) if cwd else Path.cwd())
    if top is None:
        raise MeterError("no exchange home: pass --home, set TOKEN_EXCHANGE_HOME, or run inside a git repository")
    return top / HOME_DIR


def _real_dir(path: Path, what: str) -> None:
    """``path`` is a directory we may write in (created 0700 if missing), never through a symlink."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as e:
            raise MeterError(f"{what} {short_path(path)}: cannot create ({e.strerror})") from None
        st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise MeterError(f"{what} {short_path(path)} is a symlink; refusing to follow it")
    if not stat.S_ISDIR(st.st_mode):
        raise MeterError(f"{what} {short_path(path)} is not a directory")


def state_dir(home: Path, source: Source) -> Path:
    """``HOME/meter/<source>/``: real directories inside the home (no symlink followed)."""
    if not os.path.isdir(home):
        raise MeterError(f"no exchange at {short_path(home)} (run `tx init`)")
    _real_dir(home / METER_DIR, "meter directory")
    d = home / METER_DIR / source
    _real_dir(d, "meter directory")
    return d


def state_file_for(home: Path, source: Source, path: Path | str) -> Path:
    """The state file of one codex or aider file: named by a digest of its absolute path."""
    from token_exchange.meter.offsets import key
    from token_exchange.meter.records import digest

    return state_dir(home, source) / f"{digest(key(path))}.json"


@contextmanager
def locked(path: Path, timeout: float = LOCK_WAIT) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created 0600, never through a symlink) for the block."""
    from token_exchange.storage import file_lock

    def busy() -> Exception:
        return Busy(f"{short_path(path)} is held by another hook; the next run charges what is new")

    held = False
    try:
        with file_lock(path, timeout=timeout, mode=0o600, busy=busy):
            held = True
            yield
    except UserError as e:
        if held or isinstance(e, MeterError):
            raise  # the block's own error, or Busy
        raise MeterError(f"lock file {short_path(path)}: {str(e).rsplit(': ', 1)[-1]}") from None


def load_state(path: Path) -> tuple[OffsetState, str | None]:
    """The saved offsets, or an empty state and why (damaged: every id is idempotent, read again).

    A symlink or a non-file at ``path`` is refused, never read through or replaced."""
    from token_exchange.meter import offsets

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return offsets.OffsetState(), None
    if not stat.S_ISREG(st.st_mode):
        raise MeterError(f"state file {short_path(path)} is a symlink or not a regular file; refusing it")
    try:
        return offsets.load(path), None
    except MeterError as e:
        return offsets.OffsetState(), f"{e}: reading again from the start (nothing is charged twice)"
