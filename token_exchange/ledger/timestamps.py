"""Timestamps as the ledger stores them: UTC text with a four-digit year and microseconds (``ts_text``), the only
form written, and the microseconds since the epoch that limits and windows compute with (``ts_micros``)."""

# No ``from __future__ import annotations`` (like txn.py: the hot paths import this module).

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import repeat
from operator import floordiv, sub

from token_exchange.clock import EPOCH
from token_exchange.clock import micros as clock_micros
from token_exchange.errors import UserError

TS_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")

# Dates the ledger accepts: from the Unix epoch (limits compute with micros since it) to year 9999.
MIN_YEAR = 1970


@lru_cache(maxsize=256)
def ts_text(moment: datetime) -> str:
    """Canonical UTC text, always a four-digit year (``strftime('%Y')`` writes year 1 as ``1``)."""
    if moment.tzinfo is None:
        raise UserError("a timestamp needs a timezone")
    m = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    if m.year < MIN_YEAR:
        raise UserError(f"timestamp {m.isoformat()[:40]} is before {MIN_YEAR}")
    # One %-format, not seven format specs (an f-string costs about twice as much; every write formats one).
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031
        m.year, m.month, m.day, m.hour, m.minute, m.second, m.microsecond)


@lru_cache(maxsize=4096)
def _hour_micros(prefix: str) -> int:
    return clock_micros(datetime.fromisoformat(prefix + ":00:00+00:00"))


def ts_micros(text: str) -> int:
    """Micros since the epoch of a timestamp (the canonical ``ts_text`` form or any ISO 8601; a naive time is UTC).

    A rebuild calls this once per transaction, the in-memory index once per write: ``fromisoformat`` (C) does
    it.  A canonical-looking text with a minute or second past 59 is counted on from its hour, as it always
    was (only an edited journal holds one: every write is checked by ``check_ts``)."""
    try:
        return clock_micros(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        if not TS_RE.fullmatch(text):
            raise
    return _hour_micros(text[:13]) + int(text[14:16]) * 60_000_000 + int(text[17:19]) * 1_000_000 + int(text[20:26])


# A column of canonical timestamps (``TS_RE``), each followed by "\n", with every digit turned into 0.
_TS_SHAPE = "0000-00-00T00:00:00.000000Z\n"
_ZEROS = str.maketrans("123456789", "000000000")
_ONE_US = timedelta(microseconds=1)


def ts_micros_column(texts: Sequence[str]) -> list[int]:
    """``[ts_micros(t) for t in texts]``, with less work per timestamp when all of them are canonical.

    A rebuild's chunk at a time.  One join and one translation check the whole column: each line has
    ``TS_RE``'s shape (ASCII digits where it has them), and as many lines as texts means no text holds a line
    break.  Such a timestamp is exactly what ``datetime.fromisoformat`` reads (in C) when it reads it at all;
    one it refuses (minute 60, 31 February) sends the column through ``ts_micros``, which says what it says."""
    try:
        column = "\n".join(texts) + "\n"
    except TypeError:
        return [ts_micros(t) for t in texts]
    if column.translate(_ZEROS) == _TS_SHAPE * len(texts):
        try:
            return list(map(floordiv, map(sub, map(datetime.fromisoformat, texts), repeat(EPOCH)), repeat(_ONE_US)))
        except (ValueError, OverflowError):
            pass
    return [ts_micros(t) for t in texts]


_last_checked_ts = [""]  # the last text check_ts accepted (a spend's time is checked by make_txn, then append)


def check_ts(text: str, what: str = "ts") -> str:
    """``text`` if it is a canonical stored timestamp (``ts_text`` form, year >= 1970), else UserError."""
    if type(text) is str and text == _last_checked_ts[0] and text:
        return text
    if not isinstance(text, str) or not TS_RE.fullmatch(text) or int(text[:4]) < MIN_YEAR:
        raise UserError(f"{what} {str(text)[:40]!r} is not a UTC time like 2026-01-01T12:00:00.000000Z "
                        f"(year {MIN_YEAR}-9999)")
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"{what} {text!r} is not a valid time") from None
    if type(text) is str:
        _last_checked_ts[0] = text
    return text
