"""rules.engine.plan_issue: the one place that decides what closing (or reopening) an issue pays."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from token_exchange.amounts import SCALE
from token_exchange.errors import UserError
from token_exchange.rules import config
from token_exchange.rules.engine import (
    IssueFacts,
    IssuePayee,
    IssuePayment,
    IssuePlan,
    instant,
    plan_issue,
)

CFG = config.load(None)
BUILDER = IssuePayee("builder", "assignee", "builder@example.com")
NOBODY = IssuePayee(None, "", "no assignee; no --agent; bd actor 'ci' (from $USER) is not an agent")
T0 = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)


def ts(seconds: int) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


class Ledger:
    """An in-memory ledger of issue payments that applies plans as the adapter writes them."""

    def __init__(self) -> None:
        self.payments: dict[str, list[IssuePayment]] = {}
        self.balance = 0

    def issue_payments(self, issue_id: str) -> Sequence[IssuePayment]:
        return self.payments.get(issue_id, [])

    def earned(self, agent: str, source: str, since_us: int) -> int:
        return 0  # no [caps] in these tests (tests/test_caps.py covers them)

    def apply(self, p: IssuePlan) -> None:
        got = self.payments.setdefault(p.facts.id, [])
        if p.action == "pay":
            assert p.payee.agent and p.txn_id not in {x.id for x in got}
            got.append(IssuePayment(p.txn_id, p.payee.agent, p.amount, p.facts.closed_at, p.facts.priority,
                                    p.facts.issue_type))
            self.balance += p.amount
        elif p.action == "reverse":
            assert p.standing is not None and p.txn_id == "reversal:" + p.standing.id
            got[got.index(p.standing)] = p.standing._replace(reversed_by=p.txn_id)
            self.balance -= p.amount


def facts(status: str = "closed", at: int = 0, **kw: object) -> IssueFacts:
    base: dict[str, Any] = {"id": "tx-b71c", "title": "Fix rounding", "status": status, "priority": "P2", "issue_type": "bug",
                "closed_at": ts(at) if status == "closed" else "", "updated_at": ts(at)}
    base.update(kw)
    return IssueFacts(**base)


def test_a_closed_p2_bug_pays_450_once():
    led = Ledger()
    p = plan_issue(CFG, facts(), BUILDER, led)
    assert (p.action, p.txn_id, p.amount) == ("pay", "issue:tx-b71c", 450 * SCALE)
    assert p.breakdown == {"priority": "P2", "priority_tokens": "300", "issue_type": "bug", "multiplier": "1.5",
                           "multiplier_from": "type bug", "payee_from": "assignee"}
    assert "payee from assignee builder@example.com" in p.reasons
    led.apply(p)
    again = plan_issue(CFG, facts(at=5), BUILDER, led)  # bd re-closes a closed issue: it succeeds
    assert again.action == "paid" and again.amount == 450 * SCALE and again.txn_id == ""
    changed = plan_issue(CFG, facts(at=9, priority="P0"), BUILDER, led)
    assert changed.action == "paid" and "the first payment stands" in changed.describe()


@pytest.mark.parametrize("why", ["a wisp (ephemeral issue)", "a gate", "a template"])
def test_what_is_not_work_is_never_paid(why):
    p = plan_issue(CFG, facts(not_work=why), BUILDER, Ledger())
    assert p.action == "not-work" and p.amount == 0 and why in p.describe()


def test_nobody_to_pay_and_unconfigured_priority():
    p = plan_issue(CFG, facts(), NOBODY, Ledger())
    assert p.action == "unpaid" and p.reward is not None and "bd actor 'ci'" in p.describe()
    with pytest.raises(UserError, match="no reward configured for priority P7"):
        plan_issue(CFG, facts(priority="P7"), BUILDER, Ledger())


def test_reopen_reverses_that_payment_and_a_later_close_pays_once():
    led = Ledger()
    led.apply(plan_issue(CFG, facts(at=0), BUILDER, led))
    stale = plan_issue(CFG, facts("open", at=-60), BUILDER, led)  # an export written before the close
    assert stale.action == "open" and "older than the close" in stale.describe()
    r = plan_issue(CFG, facts("open", at=10), BUILDER, led)
    assert (r.action, r.txn_id, r.amount) == ("reverse", "reversal:issue:tx-b71c", 450 * SCALE)
    led.apply(r)
    assert plan_issue(CFG, facts("open", at=11), BUILDER, led).action == "open"  # reversed once
    old = plan_issue(CFG, facts(at=0), BUILDER, led)  # the reversed close, seen again (a stale export)
    assert old.action == "reversed" and "only a later close pays again" in old.describe()
    again = plan_issue(CFG, facts(at=20), BUILDER, led)
    assert (again.action, again.txn_id) == ("pay", "issue:tx-b71c:2")
    led.apply(again)
    assert led.balance == 450 * SCALE


def test_a_reopen_in_the_same_second_as_the_close_is_still_a_reopen():
    """bd stores whole seconds: a record at least as new as the paid close is taken as the reopen."""
    led = Ledger()
    led.apply(plan_issue(CFG, facts(at=0), BUILDER, led))
    assert plan_issue(CFG, facts("open", at=0), BUILDER, led).action == "reverse"
    assert plan_issue(CFG, facts("open", at=0, updated_at="yesterday"), BUILDER, led).action == "open"


@pytest.mark.parametrize("text,expect", [
    ("2026-01-05T09:00:00.123456789-08:00", (1767632400, 123456789)),
    ("2026-02-01T12:00:00Z", (1769947200, 0)),
    ("2026-01-10 12:00:00.5+09:00", (1768014000, 500000000)),
    ("2026-01-10T12:00:00", None), ("2026-01-10", None), ("", None), ("2026-01-10T12:00:00.x1Z", None),
    ("2026-13-10T12:00:00Z", None)])
def test_instants(text, expect):
    assert instant(text) == expect


EVENTS = st.lists(st.tuples(st.sampled_from(["close", "reopen", "stale", "reclose"]), st.integers(0, 5)),
                  max_size=25)


@settings(max_examples=300, deadline=None)
@given(EVENTS, st.booleans())
def test_any_history_pays_the_issue_once_when_it_ends_closed_and_never_twice(events, payee_known):
    """Whatever mix of closes, re-closes, reopens and stale records (each seen by some path, in time
    order), at most one payment stands, and the issue ends paid exactly once if it ends closed (and
    someone could be paid), never if it ends open."""
    led = Ledger()
    payee = BUILDER if payee_known else NOBODY
    now, status = 0, "open"
    for what, step in events:
        now += step
        if what in ("close", "reclose"):
            status = "closed"
            f = facts("closed", at=now)
        elif what == "reopen":
            status = "open"
            f = facts("open", at=now)
        else:  # a stale record from before the last change
            f = facts("open" if status == "closed" else "closed", at=now - 100)
        led.apply(plan_issue(CFG, f, payee, led))
        standing = [p for p in led.issue_payments("tx-b71c") if not p.reversed_by]
        assert len(standing) <= 1
    led.apply(plan_issue(CFG, facts(status, at=now + 1), payee, led))
    expected = 450 * SCALE if status == "closed" and payee_known else 0
    assert led.balance == expected
