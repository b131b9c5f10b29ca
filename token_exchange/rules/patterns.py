"""The one policy for patterns a user (a config, a repository) supplies: RE2, a linear-time engine.

Python's ``re`` backtracks: ``a?`` x 40 then ``a`` x 40 (40 optional then 40 required) runs for hours on
40 a's, and a config is hostile input (a branch can edit it).  RE2 (Google's engine, the
``google-re2`` bindings) matches in time linear in the input whatever the pattern, refuses the
constructs that would need backtracking (backreferences, lookaround) when the config is validated,
and bounds the memory a pattern may compile to.  Inputs are bounded too (a project name is at most
200 characters), so every match is bounded in time.  Patterns are compiled once per text and cached.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from token_exchange.errors import UserError

MAX_PATTERN = 300
MAX_MEMORY = 1 << 20  # bytes a compiled pattern may use (RE2's own budget; larger patterns are refused)


class PatternError(UserError):
    """A pattern RE2 refuses (the message says why)."""


@lru_cache(maxsize=512)
def compiled(pattern: str) -> Any:
    """The RE2 program for ``pattern`` (PatternError when RE2 refuses it)."""
    import re2

    if len(pattern) > MAX_PATTERN:
        raise PatternError(f"pattern longer than {MAX_PATTERN} characters")
    options = re2.Options()
    options.log_errors = False  # errors are ours to report, in one line
    options.max_mem = MAX_MEMORY
    try:
        return re2.compile(pattern, options)
    except re2.error as e:
        detail = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise PatternError(f"invalid pattern {pattern[:60]!r}: {detail}") from None


# Characters that stand for themselves in RE2 outside a character class: a pattern made of them only matches
# exactly itself, so equality answers without loading RE2 (a contract named after its project, as the defaults').
LITERAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def fullmatch(pattern: str, text: str) -> bool:
    if len(pattern) <= MAX_PATTERN and LITERAL.issuperset(pattern):
        return pattern == text
    return compiled(pattern).fullmatch(text) is not None
