"""Where an exchange lives: ``--home``, else ``$TOKEN_EXCHANGE_HOME``, else ``.exchange/`` of the repository.

A repository has one ledger, shared by all its worktrees: the default home is in the MAIN work tree,
so a commit made in a linked worktree and cherry-picked in the main checkout is paid once.
"""

from __future__ import annotations

import os
from pathlib import Path

from token_exchange import git
from token_exchange.errors import UserError

HOME_ENV = "TOKEN_EXCHANGE_HOME"
HOME_DIR = ".exchange"


def find_home(option: str | Path | None = None, cwd: Path | None = None, *, inherit: bool = False) -> Path:
    """The home to use (see the module docstring); ``inherit``: resolve the repository as git's hooks do."""
    if option:
        return Path(option).expanduser().absolute()
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser().absolute()
    w = git.where(cwd, inherit=inherit)
    top = git.main_worktree(w) if w else None
    if top is None:
        raise UserError("no exchange home: pass --home, set TOKEN_EXCHANGE_HOME, or run inside a git repository")
    return top / HOME_DIR
