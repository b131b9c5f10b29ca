"""Paying issues: the ledger's view of what is paid, and writing what the engine planned.

Every decision is ``rules.engine.plan_issue``'s (reward, payee, once per close, reopen ->
reversal); this module only reads the ledger for it and writes its plans, under the ledger lock,
in ONE atomic append per call (all or nothing).

Transactions (kind, id, ``ref = issue:<id>``):

* ``award``: ``issue:<id>`` for the first close, ``issue:<id>:2`` for a close after a reversal...;
* ``reversal``: ``reversal:<payment id>`` (the id ``tx reverse`` gives the same correction): the
  payment moved back from the agent to ``world:rewards`` when the issue was seen reopened.  Its
  content depends only on the payment, so two clones that see the same reopen write the same
  transaction.  A reversal never makes a wallet negative: if the agent has spent the tokens, the
  payment stands (and a later close pays nothing new).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any, NamedTuple

from token_exchange import clock
from token_exchange.amounts import Units, fmt, to_decimal
from token_exchange.beads.issues import BeadsDataError, Issue, issue_json, reward_json
from token_exchange.errors import UserError
from token_exchange.ledger.protocols import Index
from token_exchange.ledger.txn import REWARDS, Txn, make_txn
from token_exchange.rules.engine import (
    FOREVER_US,
    ISSUE_REF,
    REVERSAL_PREFIX,
    SOURCE_KINDS,
    IssuePayee,
    IssuePayment,
    IssuePlan,
    issue_time_us,
    plan_issue,
)
from token_exchange.rules.rewards import match_contract

BULK = 64  # more issues than this: read every issue payment in two range scans instead of per issue


def _payment(t: Txn) -> IssuePayment:
    bd = t.breakdown
    return IssuePayment(t.id, t.agent, t.amount, str(t.source.get("closed_at", "")), str(bd.get("priority", "")),
                        str(bd.get("issue_type", "")), t.ts, str(bd.get("payee_from", "")), t.project)


def _issue_of(payment_id: str) -> str:
    """issue:<id> or issue:<id>:<n> -> <id> (bd ids never contain ':')."""
    return payment_id[len(ISSUE_REF):].split(":", 1)[0]


def _cycle(payment_id: str) -> int:
    tail = payment_id[len(ISSUE_REF):].partition(":")[2]
    return int(tail) if tail.isdigit() else 1


class PaidIssues:
    """The engine's read-only view of the issue payments in a ledger index (``IssueLedgerView``), plus
    what a batch being planned has already awarded (so the ``[caps]`` see earlier issues of the batch)."""

    def __init__(self, by_issue: dict[str, list[IssuePayment]], idx: Index | None = None) -> None:
        self.by_issue = by_issue
        self.idx = idx
        self.planned: list[tuple[str, int, Units]] = []  # (agent, time_us, amount) planned in this batch

    def earned(self, agent: str, source: str, since_us: int) -> Units:
        kinds = SOURCE_KINDS.get(source, ())
        total = self.idx.window_sum(agent, kinds, since_us, FOREVER_US) if self.idx is not None and kinds else 0
        if source == "issues":
            total += sum(a for who, t, a in self.planned if who == agent and t >= since_us)
        return total

    def add_planned(self, p: IssuePlan) -> None:
        """Count a planned award towards its agent's caps for the rest of the batch."""
        if p.action == "pay" and p.payee.agent is not None:
            self.planned.append((p.payee.agent, issue_time_us(p.facts), p.amount))

    @classmethod
    def load(cls, idx: Index) -> PaidIssues:
        """Every issue payment and reversal in the ledger (two range scans of the id index)."""
        found: dict[str, list[IssuePayment]] = {}
        reversed_ids: dict[str, str] = {}
        for prefix in (REVERSAL_PREFIX + ISSUE_REF, ISSUE_REF):
            for t in idx.with_id_prefix(prefix):
                if t.kind == "reversal":
                    reversed_ids[t.id[len(REVERSAL_PREFIX):]] = t.id
                elif t.kind == "award":
                    p = _payment(t)
                    found.setdefault(_issue_of(t.id), []).append(
                        p._replace(reversed_by=reversed_ids.get(t.id, "")))
        for payments in found.values():
            payments.sort(key=lambda p: _cycle(p.id))
        return cls(found, idx)

    @classmethod
    def of(cls, idx: Index, issue_ids: Sequence[str]) -> PaidIssues:
        """The payments of these issues only (by their ``ref``; reversals looked up by id)."""
        if len(issue_ids) > BULK:
            return cls.load(idx)
        found: dict[str, list[IssuePayment]] = {}
        for issue_id in dict.fromkeys(issue_ids):
            payments = []
            for t in idx.by_ref(ISSUE_REF + issue_id):
                if t.kind == "award" and _issue_of(t.id) == issue_id:
                    rev = idx.get(REVERSAL_PREFIX + t.id)
                    payments.append(_payment(t)._replace(reversed_by=rev.id if rev is not None else ""))
            if payments:
                found[issue_id] = sorted(payments, key=lambda p: _cycle(p.id))
        return cls(found, idx)

    def issue_payments(self, issue_id: str) -> list[IssuePayment]:
        return self.by_issue.get(issue_id, [])

    def standing(self, issue_id: str) -> IssuePayment | None:
        """The payment that stands for this issue (paid and not reversed), if any."""
        return next((p for p in reversed(self.issue_payments(issue_id)) if not p.reversed_by), None)


