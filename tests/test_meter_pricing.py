"""Usage prices (Decimal tokens per 1,000, one rounding up) and model-id pattern matching."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from token_exchange.amounts import SCALE
from token_exchange.errors import ConfigError
from token_exchange.meter.pricing import UsagePrices, cost, exact_cost, match_model
from token_exchange.meter.records import Usage


def u(i: int = 0, o: int = 0, cw: int = 0, cr: int = 0, rs: int = 0) -> Usage:
    return Usage("claude-code", "cc:msg_1", "s", "m", i, o, cw, cr, rs)


def test_cost_is_exact_and_rounded_up_once() -> None:
    p = UsagePrices(Decimal("0.5"), Decimal("0.5"), Decimal("0.5"), Decimal("0.5"))
    # 0.1 inference tokens x 0.5/1000 = 0.00005 tokens = 0.5 units per kind: 2 units together, not 4.
    assert exact_cost(p, u(1, 1, 1, 1)) == Decimal("0.002")
    assert cost(p, u(1, 1, 1, 1)) == 20
    assert cost(p, u(1)) == 5
    assert cost(UsagePrices(Decimal("0.15"), Decimal(0)), u(1)) == 2  # 1.5 units -> 2


def test_cost_of_a_realistic_claude_response() -> None:
    p = UsagePrices(Decimal(3), Decimal(15), Decimal("3.75"), Decimal("0.3"))
    usage = u(4, 312, 2188, 13447)
    assert exact_cost(p, usage) == Decimal("0.012") + Decimal("4.68") + Decimal("8.205") + Decimal("4.0341")
    assert cost(p, usage) == int(Decimal("16.9311") * SCALE)


def test_reasoning_tokens_are_not_charged_twice() -> None:
    p = UsagePrices(Decimal(1), Decimal(2))
    assert cost(p, u(o=1000, rs=900)) == cost(p, u(o=1000)) == 2 * SCALE


@settings(max_examples=200, deadline=None)
@given(counts=st.tuples(*[st.integers(0, 10**10)] * 4),
       prices=st.tuples(*[st.decimals(0, 10**6, places=6, allow_nan=False, allow_infinity=False)] * 4))
def test_cost_never_undercuts_the_exact_price(counts: tuple[int, int, int, int],
                                              prices: tuple[Decimal, Decimal, Decimal, Decimal]) -> None:
    p = UsagePrices(*prices)
    usage = u(*counts)
    exact = exact_cost(p, usage) * SCALE
    assert exact <= cost(p, usage) < exact + 1


def test_prices_from_config_mappings() -> None:
    assert UsagePrices.from_mapping({"input": "3", "output": 15, "cache_read": "0.30"}) == \
           UsagePrices(Decimal(3), Decimal(15), Decimal(0), Decimal("0.30"))


@pytest.mark.parametrize("data, fragment", [
    ({"input": 1.5, "output": "1"}, "not 1.5"),
    ({"input": True, "output": "1"}, "not True"),
    ({"input": "-1", "output": "1"}, ">= 0"),
    ({"input": "NaN", "output": "1"}, "finite"),
    ({"input": "lots", "output": "1"}, "not a number"),
    ({"input": "1" * 50, "output": "1"}, "too long"),
    ({"input": "1e30", "output": "1"}, "larger than"),
    ({"input": [1], "output": "1"}, "expected a number"),
    ({"output": "1"}, "input is missing"),
    ({"input": "1", "output": "1", "cache": "1"}, "unknown key"),
])
def test_bad_prices_are_one_line_config_errors(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        UsagePrices.from_mapping(data, what="models.opus.prices")
    assert fragment in str(e.value) and "\n" not in str(e.value) and "models.opus.prices" in str(e.value)


PATTERNS = {"claude-*": "claude", "claude-opus-4-*": "opus", "claude-opus-4-1-*": "opus-4-1",
            "claude-sonnet-4*": "sonnet", "gpt-5*-codex*": "codex", "gpt-5.1-codex-mini": "codex-mini",
            "claude-haiku-4-[0-9]-*": "haiku"}


@pytest.mark.parametrize("model, name", [
    ("claude-opus-4-1-20250805", "opus-4-1"),
    ("claude-opus-4-5-20251101", "opus"),
    ("claude-sonnet-4-5-20250929", "sonnet"),
    ("claude-3-5-haiku-20241022", "claude"),
    ("claude-haiku-4-5-20251001", "haiku"),
    ("gpt-5.1-codex-mini", "codex-mini"),
    ("gpt-5.1-codex", "codex"),
    ("o4-mini", None),
    ("CLAUDE-OPUS-4-1", None),
    ("", None),
])
def test_most_specific_pattern_wins(model: str, name: str | None) -> None:
    assert match_model(PATTERNS, model) == name


@settings(max_examples=100, deadline=None)
@given(order=st.permutations(list(PATTERNS.items())),
       model=st.sampled_from(["claude-opus-4-1-20250805", "claude-sonnet-4-5", "gpt-5.1-codex-mini", "x"]))
def test_the_answer_does_not_depend_on_pattern_order(order: list[tuple[str, str]], model: str) -> None:
    assert match_model(dict(order), model) == match_model(PATTERNS, model)


def test_ties_go_to_fewer_wildcards_then_the_first_pattern() -> None:
    assert match_model({"a*b*": "two wildcards", "ab*": "one wildcard"}, "abc") == "one wildcard"
    assert match_model({"a?c": "second", "a*c": "first"}, "abc") == "first"  # same rank: "a*c" < "a?c"
    assert match_model({"ab*": "x", "a*b": "y"}, "ab") == match_model({"a*b": "y", "ab*": "x"}, "ab") == "y"


price_values = st.one_of(st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(),
                         st.text(max_size=45), st.decimals(), st.lists(st.integers(), max_size=2))


@settings(max_examples=300, deadline=None)
@given(data=st.dictionaries(st.sampled_from(["input", "output", "cache_write", "cache_read", "other"]), price_values))
def test_hostile_price_tables_raise_only_config_error(data: dict[str, object]) -> None:
    try:
        p = UsagePrices.from_mapping(data)
    except ConfigError as e:
        assert "\n" not in str(e)
        return
    assert cost(p, u(1, 2, 3, 4)) >= 0


@settings(max_examples=200, deadline=None)
@given(patterns=st.dictionaries(st.text(max_size=12), st.text(max_size=5), max_size=6), model=st.text(max_size=30))
def test_match_model_never_raises(patterns: dict[str, str], model: str) -> None:
    name = match_model(patterns, model)
    assert name is None or name in patterns.values()


# --- matching without compiling every pattern (the hook's start-up) ---------------------------
@settings(max_examples=300, deadline=None)
@given(pattern=st.text(alphabet="ab-*?[]!4.", max_size=12), model=st.text(alphabet="ab-4.", max_size=10))
def test_specificity_counts_like_the_regex_and_the_prefilter_never_drops_a_match(pattern: str, model: str) -> None:
    import fnmatch
    import re

    from token_exchange.meter import pricing

    wild = re.compile(r"\[[^\]]*\]|[*?]")
    assert pricing._specificity(pattern) == (len(wild.sub("", pattern)), -len(wild.findall(pattern)))
    if fnmatch.fnmatchcase(model, pattern):
        assert pricing._may_match(model, pattern)
