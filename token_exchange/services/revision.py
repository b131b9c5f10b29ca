"""The rules a revision holds: the tracked config read from git at a commit, never from the work tree,
so that a pull request or a pushed branch cannot bring its own pricing (the report and settlement
both price with the rules of a revision they choose)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from token_exchange import git
from token_exchange.errors import ConfigError, UserError
from token_exchange.rules import config as config_mod
from token_exchange.rules.config import Config

MAX_CONFIG_BYTES = 1_000_000


def config_texts_at(repo: Path, revs: Sequence[str], path: str) -> list[str | None]:
    """The config file's text at each revision (None where it is not a file there), one git process."""
    if any(c in path for c in "\n\r\0"):
        raise UserError(f"invalid config path {path[:60]!r}")
    try:
        return git.blobs_at(revs, path, repo, MAX_CONFIG_BYTES)
    except UserError as e:
        raise ConfigError(str(e)) from None


def rules_from(text: str | None, rev: str, path: str) -> tuple[Config, str | None]:
    """The rules in the config ``text`` read at ``rev`` (None: the file is not there, the defaults apply)."""
    if text is None:
        return config_mod.parse(config_mod.default_text(), None), None
    return config_mod.parse(text, Path(f"{rev[:12]}:{path}")), text


def rules_at(repo: Path, rev: str, path: str) -> tuple[Config, str]:
    """The rules at ``rev`` and where they came from (for the one line a report or settlement prints)."""
    cfg, found = rules_from(config_texts_at(repo, [rev], path)[0], rev, path)
    where = f"{rev[:12]}:{path}" if found is not None else f"built-in defaults ({path} is not in {rev[:12]})"
    return cfg, where