def plan(cfg: Any, issue: Issue, payee: IssuePayee, view: PaidIssues, project: str = "",
         as_closed: bool = False) -> IssuePlan:
    """``plan_issue`` for one issue; a bad priority names the record (``issues.jsonl line 11 (tx-7): ...``).
    ``as_closed``: what closing it now would do (previews; an open issue is priced as closed now, so
    the ``[caps]`` windows are the ones a close now falls in)."""
    facts = issue.facts(project)
    if as_closed and facts.status != "closed":
        now = clock.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        facts = facts._replace(status="closed", closed_at=now)
    try:
        return plan_issue(cfg, facts, payee, view)
    except UserError as e:
        raise BeadsDataError(f"{issue.where or issue.id}: {e}") from None


class Outcome(NamedTuple):
    """A plan and what writing it did."""

    issue: Issue
    plan: IssuePlan
    created: bool = False  # a payment or a reversal was written now
    note: str = ""  # why a planned write did not happen

    @property
    def action(self) -> str:
        return self.plan.action

    @property
    def paid(self) -> Units:
        """What this close is paid: new or standing (0 for a reversal)."""
        return self.plan.amount if self.plan.action in ("pay", "paid") else 0

    @property
    def agent(self) -> str | None:
        p = self.plan
        return p.standing.agent if p.standing is not None else p.payee.agent

    def line(self) -> str:
        """One line for people: what happened and why."""
        p = self.plan
        if self.note:
            return f"{self.issue.id}: {self.note}"
        if p.action == "pay":
            return p.describe()
        if p.action == "reverse":
            assert p.standing is not None
            return (f"{self.issue.id}: reopened after it was paid: reversed {fmt(p.amount)} tokens from"
                    f" {p.standing.agent} ({p.txn_id}); closing it again pays again, once")
        return f"{self.issue.id}: " + "; ".join(p.reasons)

    def to_json(self) -> dict[str, Any]:
        p = self.plan
        d: dict[str, Any] = issue_json(self.issue, None)
        if p.reward is not None:
            d.update(reward_json(p.reward))
        d.update(action=p.action, agent=self.agent, paid=self.created and p.action == "pay",
                 already_paid=p.action == "paid", amount=to_decimal(self.paid))
        d["payee_from"] = (p.standing.payee_from or None) if p.standing is not None and p.action == "paid" \
            else (p.payee.source or None)
        if p.payee.detail and p.action in ("pay", "unpaid"):
            d["payee_detail"] = p.payee.detail
        if p.standing is not None:
            d.update(paid_to=p.standing.agent, paid_at=p.standing.ts, payment=p.standing.id)
        if p.action == "reverse":
            d.update(reversed=self.created, reversal=p.txn_id, reversed_amount=to_decimal(p.amount))
        note = self.note or "; ".join(p.reasons[1:] if p.action == "paid" else ())
        if note:
            d["note"] = note
        return d


def _award(p: IssuePlan, issue: Issue, project: str, via: str, contract: str) -> Txn:
    assert p.payee.agent is not None
    source: dict[str, str | int] = {"type": "bd", "issue": issue.id, "via": via}
    if issue.closed_at:
        source["closed_at"] = issue.closed_at
    if contract:
        source["contract"] = contract
    return make_txn(p.txn_id, "award", REWARDS, p.payee.agent, p.amount, agent=p.payee.agent, project=project,
                    description=f"closed {issue.id}: {issue.title}", source=source, breakdown=dict(p.breakdown),
                    ref=ISSUE_REF + issue.id)


def _reversal(p: IssuePlan, issue: Issue) -> Txn:
    """Depends only on the payment it reverses (deterministic: every writer writes the same one)."""
    s = p.standing
    assert s is not None
    return make_txn(p.txn_id, "reversal", s.agent, REWARDS, s.amount, agent=s.agent, project=s.project,
                    description=f"reversal of {s.id}: {issue.id} was reopened after it was paid",
                    source={"type": "reversal", "reverses": s.id, "issue": issue.id},
                    breakdown={"reason": "issue reopened after it was paid", "original_kind": "award"},
                    ref=ISSUE_REF + issue.id)


def apply(ex: Any, items: Sequence[tuple[Issue, IssuePayee]], project: str, via: str) -> list[Outcome]:
    """Plan every issue against the ledger as it is under the lock and write the payments and reversals
    in ONE atomic append (all or nothing).  A bad record raises before anything is written."""
    contract = match_contract(ex.cfg.contracts, project).name if project else ""
    outcomes: list[Outcome] = []
    with ex.ledger.locked() as idx:
        view = PaidIssues.of(idx, [i.id for i, _p in items])
        seen: set[str] = set()
        planned = []
        for issue, payee in items:
            if issue.id in seen:
                continue
            seen.add(issue.id)
            p = plan(ex.cfg, issue, payee, view, project)
            view.add_planned(p)
            planned.append((issue, p))
        txns: list[Txn] = []
        pending: list[tuple[int, int]] = []  # (outcome index, txn index)
        taken: dict[str, Units] = {}
        for issue, p in planned:
            note, txn = "", None
            if p.action == "pay":
                assert p.payee.agent is not None
                ex.ensure_open(idx, p.payee.agent)
                txn = _award(p, issue, project, via, contract)
            elif p.action == "reverse":
                assert p.standing is not None
                agent = p.standing.agent
                have = idx.account(agent) - taken.get(agent, 0)
                if have < p.amount:
                    note = (f"reopened after it was paid, but reversing {fmt(p.amount)} tokens would leave {agent}"
                            f" below zero (it has {fmt(have)}): the payment stands")
                else:
                    taken[agent] = taken.get(agent, 0) + p.amount
                    txn = _reversal(p, issue)
            if txn is not None:
                pending.append((len(outcomes), len(txns)))
                txns.append(txn)
            outcomes.append(Outcome(issue, p, note=note))
        if txns:
            appended = ex.ledger.append_many(txns)
            for oi, ti in pending:
                outcomes[oi] = outcomes[oi]._replace(created=appended[ti].created)
    return outcomes
