"""[caps] and [settlement] in the config, and the engine's cap rule (pure: a view says what was earned)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from token_exchange.amounts import SCALE, Units
from token_exchange.errors import ConfigError
from token_exchange.rules import config as config_mod
from token_exchange.rules.engine import (
    CommitFacts,
    NothingPaid,
    Overlay,
    Payment,
    cap_amount,
    plan_commit,
)

HOUR_US = 3600 * 1_000_000
T = 1_800_000_000 * 1_000_000  # an instant (micros)


def cfg_with(extra: str = "", caps: str = "") -> config_mod.Config:
    text = config_mod.default_text().replace("\n[caps]\n", f"\n[caps]\n{caps}\n", 1) + extra
    return config_mod.parse(text, None)


class Earned(NothingPaid):
    """A ledger view holding what agents earned, at which instants."""

    def __init__(self, entries: Sequence[tuple[str, int, Units]]) -> None:
        self.entries = list(entries)

    def earned(self, agent: str, source: str, since_us: int) -> Units:
        return sum(a for who, t, a in self.entries if who == agent and t >= since_us and source == "commits")


class Issues(NothingPaid):
    """Every agent earned 300 from issues in any window, nothing from commits."""

    def earned(self, agent: str, source: str, since_us: int) -> Units:
        return 300 * SCALE if source == "issues" else 0


def facts(message: str, time_us: int = T, author: str = "claude@aygp-dr.ai", rid: str = "R1") -> CommitFacts:
    return CommitFacts(author, message, "nexushive-setup", 1, rid, time_us=time_us)


# --- config ------------------------------------------------------------------------------------
def test_defaults_settle_immediately_with_no_caps() -> None:
    cfg = config_mod.load(None)
    assert cfg.settlement == config_mod.Settlement("immediate", "main", 30 * 86400, False)
    assert not cfg.on_merge and cfg.caps == () and all(a.caps == () for a in cfg.agents.values())
    assert cfg.limits.spend_provisional  # nothing is provisional in immediate mode


def test_caps_and_per_agent_overrides() -> None:
    cfg = cfg_with('\n[agents.zero.caps]\ncommits = { daily = 10 }\n',
                   caps="commits = { daily = 3000, hourly = 1000 }\nissues = { weekly = 5000 }")
    claude = {(c.source, c.window): c.amount for c in cfg.agents["claude"].caps}
    assert claude == {("commits", "hourly"): 1000 * SCALE, ("commits", "daily"): 3000 * SCALE,
                      ("issues", "weekly"): 5000 * SCALE}
    zero = {(c.source, c.window): c.amount for c in cfg.agents["zero"].caps}
    assert zero[("commits", "daily")] == 10 * SCALE and zero[("commits", "hourly")] == 1000 * SCALE


def test_on_merge_holds_provisional_tokens_back_unless_told_otherwise() -> None:
    on = config_mod.default_text().replace('mode = "immediate"', 'mode = "on-merge"')
    cfg = config_mod.parse(on, None)
    assert cfg.on_merge and not cfg.limits.spend_provisional and not cfg.agents["claude"].limits.spend_provisional
    cfg = config_mod.parse(on.replace("spend_provisional = false", "spend_provisional = true"), None)
    assert cfg.limits.spend_provisional


@pytest.mark.parametrize("patch,needle", [
    (('mode = "immediate"', 'mode = "later"'), "settlement.mode: must be one of immediate, on-merge"),
    (("provisional_ttl = 2592000", "provisional_ttl = 5"), "settlement.provisional_ttl"),
    (("provisional_ttl = 2592000", 'provisional_ttl = "1d"'), "settlement.provisional_ttl"),
    (("spend_provisional = false", 'spend_provisional = "no"'), "settlement.spend_provisional"),
    (('branch = "main"', 'branch = "../x"'), "settlement.branch"),
    (("\n[caps]\n", "\n[caps]\ncommit = { daily = 1 }\n"), "caps.commit: unknown key"),
    (("\n[caps]\n", "\n[caps]\ncommits = { monthly = 1 }\n"), "caps.commits.monthly: unknown key"),
    (("\n[caps]\n", "\n[caps]\ncommits = { daily = -1 }\n"), "caps.commits.daily"),
    (("\n[caps]\n", "\n[caps]\ncommits = { daily = nan }\n"), "caps.commits.daily"),
])
def test_bad_settlement_and_caps_are_one_line_errors(patch: tuple[str, str], needle: str) -> None:
    text = config_mod.default_text().replace(*patch, 1)
    with pytest.raises(ConfigError) as e:
        config_mod.parse(text, None)
    assert needle in str(e.value) and "\n" not in str(e.value)


# --- the engine's rule ----------------------------------------------------------------------------
def test_a_share_over_the_cap_is_cut_to_what_is_left_with_the_reason() -> None:
    cfg = cfg_with(caps="commits = { daily = 1000 }")
    view = Earned([("claude", T - 2 * HOUR_US, 700 * SCALE)])
    plan = plan_commit(cfg, facts("security hotfix"), view)  # 150 x 2.0 x 2.0 = 600, 300 left
    assert [(s.agent, s.amount, s.uncut) for s in plan.shares] == [("claude", 300 * SCALE, 600 * SCALE)]
    assert plan.reward is not None and plan.reward.amount == 600 * SCALE  # the rules' figure; the cap cuts after
    assert "daily commits cap 1000: 700 earned in the window, cut from 600 to 300" in plan.describe()
    assert "cut from 600 to 300" in plan.preview()
    # a day later the window is empty again
    assert plan_commit(cfg, facts("security hotfix", T + 24 * HOUR_US), view).amount == 600 * SCALE


def test_the_tightest_window_wins_and_coauthors_are_capped_apart() -> None:
    cfg = cfg_with('\n[agents.zero.caps]\ncommits = { hourly = 50 }\n', caps="commits = { daily = 1000, hourly = 800 }")
    view = Earned([("claude", T - 30 * 60 * 1_000_000, 500 * SCALE), ("claude", T - 5 * HOUR_US, 400 * SCALE)])
    msg = "fix: pair work\n\nCo-authored-by: zero <zero@aygp-dr.ai>"  # 450, split 225 / 225
    plan = plan_commit(cfg, facts(msg), view)
    # claude: hourly 800 - 500 = 300 left, daily 1000 - 900 = 100 left -> 100; zero: hourly 50
    assert [(s.agent, s.amount) for s in plan.shares] == [("claude", 100 * SCALE), ("zero", 50 * SCALE)]
    assert plan.amount == 150 * SCALE


def test_no_cap_no_cut_and_issue_awards_use_the_same_rule() -> None:
    cfg = cfg_with(caps="issues = { weekly = 500 }")
    assert plan_commit(cfg, facts("fix: x"), Earned([("claude", T, 10**9)])).amount == 450 * SCALE
    view = Issues()
    amount, why = cap_amount(cfg, "claude", "issues", 450 * SCALE, view, T)
    assert amount == 200 * SCALE and "weekly issues cap 500" in why
    assert cap_amount(cfg, "claude", "commits", 450 * SCALE, view, T) == (450 * SCALE, "")


def test_an_overlay_counts_the_range_it_has_planned() -> None:
    cfg = cfg_with(caps="commits = { daily = 1000 }")
    view = Overlay(NothingPaid())
    amounts = []
    for n in range(4):
        plan = plan_commit(cfg, facts("security hotfix", T + n, rid=f"R{n}"), view)
        view.apply(plan)
        amounts.append(plan.amount // SCALE)
    assert amounts == [600, 400, 0, 0]
    assert view.payments(["R1"]) == [Payment("commit:R1", "claude", 400 * SCALE, "", T + 1)]


@settings(max_examples=60, deadline=None)
@given(earned=st.lists(st.tuples(st.integers(0, 48), st.integers(0, 2000)), max_size=8),
       cap=st.integers(0, 3000), gross=st.sampled_from(["fix: a", "docs: b", "security hotfix", "wip"]))
def test_a_cut_never_exceeds_the_cap_nor_the_share(earned: list[tuple[int, int]], cap: int, gross: str) -> None:
    cfg = cfg_with(caps=f"commits = {{ daily = {cap} }}")
    view = Earned([("claude", T - h * HOUR_US, a * SCALE) for h, a in earned])
    plan = plan_commit(cfg, facts(gross), view)
    in_window = sum(a for h, a in earned if h < 24) * SCALE
    uncut = plan.reward.amount if plan.reward else 0
    assert plan.amount == max(0, min(uncut, cap * SCALE - in_window))


# --- real hooks and the report agree on caps ----------------------------------------------------------
def test_hooks_and_report_cut_the_same_commits(repo: Path) -> None:
    import json
    from decimal import Decimal

    from tests.conftest import git, tx
    from tests.test_hooks import change, commit

    text = config_mod.default_text().replace("\n[caps]\n", "\n[caps]\ncommits = { daily = 700 }\n", 1)
    (repo / ".exchange").mkdir()
    (repo / ".exchange" / "config.toml").write_text(text)
    assert tx("init", cwd=repo).code == 0
    git(repo, "add", ".exchange/config.toml")
    git(repo, "commit", "-q", "--no-verify", "-m", "chore: the exchange")
    assert tx("hooks", "install", cwd=repo).code == 0
    git(repo, "switch", "-q", "-c", "feature")
    outs = []
    for n in range(3):
        change(repo, f"f{n}.py")
        outs.append(commit(repo, "-m", f"fix: {n}"))
    assert "cut from 450 to 250" in outs[1] and "cut from 450 to 0" in outs[2]
    r = tx("report", "--base", "main", "--head", "feature", "--json", cwd=repo)
    assert r.code == 0, r.err
    report = json.loads(r.out, parse_float=Decimal)
    assert [(c["amount"], c["flag"]) for c in report["commits"]] == [(450, None), (250, None), (0, None)]
    assert report["total"] == 700
