"""Exchange configuration: reading, caching and editing ``.exchange/config.toml``.

Read with ``tomllib`` (fast, stdlib) using ``parse_float=Decimal`` so no amount is ever a binary
float.  ``tomlkit`` is only imported by the code that *edits* the file (``edit_config``), to keep the
user's comments and layout.  The types (``Config`` and its parts) are in ``rules.settings`` and the
checks in ``rules.validate``; they are named here too, so that every reader imports one module.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

from token_exchange.errors import ConfigError
from token_exchange.rules.settings import (
    AGENT_NAME,
    BRANCH_RE,
    CAP_SOURCES,
    CAP_WINDOWS,
    METER_SOURCES,
    SETTLEMENT_MODES,
    Agent,
    BonusGroup,
    Cap,
    CommitRules,
    Config,
    Contract,
    Limits,
    MeterConfig,
    Model,
    SessionRule,
    Settlement,
    default_text,
    defaults,
)
from token_exchange.rules.validate import Validator

__all__ = ["AGENT_NAME", "BRANCH_RE", "CAP_SOURCES", "CAP_WINDOWS", "METER_SOURCES", "SETTLEMENT_MODES", "Agent",
           "BonusGroup", "Cap", "CommitRules", "Config", "Contract", "Limits", "MeterConfig", "Model",
           "SessionRule", "Settlement", "default_text", "edit_config", "load", "meter_config", "parse"]


def load(path: Path | None) -> Config:
    """Load and validate a config file; ``None`` gives the built-in defaults."""
    if path is None:
        return parse(default_text(), None)
    try:
        st = os.stat(path)
        stamp = f"{CACHE_VERSION}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
        cached = _read_cache(path, stamp)
        if cached is not None:  # parsed before and unchanged: skip tomllib (~12 ms on every hook) and RE2
            return Validator(cached, "", str(path), patterns_checked=True).config(path)
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no config at {path} (run `tx init`)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    cfg = parse(text, path)
    _write_cache(path, stamp, cfg.raw)
    return cfg


def parse(text: str, path: Path | None) -> Config:
    import tomllib

    where = str(path) if path else "<defaults>"
    try:
        raw = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: invalid TOML: {e}") from None
    return Validator(raw, text, where).config(path)


# A derived, disposable cache of the *validated* raw config next to it (ignored by the home's .gitignore),
# keyed by inode, size and mtime; Decimals are kept exact as {"$decimal": "1.5"}.
CACHE_VERSION = "1"


def _cache_path(path: Path) -> Path:
    return path.with_name(".config-cache.json")


def _read_cache(path: Path, stamp: str) -> dict[str, Any] | None:
    try:
        data = json.loads(_cache_path(path).read_text("utf-8"),
                          object_hook=lambda d: Decimal(d["$decimal"]) if d.keys() == {"$decimal"} else d)
    except (OSError, ValueError):
        return None
    return data.get("raw") if isinstance(data, dict) and data.get("stamp") == stamp else None


def _write_cache(path: Path, stamp: str, raw: dict[str, Any]) -> None:
    def enc(obj: Any) -> Any:
        if isinstance(obj, Decimal):
            return {"$decimal": str(obj)}
        raise TypeError(type(obj).__name__)

    try:
        from token_exchange.storage import atomic_write

        atomic_write(_cache_path(path), json.dumps({"stamp": stamp, "raw": raw}, default=enc).encode("utf-8"))
    except (OSError, TypeError, ValueError):
        pass  # a cache is an optimisation only (e.g. a read-only home)


def edit_config(path: Path, edit: Any) -> None:
    """Apply ``edit(doc)`` to the config with tomlkit (comments kept), validate, write atomically."""
    import tomlkit

    from token_exchange.storage import atomic_write

    doc = tomlkit.parse(path.read_text("utf-8"))
    edit(doc)
    text = tomlkit.dumps(doc)
    parse(text, path)  # refuse to write an invalid config
    atomic_write(path, text.encode("utf-8"))



def meter_config(cfg: Config) -> MeterConfig:
    """The ``[meter]`` table of a loaded config (validated again: it is small)."""
    return Validator(cfg.raw or defaults(), "", str(cfg.path or "<defaults>")).meter(cfg.agents, cfg.models)
