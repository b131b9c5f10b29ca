"""Error types: a UserError becomes one line on stderr and exit 1, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or a refused operation; nothing was changed."""

    exit_code = 1


class ConfigError(UserError):
    """The exchange config is invalid (the message names the key)."""


class Refused(UserError):
    """A valid request the rules refuse (limits, balance, budget)."""


class IdConflict(UserError):
    """An idempotency id reused with different content."""


def clean_text(value: str, *, limit: int = 2000) -> str:
    """Make untrusted text storable: valid UTF-8, no NULs, bounded length."""
    if isinstance(value, str) and len(value) <= limit and (value.isprintable() or (
            value.isascii() and "\x00" not in value)):
        return value  # fast path: no NUL, no surrogates (ASCII has none), nothing to do
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    value = value.replace("\x00", "\ufffd")
    if len(value) > limit:
        value = value[: limit - 1] + "\u2026"
    return value
