"""Properties of the one pricing engine (``rules/engine.py``), on random configs and random commits.

The engine is pure, so these run without git or a ledger: a sequence of commits is priced the way the
hooks pay it (each plan applied to an ``Overlay`` before the next), and the invariants every payer
relies on are checked on every step.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_report_equals_hooks import config_spec, config_text
from token_exchange.amounts import SCALE
from token_exchange.rules import config as config_mod
from token_exchange.rules.engine import (
    CommitFacts,
    IssueFacts,
    IssuePayee,
    NothingPaid,
    Overlay,
    plan_commit,
    plan_issue,
)
from token_exchange.rules.rewards import match_contract

EMAILS = ["claude@aygp-dr.ai", "builder@aygp-dr.ai", "zero@aygp-dr.ai", "someone@example.org"]
SUBJECTS = ["fix: a bug", "docs: readme", "security hotfix", "feat: thing", "fixup! feat: thing", "test: more",
            "refactor: tidy", 'Revert "feat: thing"', "Fix the BUG", "prefix: not a keyword"]
PROJECTS = ["nexushive-setup", "claude-monitor", "dotfiles", "scheme-compiler"]
T = 1_800_000_000 * 1_000_000

commit = st.fixed_dictionaries({
    "author": st.sampled_from(EMAILS),
    "subject": st.sampled_from(SUBJECTS),
    "co": st.lists(st.sampled_from(EMAILS), max_size=3),
    "project": st.sampled_from(PROJECTS),
    "parents": st.sampled_from([1, 1, 1, 2]),
    "change": st.integers(0, 6),  # the same change number: a rewrite of an earlier commit
    "how": st.sampled_from(["id", "alias", "origin"]),  # how a rewrite is known to be the same change
})


def facts(n: int, c: dict[str, object]) -> CommitFacts:
    body = "".join(f"\nCo-authored-by: X <{e}>" for e in c["co"])  # type: ignore[attr-defined]
    change = f"R{c['change']:040d}"
    rid, aliases, origins = {"id": (change, (), ()), "alias": (f"patch-{n}", (change,), ()),
                             "origin": (f"sha-{n}", (), (change,))}[str(c["how"])]
    return CommitFacts(str(c["author"]), f"{c['subject']}\n{body}", str(c["project"]), int(c["parents"]),  # type: ignore[call-overload]
                       rid, aliases, origins, f"{n:040x}", T + n)


@settings(max_examples=150, deadline=None)
@given(spec=config_spec, commits=st.lists(commit, min_size=1, max_size=12))
def test_every_plan_keeps_the_invariants(spec: dict[str, object], commits: list[dict[str, object]]) -> None:
    cfg = config_mod.parse(config_text(spec), None)
    view = Overlay(NothingPaid())
    paid_changes: dict[str, int] = {}  # change -> total paid for it
    for n, c in enumerate(commits):
        f = facts(n, c)
        plan = plan_commit(cfg, f, view)
        assert plan == plan_commit(cfg, f, view)  # pure: the same facts and view, the same plan
        change = f"R{c['change']:040d}"
        if plan.status == "unmatched":
            assert plan.amount == 0 and not plan.shares
            continue
        if change in paid_changes:  # once per change: a rewrite, however it is known, pays nothing new
            assert plan.status == "paid" and plan.amount == paid_changes[change] and not plan.shares
            continue
        assert plan.status in ("pay", "excluded")
        assert plan.reward is not None and plan.agents[0] == plan.reward.agent
        assert sum(s.uncut for s in plan.shares if s.cut) + sum(s.amount for s in plan.shares if not s.cut) \
            == plan.reward.amount  # the split is exact: shares sum to the reward before caps
        uncut = [s.uncut if s.cut else s.amount for s in plan.shares]
        assert max(uncut) - min(uncut) <= 1  # equal shares, to the unit (largest remainder)
        assert all(0 <= s.amount <= (s.uncut if s.cut else s.amount) for s in plan.shares)  # caps only cut
        terms = match_contract(cfg.contracts, f.project)
        left = max(terms.budget - view.contract_paid(terms.name), 0) if terms.budget is not None else None
        if plan.status == "excluded":
            assert plan.reward.amount == 0
        else:
            gross = Decimal(cfg.agent(plan.agents[0]).base_rate) * terms.multiplier * plan.reward.bonus
            exact = int((gross * SCALE).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
            assert plan.reward.amount == (exact if left is None else min(exact, left))  # never past the budget
        view.apply(plan)
        paid_changes[change] = plan.amount
    for k in cfg.contracts:  # a budget is never exceeded over the whole sequence
        if k.budget is not None:
            assert view.contract_paid(k.name) <= k.budget


class OnePayment:
    """An issue ledger view holding what ``plan_issue`` plans, as the adapter writes it."""

    def __init__(self) -> None:
        self.paid: list = []

    def issue_payments(self, issue_id: str) -> list:
        return list(self.paid)

    def earned(self, agent: str, source: str, since_us: int) -> int:
        return sum(p.amount for p in self.paid if not p.reversed_by)


@settings(max_examples=100, deadline=None)
@given(priority=st.sampled_from(["P0", "P1", "P2", "P3", "P4"]),
       kind=st.sampled_from(["bug", "feature", "task", "epic", "chore", "decision"]),
       closes=st.lists(st.sampled_from(["closed", "open"]), min_size=1, max_size=8))
def test_an_issue_is_paid_once_per_close_that_stands(priority: str, kind: str, closes: list[str]) -> None:
    from token_exchange.rules.engine import IssuePayment

    cfg = config_mod.load(None)
    view = OnePayment()
    payee = IssuePayee("builder", "assignee", "builder@aygp-dr.ai")
    for n, status in enumerate(closes):
        at = f"2026-01-01T12:00:{n:02d}Z"
        p = plan_issue(cfg, IssueFacts("tx-1", "t", status, priority, kind, closed_at=at if status == "closed" else "",
                                       updated_at=at), payee, view)
        standing = [x for x in view.paid if not x.reversed_by]
        assert len(standing) <= 1
        if p.action == "pay":
            assert not standing and p.reward is not None and p.amount == p.reward.amount > 0
            view.paid.append(IssuePayment(p.txn_id, "builder", p.amount, at, priority, kind))
        elif p.action == "reverse":
            assert p.standing == standing[0] and p.amount == standing[0].amount
            view.paid[view.paid.index(p.standing)] = p.standing._replace(reversed_by=p.txn_id)
        else:
            assert p.action in ("paid", "open") and (p.action != "paid" or standing)
    # the seed's worked figure, through the same engine
    p2 = plan_issue(cfg, IssueFacts("tx-2", "t", "closed", "P2", "bug", closed_at="2026-01-01T12:00:00Z"), payee,
                    OnePayment())
    assert p2.action == "pay" and p2.amount == 450 * SCALE
