"""What time it is: the system clock, or a clock a test or ``tx simulate`` injects in-process.

Nothing here reads the environment: an agent that can set variables for ``tx`` must not be able to
move "now" (limit windows, reservation expiry and the ledger's dates all hang on it).  Tests inject a
clock from Python (``with clock.injected(fake): ...``); ``tx simulate`` passes its simulated clock to
the exchange it builds.  The ledger refuses a date before its last transaction and, on the system
clock, a date in the future (``ledger.Ledger``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

Clock = Callable[[], datetime]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch, exactly (``timestamp()`` is a float: after 2106 it can round
    x.999999 s up to the next second).  A naive time is taken as UTC."""
    d = (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)) - EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def system() -> datetime:
    """Real UTC time."""
    return datetime.now(UTC)


_injected: Clock | None = None


def now() -> datetime:
    """The injected clock's time if one is set (tests), else the system's."""
    return (_injected or system)()


def is_injected() -> bool:
    return _injected is not None


@contextmanager
def injected(clock: Clock) -> Iterator[Clock]:
    """Make :func:`now` answer from ``clock`` for the block (in this process only)."""
    global _injected
    saved, _injected = _injected, clock
    try:
        yield clock
    finally:
        _injected = saved
