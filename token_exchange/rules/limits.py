"""Spending limits: pure rules, plus the rolling-window usage read from the index.

The four limits of the seed (``cfg.agent(x).limits``, in units):

- **burst**: no single outflow (spend, reservation, pool contribution) may exceed it;
- **reserve**: the wallet may not drop below it (and never below zero: "Insufficient funds");
- **hourly** / **daily**: the outflows of the last 60 minutes / 24 hours (rolling windows, not
  calendar boundaries) plus the amount asked for may not exceed it.

What a window counts (the accounting rule, see docs/spending.md):

    used(window) = sum of spend + settle + contribute + transfer entries with ts in (now - window, now]
                 + every reservation that is still open (whatever its age)

A reservation counts in full while it is open; when it is settled, it stops counting and the
settle entry (the actual cost, at the settle time) counts instead; voided or expired reservations
stop counting.  So a settled reservation is never counted twice, and because settle <= hold,
settling can only lower usage.  Releases and refunds are never subtracted (a refund of a pool
contribution does not give window capacity back).

The windowed sums use ``Index.window_sum`` (an index on (agent, kind, ts)) and the ``holds``
table: the cost is the number of entries *inside* the window, never the length of history.

Everything here except ``usage``/``enforce``/``status`` is pure (no I/O, no clock).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from token_exchange import clock
from token_exchange.amounts import Units, fmt, to_decimal
from token_exchange.errors import Refused
from token_exchange.ledger.protocols import Index
from token_exchange.rules.config import Limits

HOUR_US = 3600 * 1_000_000
DAY_US = 86400 * 1_000_000
WINDOW_KINDS = ("spend", "settle", "contribute", "transfer")  # a transfer is the payer's outflow
WINDOWS = (("hourly", "Hourly", HOUR_US), ("daily", "Daily", DAY_US))


def f1(units: Units) -> str:
    """An amount as the seed prints a spend: at least one decimal (660.0, 0.0001)."""
    text = fmt(units)
    return text if "." in text else text + ".0"


micros = clock.micros  # microseconds since the epoch, exactly (the windows count in them)


def from_micros(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def iso(us: int) -> str:
    return from_micros(us).strftime("%Y-%m-%dT%H:%M:%SZ") if us % 1_000_000 == 0 else \
        from_micros(us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def duration(us: int) -> str:
    """1h 02m 05s / 23m 10s / 4s (rounded up to the second)."""
    s = max(0, -(-us // 1_000_000))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h {m:02d}m {sec:02d}s"
    if m:
        return f"{m}m {sec:02d}s"
    return f"{sec}s"


@dataclass(frozen=True)
class Usage:
    """An agent's position at ``now_us``: wallet balance, window usage (open holds included)."""

    now_us: int
    balance: Units
    hourly: Units
    daily: Units
    held: Units
    provisional: Units = 0  # unsettled provisional awards held back (``spend_provisional = false``)

    @property
    def spendable(self) -> Units:
        """The wallet without the provisional tokens that may not be spent yet."""
        return self.balance - self.provisional


@dataclass(frozen=True)
class Refusal:
    """Why an outflow is refused (``limit``: burst, funds, reserve, hourly, daily)."""

    limit: str
    message: str
    amount: Units
    cap: Units
    used: Units = 0

    def to_json(self) -> dict[str, Any]:
        return {"limit": self.limit, "amount": to_decimal(self.amount), "cap": to_decimal(self.cap),
                "used": to_decimal(self.used)}


def check(limits: Limits, usage: Usage, amount: Units) -> Refusal | None:
    """The seed's rule order: burst, reserve (funds first), hourly, daily.  None = allowed."""
    if amount > limits.burst:
        return Refusal("burst", f"Exceeds burst limit ({f1(amount)} > {fmt(limits.burst)})", amount, limits.burst)
    balance = usage.spendable
    # Unsettled provisional tokens are not spendable (yet): say so, or the balance looks wrong.
    aside = f"; {f1(usage.provisional)} provisional not spendable until settled" if usage.provisional else ""
    if amount > balance:
        return Refusal("funds", f"Insufficient funds (balance {f1(balance)}, need {f1(amount)}{aside})",
                       amount, balance, balance)
    if balance - amount < limits.reserve:
        left = balance - amount
        return Refusal("reserve", f"Would breach emergency reserve ({f1(balance)} - {f1(amount)} = "
                                  f"{f1(left)} < {fmt(limits.reserve)}{aside})", amount, limits.reserve, balance)
    for key, title, _ in WINDOWS:
        used = getattr(usage, key)
        cap = getattr(limits, key)
        if used + amount > cap:
            return Refusal(key, f"{title} limit reached ({f1(used)}/{fmt(cap)} used, need {f1(amount)})",
                           amount, cap, used)
    return None


def frees_at(entries: Iterable[tuple[int, Units]], window_us: int, used: Units, held: Units, cap: Units,
             amount: Units) -> int | None:
    """When (micros) ``amount`` fits in the window again, if nothing else is spent; None: not by time alone.

    ``entries`` are the (ts, amount) inside the window, oldest first; each leaves the window at
    ts + window.  Open reservations (``held``) only free up when settled, voided or expired.
    """
    need = used + amount - cap
    if need <= 0:
        return None
    if amount + held > cap:
        return None
    freed = 0
    for ts, amt in entries:
        freed += amt
        if freed >= need:
            return ts + window_us
    return None  # pragma: no cover - entries + held always cover used


