"""The shapes of bd's JSON output, unwrapped into plain values (``cmd/bd/output.go``, ``errors.go``).

bd prints pretty JSON on stdout; objects get ``"schema_version": 1`` (v1.0.3+); ``BD_JSON_ENVELOPE=1``
wraps everything as ``{"schema_version": 1, "data": ...}``; errors are ``{"error": ..., "hint"?: ...}``
on stdout (FatalErrorRespectJSON) or stderr (FatalError), or plain ``Error: ...`` text on stderr.
``show`` prints a list (v0.11+) or one object (v0.9); ``--skip-labels`` and ``--suggest-next``
wrap lists in ``{"issues": [...]}`` / ``{"closed": [...]}``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from token_exchange.errors import UserError, clean_text


class BdError(UserError):
    """bd failed or printed something we cannot use (one clear line)."""


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(clean_text(text, limit=limit * 4).split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def unwrap(value: Any) -> Any:
    """Remove the BD_JSON_ENVELOPE wrapper {"schema_version": N, "data": ...}."""
    if isinstance(value, dict) and "data" in value and set(value) <= {"data", "schema_version"}:
        return value["data"]
    return value


def error_of(value: Any) -> str | None:
    """bd's error message when ``value`` is an error object, else None."""
    value = unwrap(value)
    if isinstance(value, dict) and "error" in value:
        msg = str(value.get("error") or "failed")
        if value.get("hint"):
            msg += f" ({value['hint']})"
        return msg
    return None


def json_in(text: str) -> Any:
    """The first JSON document in text that may have plain lines before it (stderr)."""
    stripped = text.strip()
    if not stripped:
        return None
    try:
        return json.loads(stripped)
    except (ValueError, RecursionError):
        pass
    dec = json.JSONDecoder()
    for m in re.finditer(r"^[{\[]", text, re.MULTILINE):
        try:
            return dec.raw_decode(text, m.start())[0]
        except (ValueError, RecursionError):
            continue
    return None


def plain_error(stderr: str) -> str:
    """bd's plain-text error: the 'Error: ...' line (and its hint), else the last line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.startswith("Error:"):
            msg = ln[len("Error:"):].strip()
            if i + 1 < len(lines) and lines[i + 1].startswith("Hint:"):
                msg += f" ({lines[i + 1][5:].strip()})"
            return msg
    return lines[-1] if lines else ""


def as_list(data: Any, what: str, key: str = "issues") -> list[Any]:
    """bd prints lists; legacy show printed one object; --skip-labels/--suggest-next wrap in an object."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        if isinstance(data.get(key), list):
            return list(data[key])
        if "id" in data:
            return [{k: v for k, v in data.items() if k != "schema_version"}]
    if data is None:
        return []
    raise BdError(f"{what}: unexpected output ({type(data).__name__})")
