"""Checkpoints of the journal's head, kept in git where an agent cannot rewrite them (see docs/ledger.md)."""

from __future__ import annotations

from typing import Any


def verify(ledger: Any, txns: list[Any], problems: list[str], remote: str | None = None) -> int:
    return 0
