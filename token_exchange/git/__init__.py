"""Lean git helpers over subprocess (the hook path cannot afford gitpython's import)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from token_exchange.errors import UserError


def git(*args: str, cwd: Path | str | None = None, check: bool = True, input: bytes | None = None) -> str:
    """Run git and return stdout (surrogate-escaped, so non-UTF-8 never raises)."""
    return git_bytes(*args, cwd=cwd, check=check, input=input).decode("utf-8", "surrogateescape")


def git_bytes(*args: str, cwd: Path | str | None = None, check: bool = True, input: bytes | None = None) -> bytes:
    """Run git and return stdout as bytes; a failure is one line (UserError)."""
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True)
    except FileNotFoundError:
        raise UserError("git is not installed") from None
    if check and proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise UserError(f"git {args[0]} failed: {err[-1] if err else 'exit ' + str(proc.returncode)}")
    return proc.stdout


def toplevel(cwd: Path | str | None = None) -> Path | None:
    proc = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True)
    if proc.returncode != 0:
        return None
    return Path(proc.stdout.decode("utf-8", "surrogateescape").strip())


def project_name(repo: Path, configured: str = "") -> str:
    """Project for contracts: config, else the origin remote's repository name, else the directory."""
    if configured:
        return configured
    url = git("config", "--get", "remote.origin.url", cwd=repo, check=False).strip()
    if url:
        name = url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        if name.endswith(".git"):
            name = name[:-4]
        if name:
            return name
    return repo.resolve().name


def env_without_git_dir() -> dict[str, str]:
    """Environment for git calls into *another* repository from inside a hook."""
    return {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}


HOME_ENV = "TOKEN_EXCHANGE_HOME"


def find_home(option: str | Path | None = None, cwd: Path | None = None) -> Path:
    """--home, else $TOKEN_EXCHANGE_HOME, else .exchange/ at the root of the current git repository.

    Here rather than in ``exchange`` so that finding a home imports nothing heavy (``tx report``)."""
    if option:
        return Path(option).expanduser().absolute()
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser().absolute()
    top = toplevel(cwd)
    if top is None:
        raise UserError("no exchange home: pass --home, set TOKEN_EXCHANGE_HOME, or run inside a git repository")
    return top / ".exchange"
