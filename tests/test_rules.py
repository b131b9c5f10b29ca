"""Reward rules and exact amounts: the seed's worked figures and the edge cases around them."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from token_exchange.amounts import SCALE, fmt, round_cost, round_reward, split, to_decimal, to_units
from token_exchange.errors import ConfigError, UserError
from token_exchange.rules import config, patterns, rewards
from token_exchange.rules.config import BonusGroup

CFG = config.load(None)


def tokens(units: int) -> Decimal:
    return to_decimal(units)


# --- the seed's worked figures -------------------------------------------------------
def test_p2_bug_pays_300_times_1_5() -> None:
    r = rewards.issue_reward(CFG, 2, "bug")
    assert (r.base, r.multiplier) == (Decimal(300), Decimal("1.5"))
    assert tokens(r.amount) == 450


@pytest.mark.parametrize("priority,kind,expected", [
    (1, "security", 1000), (1, "bug", 750), (2, "feature", 300), (3, "task", 120), (4, "docs", 45),
    (4, "chore", "37.5"), ("P5", "chore", 25), (0, "bug", 750),
])
def test_issue_table(priority: object, kind: str, expected: object) -> None:
    assert tokens(rewards.issue_reward(CFG, priority, kind).amount) == Decimal(str(expected))


def test_unknown_type_gets_default_and_label_can_raise_it() -> None:
    assert rewards.issue_reward(CFG, 2, "epic").multiplier == 1
    r = rewards.issue_reward(CFG, 2, "task", ("frontend", "security"))
    assert (r.multiplier, r.multiplier_from, tokens(r.amount)) == (Decimal(2), "label security", Decimal(600))
    # A label never lowers the multiplier: the highest applicable wins.
    assert rewards.issue_reward(CFG, 2, "bug", ("docs",)).multiplier == Decimal("1.5")


@pytest.mark.parametrize("bad", [-1, 10, "P", "high", True])
def test_bad_priority(bad: object) -> None:
    with pytest.raises(UserError):
        rewards.issue_reward(CFG, bad, "bug")


def test_commit_reward_is_rate_times_contract_times_bonus() -> None:
    r = rewards.commit_reward(CFG, "claude", "nexushive-setup", "fix: null deref in parser")
    assert (r.base_rate, r.multiplier, r.bonus, r.keyword) == (Decimal(150), Decimal(2), Decimal("1.5"), "fix")
    assert tokens(r.amount) == 450
    r = rewards.commit_reward(CFG, "zero", "scheme-compiler", "refactor: tidy")
    assert tokens(r.amount) == Decimal("194.4")  # 90 x 1.8 x 1.2
    r = rewards.commit_reward(CFG, "observer", "elsewhere", "wip")
    assert (r.contract, tokens(r.amount)) == ("default", Decimal(100))


@pytest.mark.parametrize("message,keyword", [
    ("fix: x", "fix"), ("fix(parser): x", "fix"), ("feat!: x\n\nsecurity hardening", "security"),
    ("FIX the thing", "fix"), ("add tests", ""), ("prefix handling", ""), ("bugfix: x", ""),
    ("docs: readme", "docs"), ("Refactor and test", "test"), ("hotfix + fix", "hotfix"),
])
def test_keywords_are_whole_words_and_highest_wins(message: str, keyword: str) -> None:
    group, kw = rewards.keyword_bonus(CFG.bonuses, message)
    assert kw == keyword


@pytest.mark.parametrize("message,parents,why", [
    ("Merge branch 'x'", 2, "merge commit"), ("fixup! fix: x", 1, "fixup/squash commit"),
    ("squash! x", 1, "fixup/squash commit"), ("amend! x", 1, "fixup/squash commit"),
    ('Revert "fix: x"\n\nThis reverts commit 0123456789abcdef.', 1, "revert"),
])
def test_excluded_commits_earn_nothing(message: str, parents: int, why: str) -> None:
    r = rewards.commit_reward(CFG, "claude", "p", message, parents)
    assert (r.excluded, r.amount) == (why, 0)


def test_contract_budget_caps_then_exhausts() -> None:
    budget = CFG.contracts[-1].budget  # default: 10,000 tokens
    r = rewards.commit_reward(CFG, "claude", "p", "fix", contract_paid=budget - 100 * SCALE)
    assert (tokens(r.gross), tokens(r.amount), r.capped) == (Decimal(225), Decimal(100), True)
    assert "capped from 225 to the 100 left" in r.reason
    r = rewards.commit_reward(CFG, "claude", "p", "fix", contract_paid=budget)
    assert (r.amount, r.capped) == (0, True)
    assert "exhausted" in r.reason


def test_first_full_match_wins() -> None:
    assert rewards.match_contract(CFG.contracts, "scheme-lisp").name == "scheme-.*"
    assert rewards.match_contract(CFG.contracts, "my-scheme-lisp").name == "default"
    assert rewards.match_contract(CFG.contracts, "nexushive-setup-2").name == "default"


def test_clean_message_drops_comments_and_scissors() -> None:
    text = "fix: x\n# Please enter\nbody\n# ------------------------ >8 ------------------------\nsecurity diff"
    assert rewards.clean_message(text) == "fix: x\nbody"


# --- amounts -------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["NaN", "nan", "inf", "-inf", "1e999", "-5", "0", "0.00001", "abc", "", "1" * 50])
def test_hostile_amounts_refused(bad: str) -> None:
    with pytest.raises(UserError):
        to_units(bad)


def test_amount_text_is_exact() -> None:
    assert fmt(to_units("178.2")) == "178.2"
    assert fmt(to_units("0.0001")) == "0.0001"
    assert str(to_decimal(to_units("450.0"))) == "450"
    assert round_cost(Decimal("0.00005")) == 1  # costs round up
    assert round_reward(Decimal("0.00005")) == 0 and round_reward(Decimal("0.00015")) == 2  # half-even


def test_seed_llm_price_is_exact() -> None:
    # 5,000 claude-opus tokens at 15 per 1K = 75; 1 llama token = 0.0001 = one unit.
    assert round_cost(Decimal(5000) / 1000 * CFG.model("claude-opus").cost_per_1k) == 75 * SCALE
    assert round_cost(Decimal(1) / 1000 * CFG.model("llama3.2").cost_per_1k) == 1


@given(st.integers(0, 10**12), st.dictionaries(st.text("abcdef", min_size=1, max_size=3), st.integers(0, 10**9),
                                             min_size=1, max_size=8))
def test_split_sums_exactly_and_is_proportional(total: int, weights: dict[str, int]) -> None:
    shares = split(total, weights)
    whole = sum(weights.values())
    if whole == 0:
        assert set(shares.values()) == {0}
        return
    assert sum(shares.values()) == total
    for name, w in weights.items():
        exact = Decimal(total) * w / whole
        assert abs(shares[name] - exact) < 1


def test_sixty_forty() -> None:
    assert split(100 * SCALE, {"a": 600, "b": 400}) == {"a": 60 * SCALE, "b": 40 * SCALE}


# --- config validation ---------------------------------------------------------------
def parse(text: str) -> config.Config:
    return config.parse(text, None)


def test_defaults_are_the_seed_tables() -> None:
    assert {a: str(CFG.agents[a].base_rate) for a in CFG.agents} == {
        "claude": "150", "builder": "120", "lambda": "110", "spark": "115", "observer": "100", "zero": "90"}
    assert CFG.agent("builder").model_for("coding") == "qwen2.5-coder"
    assert CFG.agent("builder").model_for("planning") == "claude-sonnet"
    assert CFG.agent("builder").model_for("chat") == "qwen2.5-coder"
    assert tokens(CFG.limits.burst) == 500 and tokens(CFG.starting_balance) == 10000
    assert [c.name for c in CFG.contracts] == ["nexushive-setup", "claude-monitor", "scheme-.*", "default"]


@pytest.mark.parametrize("patch,needle", [
    ('[exchange]\nbogus = 1\n', "exchange.bogus: unknown key"),
    ('[[contracts]]\nname = "x"\nmultiplier = -1\nbudget = 5\n[[contracts]]\nname = "default"\nbudget = 1\n',
     "contracts[0].multiplier: must be a positive number"),
    ('[[contracts]]\nname = "x"\nmultiplier = 0\nbudget = 5\n[[contracts]]\nname = "default"\nbudget = 1\n',
     "must be a positive number"),
    ('[[contracts]]\nname = "x"\npattern = "(unclosed"\nbudget = 5\n[[contracts]]\nname = "default"\nbudget = 1\n',
     "invalid pattern"),
    ('[[contracts]]\nname = "default"\nbudget = 1\n[[contracts]]\nname = "x"\nbudget = 5\n', "must be"),
    ('[agents.x]\nbase_rate = 1\nprimary_llm = "nope"\n', "unknown model"),
    ('[agents."../../x"]\nbase_rate = 1\nprimary_llm = "llama3.2"\n', "agent names"),
    ('[agents.x]\nbase_rate = nan\nprimary_llm = "llama3.2"\n', "not a finite number"),
    ('[agents.x]\nbase_rate = 1\nprimary_llm = "llama3.2"\n[agents.x]\nlevel = 2\n', "invalid TOML"),
    ('[limits]\nhourly = -5\ndaily = 1\nburst = 1\nreserve = 1\n', "limits.hourly"),
])
def test_config_errors_name_the_key(patch: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(patch)
    assert needle in str(e.value)


def test_config_error_names_the_line() -> None:
    with pytest.raises(ConfigError, match=r"<defaults>:3: exchange.bogus"):
        parse("# a\n[exchange]\nbogus = 1\n")


def test_duplicate_emails_refused() -> None:
    text = ('[agents.a]\nbase_rate = 1\nprimary_llm = "llama3.2"\nemails = ["x@y"]\n'
            '[agents.b]\nbase_rate = 1\nprimary_llm = "llama3.2"\nemails = ["X@y"]\n')
    with pytest.raises(ConfigError, match="already belongs"):
        parse(text)


@pytest.mark.parametrize("pattern, project, wins", [
    ("(a|aa)+$", "a" * 60 + "!", False),
    ("a?" * 40 + "a" * 40, "a" * 40, True),  # exponential for a backtracking engine; linear in RE2
    ("(x+x+)+y", "x" * 5000, False),
])
def test_catastrophic_patterns_match_in_linear_time(pattern: str, project: str, wins: bool) -> None:
    cfg = parse(f'[[contracts]]\nname = "evil"\npattern = "{pattern}"\nbudget = 5\n'
                '[[contracts]]\nname = "default"\nbudget = 1\n')
    assert (rewards.match_contract(cfg.contracts, project).name == "evil") is wins


@given(st.text(alphabet="aZ09_-", max_size=5), st.text(alphabet="aZ09_-.*|()[]\\^$?+{},é", max_size=6))
def test_a_pattern_of_literal_characters_matches_what_re2_matches(pattern: str, project: str) -> None:
    """Literal patterns are answered by equality, without RE2: the same answer RE2 gives."""
    for text in (project, pattern):
        assert patterns.fullmatch(pattern, text) is (patterns.compiled(pattern).fullmatch(text) is not None)


def test_a_cached_config_is_not_compiled_again(tmp_path: Path) -> None:
    """The cache holds a config validated before: loading it compiles no pattern (a hook needs none of RE2
    unless a contract it tries has one)."""
    path = tmp_path / "config.toml"
    path.write_text(config.default_text())
    first = config.load(path)
    patterns.compiled.cache_clear()
    assert config.load(path) == first and patterns.compiled.cache_info().misses == 0


@pytest.mark.parametrize("pattern", [r"(a)\\1", "(?=a)a", "(?<!b)a", "a{1000}{1000}"])
def test_patterns_needing_backtracking_or_huge_programs_are_refused_by_validation(pattern: str) -> None:
    with pytest.raises(ConfigError, match="contracts\\[0\\].pattern"):
        parse(f'[[contracts]]\nname = "x"\npattern = "{pattern}"\nbudget = 5\n'
              '[[contracts]]\nname = "default"\nbudget = 1\n')


_WORDS = ["fix", "FIX", "Fixed", "prefix", "fix_", "_fix", "hot-fix", "hotfix", "docs", "readme", "security",
          "critical", "test", "ſecurity", "İ", "é", "feature", "bug", "x", "six", "SIX", "c++", "-x"]


@given(st.lists(st.lists(st.one_of(st.sampled_from(_WORDS), st.text(max_size=6)), max_size=12)
                .map(lambda ws: " ".join(ws)), max_size=30),
       st.lists(st.lists(st.sampled_from(["fix", "docs", "hot-fix", "-x", "c++", "ſix", "readme", "bug"]),
                         min_size=1, max_size=3), max_size=4))
def test_keyword_bonus_is_the_best_group_with_a_whole_word_in_the_message(messages: list[str],
                                                                         groups: list[list[str]]) -> None:
    """Against each keyword searched on its own: the group chosen has one of its words in the message, no
    group with a higher multiplier has, and nothing is chosen when no keyword is there."""
    import re as stdlib_re

    bonuses = tuple(BonusGroup(f"g{i}", tuple(kws), Decimal(1 + i % 3)) for i, kws in enumerate(groups)) \
        or CFG.bonuses

    def has(group: BonusGroup, message: str) -> bool:
        return any(stdlib_re.search(rf"\b{stdlib_re.escape(k)}\b", message, stdlib_re.IGNORECASE)
                   for k in group.keywords)

    for m in messages:
        group, keyword = rewards.keyword_bonus(bonuses, m)
        present = [g for g in bonuses if has(g, m)]
        if group is None:
            assert not present
            continue
        assert has(group, m) and keyword.lower() in group.keywords
        assert not [g for g in present if g.multiplier > group.multiplier]
