"""CLI commands for this area (registered on the main `tx` app)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to `tx`."""