def available(limits: Limits, usage: Usage) -> Units:
    """The largest single outflow the rules would allow right now."""
    return max(0, min(limits.burst, usage.spendable - limits.reserve, usage.spendable,
                      limits.hourly - usage.hourly, limits.daily - usage.daily))


# --- reading the index (call inside ``ledger.locked()`` for a decision) ------------------------
def usage(idx: Index, agent: str, now_us: int, *, hold_provisional: bool = False) -> Usage:
    """``hold_provisional``: count the agent's unsettled provisional awards as not spendable."""
    held = sum(amount for _, amount, _, _ in idx.open_holds(agent))
    hourly = idx.window_sum(agent, WINDOW_KINDS, now_us - HOUR_US + 1, now_us) + held
    daily = idx.window_sum(agent, WINDOW_KINDS, now_us - DAY_US + 1, now_us) + held
    pending = open_provisional(idx.kind_totals(agent)) if hold_provisional else 0
    return Usage(now_us, idx.account(agent), hourly, daily, held, pending)


def open_provisional(by_kind: dict[str, Units]) -> Units:
    """Provisional awards not yet taken back (each is voided in full when it settles or expires)."""
    return max(by_kind.get("provisional", 0) - by_kind.get("void", 0), 0)


class LimitRefused(Refused):
    """A refusal by a spending limit; ``refusal`` and ``frees_at_us`` carry the details."""

    def __init__(self, message: str, refusal: Refusal, frees_at_us: int | None, agent: str) -> None:
        super().__init__(message)
        self.refusal = refusal
        self.frees_at_us = frees_at_us
        self.agent = agent

    def to_json(self) -> dict[str, Any]:
        d = {"error": str(self), "refused": True, "agent": self.agent, **self.refusal.to_json()}
        d["frees_at"] = iso(self.frees_at_us) if self.frees_at_us is not None else None
        return d


def enforce(idx: Index, limits: Limits, agent: str, amount: Units, now_us: int) -> Usage:
    """Raise ``LimitRefused`` unless ``amount`` may leave ``agent``'s wallet now; returns the usage."""
    u = usage(idx, agent, now_us, hold_provisional=not limits.spend_provisional)
    refusal = check(limits, u, amount)
    if refusal is None:
        return u
    when: int | None = None
    hint = ""
    if refusal.limit in ("hourly", "daily"):
        window = HOUR_US if refusal.limit == "hourly" else DAY_US
        entries = idx.window_entries(agent, WINDOW_KINDS, now_us - window + 1, now_us)
        when = frees_at(entries, window, refusal.used, u.held, refusal.cap, amount)
        if amount > refusal.cap:
            hint = f"; {f1(amount)} is more than the {refusal.limit} limit itself"
        elif when is not None:
            hint = f"; enough frees up at {iso(when)} (in {duration(when - now_us)})"
        else:
            hint = f"; open reservations hold {f1(u.held)} of it: settle or void them first"
    elif refusal.limit == "burst":
        hint = "; split the request or use a team pool"
    raise LimitRefused(refusal.message + hint, refusal, when, agent)


@dataclass
class Status:
    """`tx limits AGENT`: each limit, what is used, what is left, and when more frees up."""

    agent: str
    now_us: int
    limits: Limits
    usage: Usage
    next_free: dict[str, tuple[int, Units] | None] = field(default_factory=dict)
    holds: list[tuple[str, Units, int, int]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        lim, u = self.limits, self.usage
        d: dict[str, Any] = {"agent": self.agent, "now": iso(self.now_us), "balance": to_decimal(u.balance),
                             "reserved": to_decimal(u.held), "available": to_decimal(available(lim, u)),
                             "provisional_held_back": to_decimal(u.provisional)}
        d["burst"] = {"limit": to_decimal(lim.burst)}
        d["reserve"] = {"limit": to_decimal(lim.reserve), "above_reserve": to_decimal(max(0, u.balance - lim.reserve))}
        for key, _, _ in WINDOWS:
            cap, used = getattr(lim, key), getattr(u, key)
            nxt = self.next_free.get(key)
            d[key] = {"limit": to_decimal(cap), "used": to_decimal(used), "remaining": to_decimal(max(0, cap - used)),
                      "next_frees_at": iso(nxt[0]) if nxt else None,
                      "next_frees_in_seconds": -(-(nxt[0] - self.now_us) // 1_000_000) if nxt else None,
                      "next_frees_amount": to_decimal(nxt[1]) if nxt else None}
        d["reservations"] = [{"id": acct.split(":", 1)[1], "amount": to_decimal(amt), "since": iso(ts),
                              "expires": iso(exp) if exp else None} for acct, amt, ts, exp in self.holds]
        return d


def status(idx: Index, limits: Limits, agent: str, now_us: int) -> Status:
    u = usage(idx, agent, now_us, hold_provisional=not limits.spend_provisional)
    nxt: dict[str, tuple[int, Units] | None] = {}
    for key, _, window in WINDOWS:
        entries = idx.window_entries(agent, WINDOW_KINDS, now_us - window + 1, now_us)
        # Entries with the same timestamp leave together.
        if entries:
            first = entries[0][0]
            nxt[key] = (first + window, sum(a for ts, a in entries if ts == first))
        else:
            nxt[key] = None
    return Status(agent, now_us, limits, u, nxt, list(idx.open_holds(agent)))
