"""The TOML journal's amounts: ``amount = "12.5"`` as its writer writes it -> units, remembered.

Shared by the exact reader (toml.py) and the fast lane (tomlruns.py).  A module of its own so that a
writer (every hook appends and never reads back) imports neither reader's regular expressions: toml.py
imports the fast lane only when it reads.
"""

from __future__ import annotations

import re

from token_exchange.amounts import MAX_UNITS, SCALE, to_units

_AMOUNT = re.compile(r"([0-9]{1,12})(?:\.([0-9]{1,4}))?")
CACHE_MAX = 65536
UNITS: dict[str, int] = {}  # what ``cached_units`` remembers (the fast lane reads it directly)


def units(text: object, where: int) -> int:
    """An amount as the journal writes it ("12.5") -> units; anything else goes through ``to_units``."""
    if isinstance(text, str):
        m = _AMOUNT.fullmatch(text)
        if m is not None:
            whole, frac = m.groups()
            value = int(whole) * SCALE + (int(frac.ljust(4, "0")) if frac else 0)
            if value <= MAX_UNITS:
                return value
    return to_units(str(text), what=f"byte {where}: amount", allow_zero=True)


def cached_units(text: str, where: int) -> int:
    """``units`` remembered (a ledger repeats few amounts)."""
    value = UNITS.get(text)
    if value is None:
        value = units(text, where)
        if len(UNITS) > CACHE_MAX:
            UNITS.clear()
        UNITS[text] = value
    return value
