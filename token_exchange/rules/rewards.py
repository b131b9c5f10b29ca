"""Reward rules as pure functions: no I/O, no clock, no ledger.

commit reward = agent base rate x contract multiplier x keyword bonus, capped by
what is left of the contract's budget; issue reward = priority tokens x type
multiplier.  Every result carries its breakdown so users see *why*.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple

from token_exchange.amounts import Units, fmt, round_reward
from token_exchange.rules.config import BonusGroup, CommitRules, Config, Contract
from token_exchange.errors import UserError
from token_exchange.rules.patterns import fullmatch

SCISSORS = re.compile(r"^# -+ >8 -+$", re.M)
FIXUP = re.compile(r"^(fixup|squash|amend)! ")
REVERT = re.compile(r'^Revert "|^Reapply "|^This reverts commit [0-9a-f]{7,}', re.M)
MAX_MESSAGE = 65536
MAX_PROJECT = 200
TYPE_ALIASES = {"enhancement": "feature", "feat": "feature", "doc": "docs", "documentation": "docs"}


def clean_message(text: str, comment_char: str = "#") -> str:
    """The message git will record: drop everything after the scissors line and comments."""
    m = SCISSORS.search(text)
    if m:
        text = text[: m.start()]
    lines = [ln for ln in text.splitlines() if not ln.startswith(comment_char)]
    return "\n".join(lines).strip()[:MAX_MESSAGE]


_keyword_cache: tuple[tuple[BonusGroup, ...], tuple[re.Pattern[str], dict[str, list[int]]]] | None = None


def _keywords(bonuses: tuple[BonusGroup, ...]) -> tuple[re.Pattern[str], dict[str, list[int]]]:
    """One alternation of every keyword (longest first) and, per keyword, the groups that list it.

    Cached by identity (a config's tuple is reused for every commit; hashing it each time costs more
    than the match)."""
    global _keyword_cache
    if _keyword_cache is not None and _keyword_cache[0] is bonuses:
        return _keyword_cache[1]
    owners: dict[str, list[int]] = {}
    for i, group in enumerate(bonuses):
        for k in group.keywords:
            owners.setdefault(k.lower(), []).append(i)
    words = sorted(owners, key=lambda k: (-len(k), k))
    result = (re.compile(r"\b(" + "|".join(re.escape(k) for k in words) + r")\b", re.IGNORECASE), owners)
    _keyword_cache = (bonuses, result)
    return result


def keyword_bonus(bonuses: tuple[BonusGroup, ...], message: str) -> tuple[BonusGroup | None, str]:
    """The matching bonus group with the highest multiplier (no compounding) and its keyword.

    Ties go to the group listed first; the keyword shown is that group's first one in the message.
    One regex pass over the message, however many groups (a report prices thousands of commits).
    """
    if not bonuses:
        return None, ""
    pattern, owners = _keywords(bonuses)
    return _best(bonuses, owners, [m.group(1) for m in pattern.finditer(message[:MAX_MESSAGE])])


def keyword_bonuses(bonuses: tuple[BonusGroup, ...], messages: list[str]) -> list[tuple[BonusGroup | None, str]]:
    """``keyword_bonus`` of every message, with one regex pass over all of them (a report prices 10,000).

    The messages are scanned joined by a line holding only NUL: no keyword contains NUL, and each
    message still starts and ends at a line boundary, so every match is one ``keyword_bonus`` finds.
    """
    none: tuple[BonusGroup | None, str] = (None, "")
    if not bonuses or not messages:
        return [none] * len(messages)
    from bisect import bisect_right

    pattern, owners = _keywords(bonuses)
    parts = [m[:MAX_MESSAGE] for m in messages]
    starts: list[int] = []
    pos = 0
    for part in parts:
        starts.append(pos)
        pos += len(part) + 3
    text = "\n\x00\n".join(parts)
    found: dict[int, list[str]] = {}
    index, end = -1, -1  # the message the previous match fell in, and where it ends (matches come in order)
    for start, word in _ascii_matches(owners, text) if text.isascii() else (
            (m.start(), m.group(1)) for m in pattern.finditer(text)):
        if start >= end:
            index = bisect_right(starts, start) - 1
            end = starts[index + 1] if index + 1 < len(starts) else pos
            found[index] = [word]
        else:
            found[index].append(word)
    out = [none] * len(messages)
    for i, words in found.items():
        out[i] = _best(bonuses, owners, words)
    return out


_ascii_cache: tuple[dict[str, list[int]], re.Pattern[bytes] | None] | None = None
_IS_WORD = [48 <= b <= 57 or 65 <= b <= 90 or b == 95 or 97 <= b <= 122 for b in range(256)]  # ASCII \\w


def _ascii_matches(owners: dict[str, list[int]], text: str) -> list[tuple[int, str]]:
    """The matches of ``_keywords``' pattern in ASCII ``text``, about 5x faster.

    sre scans a case-insensitive alternation that starts with ``\\b`` position by position; on ASCII
    text (and ASCII keywords) lowercasing changes no length and no match, bytes are scanned faster than
    str, and the pattern without its leading ``\\b`` lets sre skip ahead on first characters. A
    candidate whose start is not a word boundary is dropped and the search resumes one character
    later, so nothing is missed.
    """
    global _ascii_cache
    if _ascii_cache is None or _ascii_cache[0] is not owners:
        words = sorted(owners, key=lambda k: (-len(k), k))
        fast = re.compile(("(" + "|".join(re.escape(k) for k in words) + r")\b").encode()) if all(
            k.isascii() for k in words) else None
        _ascii_cache = (owners, fast)
    fast = _ascii_cache[1]
    if fast is None:
        pattern = _keyword_cache[1][0] if _keyword_cache else None  # pragma: no cover - set by _keywords
        return [(m.start(), m.group(1)) for m in pattern.finditer(text)] if pattern else []
    low = text.lower().encode("ascii")
    out: list[tuple[int, str]] = []
    words: dict[bytes, str] = {}
    is_word = _IS_WORD
    pos = 0
    while True:
        for m in fast.finditer(low, pos):
            s = m.start()
            # a \b before the match: a word character on exactly one side
            if (s > 0 and is_word[low[s - 1]]) != is_word[low[s]]:
                w = m.group(1)
                out.append((s, words.get(w) or words.setdefault(w, w.decode("ascii"))))
            else:
                pos = s + 1
                break
        else:
            return out


def _best(bonuses: tuple[BonusGroup, ...], owners: dict[str, list[int]],
          words: list[str]) -> tuple[BonusGroup | None, str]:
    """Of the groups the matched words (in message order) belong to: the highest multiplier, ties to the
    group listed first, with that group's first keyword in the message."""
    if len(words) == 1:  # the common case: one keyword in the message
        word = words[0].lower()
        groups = owners.get(word, ())
        if len(groups) == 1:
            return bonuses[groups[0]], word
    first: dict[int, str] = {}
    for w in words:
        word = w.lower()
        for i in owners.get(word, ()):
            first.setdefault(i, word)
    if not first:
        return None, ""
    best = min(first, key=lambda i: (-bonuses[i].multiplier, i))
    return bonuses[best], first[best]


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
    if FIXUP.match(message) and not rules.pay_fixups:
        return "fixup/squash commit"
    # The literal checks skip the regex scan for nearly every message (a report prices thousands).
    if ('Revert "' in message or 'Reapply "' in message or "This reverts commit " in message) and \
            REVERT.search(message) and not rules.pay_reverts:
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


