"""Reward rules as pure functions: no I/O, no clock, no ledger.

commit reward = agent base rate x contract multiplier x keyword bonus, capped by
what is left of the contract's budget; issue reward = priority tokens x type
multiplier.  Every result carries its breakdown so users see *why*.
"""

# No ``from __future__ import annotations``: typing.NamedTuple would compile each of these classes' string
# annotations into a ForwardRef (~10 us a field), and every hook process builds them.

import re
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple

from token_exchange.amounts import Units, fmt, round_reward
from token_exchange.errors import UserError
from token_exchange.rules.config import BonusGroup, CommitRules, Config, Contract
from token_exchange.rules.patterns import fullmatch

# Compiled (and cached by ``re``) the first time a message needs them: most messages never do.
SCISSORS = r"(?m)^# -+ >8 -+$"
FIXUPS = ("fixup! ", "squash! ", "amend! ")
REVERT = r'(?m)^Revert "|^Reapply "|^This reverts commit [0-9a-f]{7,}'
MAX_MESSAGE = 65536
MAX_PROJECT = 200
TYPE_ALIASES = {"enhancement": "feature", "feat": "feature", "doc": "docs", "documentation": "docs"}


def clean_message(text: str, comment_char: str = "#") -> str:
    """The message git will record: drop everything after the scissors line and comments."""
    m = re.search(SCISSORS, text) if " >8 " in text else None
    if m:
        text = text[: m.start()]
    lines = [ln for ln in text.splitlines() if not ln.startswith(comment_char)]
    return "\n".join(lines).strip()[:MAX_MESSAGE]


@lru_cache(maxsize=64)
def _keywords(bonuses: tuple[BonusGroup, ...]) -> tuple[tuple[BonusGroup, re.Pattern[str]], ...]:
    """Each group with one whole-word, case-insensitive pattern for its keywords, highest multiplier first
    (ties in listed order); once per set of bonus groups.  The keywords are escaped literals (linear to
    search) in sorted order, so a search finds the leftmost keyword and, of those starting there, the
    smallest.  One pattern per group, not one for all: a match can hide an overlapping keyword of
    another group ("hot-fix" hides "fix"), never one of its own group's (any match of a group counts)."""
    order = sorted(range(len(bonuses)), key=lambda i: (-bonuses[i].multiplier, i))
    return tuple((bonuses[i], re.compile(r"\b(?:" + "|".join(re.escape(k) for k in sorted(bonuses[i].keywords))
                                         + r")\b", re.IGNORECASE)) for i in order if bonuses[i].keywords)


# (bonus groups, message -> keyword_bonus' answer), newest first: a pure function of the two, and the same
# messages come back (a simulation draws from a few hundred; a report prices a branch's history).  Keyed by
# the identity of the groups tuple (held, so its id is not reused); bounded in size and in message length.
_bonus_memo: list[tuple[tuple[BonusGroup, ...], dict[str, tuple[BonusGroup | None, str]]]] = []
MEMO_CONFIGS = 8
MEMO_ENTRIES = 4096
MEMO_MESSAGE = 1000


def keyword_bonus(bonuses: tuple[BonusGroup, ...], message: str) -> tuple[BonusGroup | None, str]:
    """The matching bonus group with the highest multiplier (no compounding) and its keyword.

    Groups are tried highest multiplier first, so the first group with a whole-word keyword in the
    message is the answer; ties go to the group listed first.  The keyword shown is that group's
    keyword found first in the message (the smallest of those starting at the same place).
    Remembered per message (``_bonus_memo``): the same message is searched once."""
    if type(message) is not str or len(message) > MEMO_MESSAGE:
        return _keyword_bonus(bonuses, message)
    memo = None
    for held, table in _bonus_memo:
        if held is bonuses:
            memo = table
            break
    if memo is None:
        memo = {}
        _bonus_memo.insert(0, (bonuses, memo))
        del _bonus_memo[MEMO_CONFIGS:]
    found = memo.get(message)
    if found is None:
        if len(memo) >= MEMO_ENTRIES:
            memo.clear()
        found = memo[message] = _keyword_bonus(bonuses, message)
    return found


def _keyword_bonus(bonuses: tuple[BonusGroup, ...], message: str) -> tuple[BonusGroup | None, str]:
    text = message[:MAX_MESSAGE]
    for group, pattern in _keywords(bonuses):
        m = pattern.search(text)
        if m:
            word = m.group(0).casefold()
            return group, next((k for k in sorted(group.keywords) if k.casefold() == word), m.group(0))
    return None, ""


def match_contract(contracts: tuple[Contract, ...], project: str) -> Contract:
    """First contract whose pattern fully matches ``project``; "default" catches the rest.

    Patterns are user-supplied: matched by the one pattern policy (``rules.patterns``, linear time).
    """
    return _match_contract(contracts, project[:MAX_PROJECT])


@lru_cache(maxsize=256)
def _match_contract(contracts: tuple[Contract, ...], project: str) -> Contract:
    """Memoised: a report prices thousands of commits on one project."""
    for c in contracts:
        if c.pattern is None or fullmatch(c.pattern, project):
            return c
    return contracts[-1]


