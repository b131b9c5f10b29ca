"""Exact token amounts.

Every amount is an ``int`` of *units*: 1 token = 10,000 units, so the smallest
price in the seed (0.1 tokens per 1,000 inference tokens, i.e. 0.0001 tokens per
inference token) is exactly one unit.  Binary floats never appear.

Rounding rule for computed amounts (documented in the README):
- rewards (rate x multipliers) round half-even to the nearest unit;
- costs (tokens x price) round *up* to the next unit, so a charge is never
  smaller than its exact price;
- proportional splits use the largest-remainder rule (see ``split``).
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal, InvalidOperation
from functools import lru_cache

from token_exchange.errors import UserError

SCALE = 10_000
DECIMALS = 4
# The one documented maximum (docs/ledger.md), held exactly by every layer: SQLite INTEGER (64-bit),
# Python ints and JSON consumers that read numbers as IEEE doubles (exact up to 2^53 - 1).
# - one amount: at most 10^11 tokens = 10^15 units;
# - every account balance and every running total the ledger keeps (per agent and kind, per contract,
#   per pool): within +-(2^53 - 1) units (about 9.007 x 10^11 tokens).  The ledger checks this under
#   its lock before a write, so no sum ever leaves the exact range.
MAX_TOKENS = 10**11
MAX_UNITS = MAX_TOKENS * SCALE
MAX_TOTAL = 2**53 - 1
FMT_FAST = 10**18  # fmt's integer path: far beyond MAX_TOTAL, far within Decimal's 28 digits

Units = int


def to_units(value: Decimal | int | str, *, what: str = "amount", allow_zero: bool = False) -> Units:
    """Parse a user- or config-supplied amount into units, refusing anything odd."""
    if isinstance(value, bool):
        raise UserError(f"{what}: expected a number, got {value!r}")
    if isinstance(value, float):  # pragma: no cover - guard for programming errors
        raise TypeError("floats are not accepted as amounts")
    text = str(value).strip()
    if len(text) > 40:
        raise UserError(f"{what}: {text[:20]}... is too long to be an amount")
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise UserError(f"{what}: {text!r} is not a number") from None
    if not d.is_finite():
        raise UserError(f"{what}: {text!r} is not a finite number")
    if d < 0:
        raise UserError(f"{what}: {text} is negative")
    if d == 0 and not allow_zero:
        raise UserError(f"{what}: must be greater than 0")
    if d > MAX_TOKENS:
        raise UserError(f"{what}: {text} is larger than the maximum {MAX_TOKENS}")
    scaled = d.scaleb(DECIMALS)
    if scaled != scaled.to_integral_value():
        raise UserError(f"{what}: {text} has more than {DECIMALS} decimal places")
    return int(scaled)


def to_decimal(units: Units) -> Decimal:
    """Units as an exact, normalised Decimal (450 -> 450, 1782000 -> 178.2)."""
    d = Decimal(units).scaleb(-DECIMALS)
    if d == d.to_integral_value():
        return d.quantize(Decimal(1))
    return d.normalize()


@lru_cache(maxsize=4096)
def fmt(units: Units) -> str:
    """Human/JSON text of an amount: plain decimal, no exponent, no float noise.

    ``format(to_decimal(units), "f")``; for every amount the ledger can hold, written with integer
    arithmetic (the same text, several times faster: every reward's breakdown formats a few).  Memoised: the
    text depends only on the value, and a ledger formats the same few rates and rewards again and again."""
    if type(units) is int and -FMT_FAST < units < FMT_FAST:
        whole, frac = divmod(-units if units < 0 else units, SCALE)
        sign = "-" if units < 0 else ""
        return f"{sign}{whole}.{frac:0{DECIMALS}d}".rstrip("0") if frac else f"{sign}{whole}"
    return format(to_decimal(units), "f")


def round_reward(value: Decimal) -> Units:
    """Tokens (exact Decimal) -> units, half-even."""
    return int(value.scaleb(DECIMALS).to_integral_value(rounding=ROUND_HALF_EVEN))


def round_cost(value: Decimal) -> Units:
    """Tokens (exact Decimal) -> units, rounded up so a charge never undercuts its price."""
    return int(value.scaleb(DECIMALS).to_integral_value(rounding=ROUND_CEILING))


def split(total: Units, weights: dict[str, Units]) -> dict[str, Units]:
    """Split ``total`` in proportion to ``weights`` exactly (largest remainder).

    Each share is floor(total * w / W); the units left over go one each to the
    largest remainders, ties broken by name, so shares always sum to ``total``.
    """
    positive = {k: w for k, w in weights.items() if w > 0}
    whole = sum(positive.values())
    if whole == 0:
        return {k: 0 for k in weights}
    shares: dict[str, Units] = {}
    remainders: list[tuple[int, str]] = []
    for name, w in positive.items():
        q, r = divmod(total * w, whole)
        shares[name] = q
        remainders.append((r, name))
    left = total - sum(shares.values())
    remainders.sort(key=lambda t: (-t[0], t[1]))
    for _, name in remainders[:left]:
        shares[name] += 1
    for k in weights:
        shares.setdefault(k, 0)
    return shares