def commit_reward(cfg: Config, agent: str, project: str, message: str, parents: int = 1,
                  contract_paid: Units = 0) -> CommitReward:
    """What a commit by ``agent`` on ``project`` earns, given what its contract has paid."""
    a = cfg.agent(agent)
    contract = match_contract(cfg.contracts, project)
    group, keyword = keyword_bonus(cfg.bonuses, message)
    bonus = group.multiplier if group else Decimal(1)
    excluded = exclusion(message, parents, cfg.commit_rules)
    gross = 0 if excluded else round_reward(a.base_rate * contract.multiplier * bonus)
    uncapped = CommitReward(agent, project, a.base_rate, contract.name, contract.multiplier,
                            group.name if group else "", keyword, bonus, gross, gross, contract.budget,
                            contract.budget, False, excluded)
    return with_budget(uncapped, contract_paid)


def with_budget(reward: CommitReward, contract_paid: Units) -> CommitReward:
    """The same reward capped by what is left of its contract's budget after ``contract_paid``."""
    left = max(reward.budget - contract_paid, 0)
    amount = min(reward.gross, left)
    r = reward
    return CommitReward(r.agent, r.project, r.base_rate, r.contract, r.multiplier, r.bonus_group, r.keyword,
                        r.bonus, r.gross, amount, r.budget, left, amount < r.gross, r.excluded)


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