def exclusion(message: str, parents: int, rules: CommitRules) -> str | None:
    """Why a commit earns nothing by the commit rules, or None."""
    if parents > 1 and not rules.pay_merges:
        return "merge commit"
    if message.startswith(FIXUPS) and not rules.pay_fixups:
        return "fixup/squash commit"
    # The literal checks skip the regex scan for nearly every message (a report prices thousands).
    if ('Revert "' in message or 'Reapply "' in message or "This reverts commit " in message) and \
            re.search(REVERT, message) and not rules.pay_reverts:
        return "revert"
    return None


class CommitReward(NamedTuple):
    agent: str
    project: str
    base_rate: Decimal
    contract: str
    multiplier: Decimal
    bonus_group: str
    keyword: str
    bonus: Decimal
    gross: Units
    amount: Units
    budget: Units
    budget_left: Units
    capped: bool
    excluded: str | None

    @property
    def reason(self) -> str:
        if self.excluded:
            return f"{self.excluded}: earns nothing"
        why = f"{self.base_rate} base x {self.multiplier} ({self.contract}) x {self.bonus}"
        why += f" ({self.keyword})" if self.keyword else " (no keyword)"
        if self.capped:
            why += (f", capped to {fmt(self.amount)}: contract budget exhausted" if self.amount == 0
                    else f", capped from {fmt(self.gross)} to the {fmt(self.amount)} left in the contract budget")
        return why

    def breakdown(self) -> dict[str, Any]:
        d: dict[str, Any] = {"base_rate": str(self.base_rate), "contract": self.contract,
                             "multiplier": str(self.multiplier), "bonus": str(self.bonus),
                             "gross": fmt(self.gross), "budget_left": fmt(self.budget_left)}
        if self.keyword:
            d["keyword"] = self.keyword
            d["bonus_group"] = self.bonus_group
        if self.capped:
            d["capped"] = 1
        if self.excluded:
            d["excluded"] = self.excluded
        return d


NO_BONUS = Decimal(1)


def commit_reward(cfg: Config, agent: str, project: str, message: str, parents: int = 1,
                  contract_paid: Units = 0, contract: Contract | None = None) -> CommitReward:
    """What a commit by ``agent`` on ``project`` earns, given what its contract has paid (``contract``: the
    one ``match_contract`` gave for ``project``, when the caller has it already)."""
    a = cfg.agent(agent)
    contract = contract or match_contract(cfg.contracts, project)
    group, keyword = keyword_bonus(cfg.bonuses, message)
    bonus = group.multiplier if group else NO_BONUS
    excluded = exclusion(message, parents, cfg.commit_rules)
    gross = 0 if excluded else _gross(a.base_rate, contract.multiplier, bonus)
    left = max(contract.budget - contract_paid, 0)  # capped by what is left of the contract's budget
    amount = min(gross, left)
    return CommitReward(agent, project, a.base_rate, contract.name, contract.multiplier, group.name if group else "",
                        keyword, bonus, gross, amount, contract.budget, left, amount < gross, excluded)


@lru_cache(maxsize=1024)
def _gross(base_rate: Decimal, multiplier: Decimal, bonus: Decimal) -> Units:
    """base rate x contract multiplier x keyword bonus in units, half-even (memoised: a config has a few
    dozen combinations; equal Decimals give the same product's value, so the same units)."""
    return round_reward(base_rate * multiplier * bonus)


class IssueReward(NamedTuple):
    priority: str
    base: Decimal
    issue_type: str
    multiplier: Decimal
    multiplier_from: str
    amount: Units

    @property
    def reason(self) -> str:
        return f"{self.priority} {self.base} x {self.multiplier} ({self.multiplier_from})"

    def breakdown(self) -> dict[str, Any]:
        return {"priority": self.priority, "priority_tokens": str(self.base), "issue_type": self.issue_type,
                "multiplier": str(self.multiplier), "multiplier_from": self.multiplier_from}


def priority_label(priority: Any) -> str:
    """bd priorities are integers 0-4 (P0-P4); accept "P2"/"p2"/"2" too."""
    if isinstance(priority, bool):
        raise UserError(f"invalid priority {priority!r}")
    if isinstance(priority, int):
        if not 0 <= priority <= 9:
            raise UserError(f"priority {priority} is out of range 0-9")
        return f"P{priority}"
    text = str(priority).strip().upper()
    if re.fullmatch(r"P?[0-9]", text):
        return "P" + text[-1]
    raise UserError(f"invalid priority {str(priority)[:20]!r}")


def issue_reward(cfg: Config, priority: Any, issue_type: str, labels: tuple[str, ...] = ()) -> IssueReward:
    """Priority tokens x the highest applicable type multiplier (type or a label named after a type)."""
    label = priority_label(priority)
    if label not in cfg.issue_priority:
        raise UserError(f"no reward configured for priority {label} (issues.priority)")
    base = cfg.issue_priority[label]
    kind = TYPE_ALIASES.get(issue_type.lower(), issue_type.lower()) if issue_type else "task"
    mult, source = cfg.issue_types.get(kind, cfg.default_type_multiplier), (
        f"type {kind}" if kind in cfg.issue_types else f"type {kind} (default)")
    for lab in labels:
        lab_l = str(lab).lower()
        m = cfg.issue_types.get(lab_l)
        if m is not None and m > mult:
            mult, source = m, f"label {lab_l}"
    return IssueReward(label, base, kind, mult, source, round_reward(base * mult))
