"""What a hook knows about where it runs: the repository, the exchange, and the hooks' own small state.

State lives in the git directory, never in the work tree:
- ``<git dir>/token-exchange/pending.json``: what commit-msg saw (HEAD before the commit, a squash or
  cherry-pick in progress) for post-commit to tell an amend or a squash from a new commit, and the git
  settings it read (post-commit of the same commit then runs no ``git config``);
- (the queue of commits post-commit could not pay lives with ``tx catch-up``, in ``services.catchup``).
"""

# No ``from __future__ import annotations``: NamedTuple fields are real types here (docs/DEVELOPING.md, Hot paths).

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from token_exchange import git
from token_exchange.hooks import HookError

if TYPE_CHECKING:
    from token_exchange.rules.config import Config
    from token_exchange.services.exchange import Exchange

LOCK_WAIT = 5.0  # seconds a hook waits for the ledger lock before leaving the commit to catch-up
CONFIG_KEYS = r"^(core\.commentchar|mailmap\.(file|blob)|remote\.origin\.url)$"
MAX_STATE = 1 << 20


class Repo(NamedTuple):
    top: Path
    git_dir: Path
    common_dir: Path
    head: str  # "" on an unborn branch
    head_parents: tuple[str, ...]

    @property
    def state_dir(self) -> Path:
        return self.git_dir / "token-exchange"


def locate() -> Repo:
    """The repository this hook runs for, and its HEAD (one git process)."""
    proc = git.run("rev-parse", "--path-format=absolute", "--git-dir", "--git-common-dir", "--show-toplevel",
                   "HEAD", "HEAD^@", check=False)
    lines = git.decode(proc.stdout).splitlines()
    if len(lines) < 3:
        raise HookError("not inside a git work tree")
    shas = [s for s in lines[3:] if len(s) in (40, 64) and all(c in "0123456789abcdef" for c in s)]
    head = shas[0] if shas and lines[3] == shas[0] else ""
    return Repo(Path(lines[2]), Path(lines[0]), Path(lines[1]), head, tuple(shas[1:]) if head else ())


def open_exchange(repo: Repo) -> "Exchange":
    """The exchange for this repository, or HookError (one line) when there is none or it is broken."""
    from token_exchange.services.exchange import Exchange
    from token_exchange.services.home import HOME_DIR, HOME_ENV

    env = os.environ.get(HOME_ENV)
    if env:
        home = Path(env).expanduser().absolute()
    else:
        main = git.main_worktree(git.Where(repo.top, repo.git_dir, repo.common_dir))
        home = (main or repo.top) / HOME_DIR
    if not (home / "config.toml").exists():
        raise HookError(f"no exchange at {home} (run `tx init`); nothing recorded")
    ex = Exchange(home)
    ex.ledger.lock_timeout = LOCK_WAIT
    return ex


class GitConfig:
    """The few git settings the hooks read, fetched with one ``git config`` process when first needed
    (``values``: what commit-msg already read for the same commit, which post-commit need not ask again)."""

    def __init__(self, values: dict[str, str] | None = None) -> None:
        self._values = values

    def get(self, key: str) -> str:
        return self.values().get(key, "")

    def values(self) -> dict[str, str]:
        if self._values is None:
            self._values = git.config_map(CONFIG_KEYS)
        return self._values


def project(repo: Repo, cfg: "Config", config: GitConfig) -> str:
    """Config, else the origin remote's repository name, else the directory (as ``git.project_name``)."""
    if cfg.project:
        return cfg.project
    main = git.main_worktree(git.Where(repo.top, repo.git_dir, repo.common_dir))
    return git.project_from_url(config.get("remote.origin.url")) or (main or repo.top).name


# --- the hooks' own state -------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_STATE)
        return json.loads(data)
    except (OSError, ValueError):
        return None


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def save_pending(repo: Repo, record: dict[str, Any]) -> None:
    _write(repo.state_dir / "pending.json", json.dumps(record).encode())


def pending_config(pending: dict[str, Any] | None, head: git.Commit) -> GitConfig:
    """The git settings commit-msg read for this very commit (the record names a reward id of its message,
    and HEAD before it was the commit's first parent or, for an amend, had its parents); else a
    ``GitConfig`` that asks git."""
    from token_exchange.rules.reward_ids import trailer_ids

    values = pending.get("git_config") if pending else None
    if not pending or not isinstance(values, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in values.items()):
        return GitConfig()
    before = pending.get("head", "")
    amend = bool(before) and before != head.sha and tuple(pending.get("head_parents", ())) == head.parents
    ours = pending.get("reward_id") in trailer_ids(head.message)
    return GitConfig(values) if ours and (before == (head.parents[0] if head.parents else "") or amend) \
        else GitConfig()


def take_pending(repo: Repo) -> dict[str, Any] | None:
    """commit-msg's record, once (it only describes the commit being made right now)."""
    path = repo.state_dir / "pending.json"
    data = _read_json(path)
    try:
        path.unlink()
    except OSError:
        pass
    return data if isinstance(data, dict) else None
