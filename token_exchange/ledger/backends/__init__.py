"""The registry of journal backends: name -> "module:Class" (imported only when used).

Adding a backend is one module implementing ``protocols.Journal`` (constructed as ``Class(home, cfg)``)
plus one line here; config validation, ``tx init --backend``, the exchange and ``tx report`` all take
their names from ``NAMES``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from token_exchange.ledger.protocols import Journal

BACKENDS: dict[str, str] = {
    "toml": "token_exchange.ledger.backends.toml:TomlJournal",
    "notes": "token_exchange.ledger.backends.notes:NotesJournal",
    "postgres": "token_exchange.ledger.backends.postgres:PostgresJournal",  # one database, many hosts
}
NAMES = tuple(BACKENDS)
DEFAULT = "toml"


def journal_class(name: str) -> Any:
    from token_exchange.errors import UserError

    target = BACKENDS.get(name)
    if target is None:
        raise UserError(f"unknown ledger backend {name[:20]!r} (one of: {', '.join(NAMES)})")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def open_journal(name: str, home: Path, cfg: Any) -> Journal:
    """The journal of backend ``name`` for the exchange at ``home`` (``cfg``: its Config)."""
    journal: Journal = journal_class(name)(home, cfg)
    return journal
