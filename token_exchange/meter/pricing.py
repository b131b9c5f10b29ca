"""Pricing a usage record in exchange tokens, and mapping real model ids to price-table names.

Prices are exact Decimals in exchange tokens per 1,000 inference tokens, one per kind of token
(input, output, cache write, cache read).  A record's cost is the exact sum over its four kinds,
rounded *up* to a unit once (``amounts.round_cost``), so a charge never undercuts its price and
never accumulates four roundings.  ``reasoning_tokens`` are not priced: they are inside output.
"""

# No ``from __future__ import annotations``: NamedTuple fields are real types here (docs/DEVELOPING.md, Hot paths).

import fnmatch
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation, localcontext
from typing import NamedTuple

from token_exchange.amounts import MAX_TOKENS, Units, round_cost
from token_exchange.errors import ConfigError
from token_exchange.meter.records import Usage, short

KINDS = ("input", "output", "cache_write", "cache_read")


def _price(value: object, what: str) -> Decimal:
    if isinstance(value, (bool, float)):
        raise ConfigError(f"{what}: write the price as a string or an integer, not {value!r}")
    if not isinstance(value, (int, str, Decimal)):
        raise ConfigError(f"{what}: expected a number, got {type(value).__name__}")
    text = str(value).strip()
    if len(text) > 40:
        raise ConfigError(f"{what}: {short(text, 20)} is too long to be a price")
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise ConfigError(f"{what}: {short(text)} is not a number") from None
    if not d.is_finite() or d < 0:
        raise ConfigError(f"{what}: {short(text)} must be a finite number >= 0")
    if d > MAX_TOKENS:
        raise ConfigError(f"{what}: {short(text)} is larger than {MAX_TOKENS}")
    return d


class _PriceFields(NamedTuple):
    input: Decimal
    output: Decimal
    cache_write: Decimal = Decimal(0)
    cache_read: Decimal = Decimal(0)


class UsagePrices(_PriceFields):
    """Exchange tokens per 1,000 inference tokens of each kind (validated when constructed)."""

    __slots__ = ()

    def __new__(cls, input: Decimal, output: Decimal, cache_write: Decimal = Decimal(0),
                cache_read: Decimal = Decimal(0)) -> "UsagePrices":
        for kind, value in zip(KINDS, (input, output, cache_write, cache_read), strict=True):
            if not isinstance(value, Decimal) or not value.is_finite() or value < 0 or value > MAX_TOKENS:
                raise ValueError(f"{kind} price must be a finite Decimal in 0..{MAX_TOKENS}")
        return super().__new__(cls, input, output, cache_write, cache_read)

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], *, what: str = "prices") -> "UsagePrices":
        """From config-style keys ``input``, ``output``, ``cache_write``, ``cache_read`` (the last
        two default to 0); a one-line ConfigError names the bad key."""
        unknown = sorted(set(data) - set(KINDS))
        if unknown:
            raise ConfigError(f"{what}: unknown key {short(unknown[0])} (expected {', '.join(KINDS)})")
        for kind in ("input", "output"):
            if kind not in data:
                raise ConfigError(f"{what}.{kind} is missing")
        values = {k: _price(data[k], f"{what}.{k}") for k in KINDS if k in data}
        return cls(**values)


def exact_cost(prices: UsagePrices, usage: Usage) -> Decimal:
    """The exact cost in exchange tokens, before rounding."""
    with localcontext() as ctx:
        ctx.prec = 60
        total = (usage.input_tokens * prices.input + usage.output_tokens * prices.output
                 + usage.cache_write_tokens * prices.cache_write + usage.cache_read_tokens * prices.cache_read)
        return total / 1000


def cost(prices: UsagePrices, usage: Usage) -> Units:
    """The charge in units: the exact cost rounded up to a unit, once."""
    with localcontext() as ctx:
        ctx.prec = 60
        return round_cost(exact_cost(prices, usage))


def _specificity(pattern: str) -> tuple[int, int]:
    """(literal characters, -wildcards): more literal text first, then fewer wildcards.  A
    wildcard is ``*``, ``?`` or a ``[...]`` set, as the regex ``\\[[^\\]]*\\]|[*?]`` finds them (scanned by
    hand: compiling a regex costs a hook more than the scan)."""
    literal = wild = i = 0
    while i < len(pattern):
        c = pattern[i]
        end = pattern.find("]", i + 1) if c == "[" else -1
        if c in "*?":
            wild += 1
        elif end >= 0:
            wild += 1
            i = end
        else:
            literal += 1
        i += 1
    return literal, -wild


def _may_match(model_id: str, pattern: str) -> bool:
    """False when ``pattern`` cannot match ``model_id`` (a literal part of it is missing): skips
    compiling the patterns of other model families, which is most of what matching costs."""
    if "[" in pattern:
        return True
    return all(part in model_id for part in pattern.replace("?", "*").split("*"))


def match_model(patterns: Mapping[str, str], model_id: str) -> str | None:
    """The price-table name for ``model_id``: the matching glob pattern (``fnmatch``, case
    sensitive, e.g. ``claude-opus-4-*``) with the most literal characters wins; ties go to fewer
    wildcards, then to the alphabetically first pattern, so the answer never depends on order."""
    if not isinstance(model_id, str) or not model_id:
        return None
    best: tuple[tuple[int, int], str] | None = None
    best_name: str | None = None
    for pattern, name in patterns.items():
        if not isinstance(pattern, str) or not pattern:
            continue
        if not _may_match(model_id, pattern) or not fnmatch.fnmatchcase(model_id, pattern):
            continue
        rank = (_specificity(pattern), pattern)
        if best is None or rank[0] > best[0] or (rank[0] == best[0] and rank[1] < best[1]):
            best, best_name = rank, name
    return best_name
