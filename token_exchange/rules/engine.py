"""The one pricing engine: what a commit pays, to whom, and why.

Long on purpose: one rule, one place.  Every pricing decision (commits and issue closes, contract
budgets, caps, shares) is here and nowhere else; the pure functions and the read-only view
protocols they price against belong together.

Every payer and previewer calls :func:`plan_commit`: ``tx commit``, the post-commit hook (which then
writes the plan), the commit-msg preview, ``tx report`` (with a view of the ledger as it stood before
the range, plus what the range itself has planned so far), settlement and the simulation.  Nothing
else maps authors to agents, checks "already paid", applies a contract budget or splits a reward
among co-authors.

The engine is pure: the rules (``Config``), the facts of one commit, and a read-only
:class:`LedgerView` in; a :class:`CommitPlan` out.  No I/O, no clock, no git: the moment a commit is
priced at (for the ``[caps]`` windows) is one of its facts.
"""

# No ``from __future__ import annotations``: typing.NamedTuple would compile each of these classes' string
# annotations into a ForwardRef (~10 us a field), and every hook process builds them.

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple, Protocol

from token_exchange.amounts import Units, fmt, split
from token_exchange.rules.config import Cap, Config
from token_exchange.rules.identities import agent_for, co_author_emails
from token_exchange.rules.rewards import CommitReward, IssueReward, commit_reward, issue_reward, match_contract

PREFIX = "token-exchange"
COMMIT_REF = "commit:"
SOURCE_KINDS = {"commits": ("earn",), "issues": ("award",)}  # the ledger kinds each ``[caps]`` source counts
FOREVER_US = 2**62  # "no upper bound" for a window sum


class CommitFacts(NamedTuple):
    """What the engine needs to know about one commit (git supplies it; the engine never asks git)."""

    author: str  # author email, .mailmap applied
    message: str  # the message git recorded (comments and scissors removed)
    project: str
    parents: int = 1
    reward_id: str = ""  # the change's id: its own Reward-Id trailer, else patch-<id>, else sha-<sha>
    aliases: tuple[str, ...] = ()  # other ids of this commit (further trailers, its patch id, its sha)
    origins: tuple[str, ...] = ()  # ids of the commits it rewrote (amend, rebase, squash, reset, cherry-pick)
    sha: str = ""
    time_us: int = 0  # the moment it is priced at (micros since the epoch): the caps' windows end here


class Payment(NamedTuple):
    """One share already in the ledger for a change."""

    ref: str  # commit:<reward id>
    agent: str
    amount: Units
    sha: str = ""
    ts_us: int = 0  # when it was recorded (micros since the epoch)


class Earnings(Protocol):
    """What an agent has earned, for the ``[caps]`` windows (every ledger view has it)."""

    def earned(self, agent: str, source: str, since_us: int) -> Units:
        """What ``agent`` earned from ``source`` (``commits`` or ``issues``) at or after ``since_us``."""
        ...


class LedgerView(Earnings, Protocol):
    """The read-only ledger facts a plan depends on."""

    def payments(self, ids: Sequence[str]) -> list[Payment]:
        """The shares recorded for the change known under any of ``ids`` (as its id or an alias)."""
        ...

    def contract_paid(self, contract: str) -> Units:
        """Everything ever paid under ``contract`` (its budget is what is left)."""
        ...


class Share(NamedTuple):
    agent: str
    amount: Units
    cut: str = ""  # why a cap cut this share ("" when it was not cut)
    uncut: Units = 0  # the share before the cut


class CommitPlan(NamedTuple):
    """What paying one commit means, decided before anything is written."""

    facts: CommitFacts
    agents: tuple[str, ...]  # the author's agent first, then co-authoring agents
    reward: CommitReward | None  # None: unmatched, or already paid
    shares: tuple[Share, ...] = ()
    already: tuple[Payment, ...] = ()  # the existing payment of this change (then nothing new is paid)

    @property
    def status(self) -> str:
        """``unmatched``, ``paid`` (already), ``excluded`` (earns nothing by the rules) or ``pay``."""
        if self.already:
            return "paid"
        if self.reward is None:
            return "unmatched"
        return "excluded" if self.reward.excluded else "pay"

    @property
    def amount(self) -> Units:
        return sum(s.amount for s in self.shares) if self.reward else sum(p.amount for p in self.already)

    @property
    def ref(self) -> str:
        return COMMIT_REF + self.facts.reward_id

    @property
    def ids(self) -> tuple[str, ...]:
        """Every id this commit is known under."""
        return tuple(dict.fromkeys(i for i in (self.facts.reward_id, *self.facts.aliases) if i))

    @property
    def links(self) -> tuple[str, ...]:
        """When already paid: ids of this commit the ledger does not know yet, to record against the
        payment so that a later rewrite of this commit still finds it."""
        if not self.already:
            return ()
        known = {p.ref[len(COMMIT_REF):] for p in self.already}
        return tuple(i for i in self.ids if i not in known)

    def describe(self) -> str:
        """One line: who earned what and why (post-commit, ``tx commit``)."""
        if self.status == "unmatched":
            return f"{PREFIX}: {self.facts.author or 'the author'} is not an agent; nothing paid"
        if self.already:
            who = ", ".join(f"{p.agent} {fmt(p.amount)}" for p in self.already)
            return f"{PREFIX}: already paid for this change ({who}); nothing new"
        assert self.reward is not None
        if self.reward.excluded:
            return f"{PREFIX}: {self.reward.excluded} earns nothing"
        who = " + ".join(f"{s.agent} {fmt(s.amount)}" for s in self.shares)
        return f"{PREFIX}: {who} tokens on {self.reward.project}: {self.reward.reason}{self.cuts}"

    @property
    def cuts(self) -> str:
        """``; <agent>: <cap reason>`` for every share a cap cut (appended to the one-line texts)."""
        return "".join(f"; {s.agent}: {s.cut}" for s in self.shares if s.cut)

    def preview(self) -> str:
        """One line before the commit exists (commit-msg)."""
        if self.status == "unmatched":
            return f"{PREFIX}: {self.facts.author or 'the author'} is not an agent; this commit will earn nothing"
        if self.already:
            who = ", ".join(f"{p.agent} {fmt(p.amount)}" for p in self.already)
            return (f"{PREFIX}: this change ({self.facts.reward_id[:12]}) is already paid ({who}); "
                    "it earns nothing new")
        assert self.reward is not None
        if self.reward.excluded:
            return f"{PREFIX}: {self.reward.excluded}: this commit will earn nothing"
        who = " + ".join(f"{s.agent} {fmt(s.amount)}" for s in self.shares)
        return f"{PREFIX}: will earn {who} tokens on {self.reward.project}: {self.reward.reason}{self.cuts}"


def agents_of(cfg: Config, author: str, message: str) -> tuple[str, ...]:
    """The agents a commit pays: the author's, then each ``Co-authored-by`` agent, once each, in order."""
    names: list[str] = []
    for address in (author, *co_author_emails(message)):
        name = agent_for(cfg, address)
        if name and name not in names:
            names.append(name)
    return tuple(names)


def plan_commit(cfg: Config, facts: CommitFacts, view: LedgerView) -> CommitPlan:
    """Price one commit under ``cfg`` against what ``view`` says is already paid.

    A change is paid once: if the ledger knows it under any of its ids or under the ids of the
    commits it rewrote, it earns nothing new.  Otherwise the author's agent's reward
    (base rate x contract multiplier x keyword bonus, nothing for excluded commits) is capped by
    what is left of the contract budget and split equally among the commit's agents (largest
    remainder); each share is then cut to what that agent's ``[caps]`` on commits leave in their
    windows ending at ``facts.time_us`` (the cut is not handed to the others).
    """
    agents = agents_of(cfg, facts.author, facts.message)
    if not agents:
        return CommitPlan(facts, (), None)
    paid = view.payments(list(filter(None, (facts.reward_id, *facts.aliases, *facts.origins))))
    if paid:
        return CommitPlan(facts, agents, None, already=tuple(paid))
    contract = match_contract(cfg.contracts, facts.project)
    reward = commit_reward(cfg, agents[0], facts.project, facts.message, facts.parents,
                           view.contract_paid(contract.name), contract)
    amounts = split(reward.amount, {a: 1 for a in agents}) if len(agents) > 1 else {agents[0]: reward.amount}
    shares = []
    for a in agents:
        amount, cut = cap_amount(cfg, a, "commits", amounts[a], view, facts.time_us)
        shares.append(Share(a, amount, cut, amounts[a]) if cut else Share(a, amount))
    return CommitPlan(facts, agents, reward, tuple(shares))


def cap_amount(cfg: Config, agent: str, source: str, amount: Units, view: Earnings,
               time_us: int) -> tuple[Units, str]:
    """``amount`` cut to what ``agent``'s ``[caps]`` for ``source`` leave in the windows ending at ``time_us``,
    and why ("" when nothing was cut).  Issue awards call this with ``source="issues"``."""
    if amount <= 0:  # nothing to cut (a contract budget already spent pays nothing)
        return amount, ""
    caps = [c for c in cfg.agent(agent).caps if c.source == source]
    if not caps:
        return amount, ""
    reason = ""
    for cap in caps:
        used = view.earned(agent, source, window_start(cap, time_us))
        left = max(cap.amount - used, 0)
        if amount > left:
            reason = (f"{cap.window} {source} cap {fmt(cap.amount)}: {fmt(used)} earned in the window, "
                      f"cut from {fmt(amount)} to {fmt(left)}")
            amount = left
    return amount, reason


def window_start(cap: Cap, time_us: int) -> int:
    """The first instant of ``cap``'s rolling window ending at ``time_us`` (inclusive)."""
    return time_us - cap.seconds * 1_000_000 + 1


class Overlay:
    """A view that adds a sequence's own plans to a base view (a report prices a range as the hooks
    would have paid it: commit by commit, each one seeing what the earlier ones paid)."""

    def __init__(self, base: LedgerView) -> None:
        self.base = base
        self._paid: dict[str, list[Payment]] = {}
        self._contracts: dict[str, Units] = {}
        self._earned: dict[str, list[tuple[int, Units]]] = {}  # agent -> (time_us, amount) of planned shares

    def payments(self, ids: Sequence[str]) -> list[Payment]:
        for i in ids:
            if i in self._paid:
                return list(self._paid[i])
        return self.base.payments(ids)

    def contract_paid(self, contract: str) -> Units:
        return self.base.contract_paid(contract) + self._contracts.get(contract, 0)

    def earned(self, agent: str, source: str, since_us: int) -> Units:
        own = sum(a for t, a in self._earned.get(agent, ()) if t >= since_us) if source == "commits" else 0
        return self.base.earned(agent, source, since_us) + own

    def apply(self, plan: CommitPlan) -> None:
        """Record ``plan`` as if it had been paid."""
        if plan.reward is None and not plan.already:
            return
        recorded = list(plan.already) or [Payment(plan.ref, s.agent, s.amount, plan.facts.sha, plan.facts.time_us)
                                          for s in plan.shares]
        for i in (*plan.ids, *plan.facts.origins):
            self._paid.setdefault(i, recorded)
        if plan.reward is not None and not plan.already:
            self._contracts[plan.reward.contract] = self._contracts.get(plan.reward.contract, 0) + plan.amount
            for s in plan.shares:
                self._earned.setdefault(s.agent, []).append((plan.facts.time_us, s.amount))


class NothingPaid:
    """The view of an empty ledger."""

    def payments(self, ids: Sequence[str]) -> list[Payment]:
        return []

    def contract_paid(self, contract: str) -> Units:
        return 0

    def earned(self, agent: str, source: str, since_us: int) -> Units:
        return 0


# --------------------------------------------------------------------------- issues (bd)
# What closing a tracker issue pays.

ISSUE_REF = "issue:"
REVERSAL_PREFIX = "reversal:"


class IssueFacts(NamedTuple):
    """What the engine needs to know about one issue (the bd adapter reads it; the engine never asks bd)."""

    id: str
    title: str
    status: str
    priority: str  # the label users see, P0-P9
    issue_type: str
    labels: tuple[str, ...] = ()
    closed_at: str = ""  # RFC 3339, as bd gave it
    updated_at: str = ""
    project: str = ""
    not_work: str = ""  # why closing it is not work ("a wisp (ephemeral)", "a gate", "a template"); "" if work


class IssuePayee(NamedTuple):
    """Who would be paid, and where that came from (resolved by the adapter as bd resolves its actor)."""

    agent: str | None
    source: str  # "assignee", "--agent" or "actor" (bd's actor); "" when nobody
    detail: str  # what it came from ("spark (bd actor, from BD_ACTOR)"), or why nobody


class IssuePayment(NamedTuple):
    """One payment of an issue already in the ledger."""

    id: str  # issue:<id>, then issue:<id>:2, ... after reversals
    agent: str
    amount: Units
    closed_at: str = ""  # the close it paid
    priority: str = ""
    issue_type: str = ""
    ts: str = ""
    payee_from: str = ""
    project: str = ""
    reversed_by: str = ""  # the reversal's id; "" while the payment stands


class IssueLedgerView(Earnings, Protocol):
    """The read-only ledger facts an issue plan depends on."""

    def issue_payments(self, issue_id: str) -> Sequence[IssuePayment]:
        """Every payment of the issue, oldest first, each with its reversal if it has one."""
        ...


class IssuePlan(NamedTuple):
    """What the ledger should do about one issue as it is now, decided before anything is written.

    ``action``: ``pay`` (write ``txn_id`` for ``amount`` to the payee), ``paid`` (a payment stands:
    nothing new), ``unpaid`` (nobody to pay), ``not-work`` (a wisp, gate, template...: never paid),
    ``open`` (not closed: nothing to do), ``reverse`` (reopened after it was paid: write ``txn_id``,
    the reversal of ``standing``), ``reversed`` (this close was paid and reversed: nothing until a
    later close).
    """

    facts: IssueFacts
    payee: IssuePayee
    action: str
    reward: IssueReward | None = None
    txn_id: str = ""
    amount: Units = 0
    standing: IssuePayment | None = None
    reasons: tuple[str, ...] = ()
    cut: str = ""  # why a cap cut the award ("" when it was not cut)

    @property
    def breakdown(self) -> dict[str, str]:
        """Why this amount: the reward's terms and where the payee came from (stored with the payment)."""
        if self.reward is None:
            return {}
        r = self.reward
        out = {"priority": r.priority, "priority_tokens": str(r.base), "issue_type": r.issue_type,
               "multiplier": str(r.multiplier), "multiplier_from": r.multiplier_from, "payee_from": self.payee.source}
        if self.cut:
            out["cap"] = self.cut
        return out

    def describe(self) -> str:
        """One line: what happens and why."""
        i = self.facts.id
        if self.action == "pay":
            assert self.reward is not None
            cut = f"; {self.cut}" if self.cut else ""
            return (f"{i}: paid {fmt(self.amount)} tokens to {self.payee.agent} ({self.reward.reason};"
                    f" payee from {self.payee.source}{cut})")
        return f"{i}: " + "; ".join(self.reasons)


def issue_payment_id(issue_id: str, n: int) -> str:
    """The n-th payment of an issue (n >= 1): ``issue:ID``, then ``issue:ID:2`` after a reversal, ..."""
    return ISSUE_REF + issue_id + ("" if n == 1 else f":{n}")


def instant(ts: str) -> tuple[int, int] | None:
    """(UTC seconds, nanoseconds) of an RFC 3339 time; None if it is not one (then nothing is inferred)."""
    zone = "+00:00" if ts.endswith("Z") else ts[-6:] if ts[-6:-5] in ("+", "-") and ts[-3:-2] == ":" else ""
    head = ts[:-1] if ts.endswith("Z") else ts[:-6]
    head, _, frac = head.partition(".")
    if not zone or len(head) != 19 or len(frac) > 9 or (frac and not frac.isdigit()):
        return None
    try:
        moment = datetime.fromisoformat(head.replace(" ", "T") + zone)
    except ValueError:
        return None
    return int(moment.timestamp()), int(frac.ljust(9, "0") or "0")


def _changed(reward: IssueReward, paid: IssuePayment) -> str:
    """A note when the issue would now earn something else than it was paid (the first payment stands)."""
    if paid.amount == reward.amount and paid.priority == reward.priority and paid.issue_type == reward.issue_type:
        return ""
    return (f"it is now {reward.priority} {reward.issue_type} ({fmt(reward.amount)} tokens) but was paid as "
            f"{paid.priority or '?'} {paid.issue_type or '?'} ({fmt(paid.amount)}): the first payment stands")


def plan_issue(cfg: Config, facts: IssueFacts, payee: IssuePayee, view: IssueLedgerView) -> IssuePlan:
    """Price one issue under ``cfg`` against what ``view`` says is already paid.

    An issue is paid once per close that stands: a closed issue with a standing payment earns nothing
    new (if its priority or type changed since, the first payment stands); a closed issue without one
    pays priority tokens x the highest type multiplier to ``payee``.  An issue seen open again after it
    was paid (its record is at least as new as the close that was paid) is reversed, exactly that
    payment, once; a later close (a newer ``closed_at``) then pays again, once -- the close that was
    reversed, seen again in a stale record or after ``tx reverse``, never does.  Ephemeral issues
    (wisps), gates, identity beads, messages and templates are never paid.  Pure: no I/O, no clock.
    Raises ``UserError`` for a priority with no reward.
    """
    payments = view.issue_payments(facts.id)
    standing = next((p for p in reversed(payments) if not p.reversed_by), None)
    if facts.status != "closed":
        if standing is None:
            return IssuePlan(facts, payee, "open", reasons=(f"{facts.status}, not closed: nothing to pay",))
        seen, paid_close = instant(facts.updated_at), instant(standing.closed_at)
        if seen is None or paid_close is None or seen < paid_close:
            return IssuePlan(facts, payee, "open", standing=standing,
                             reasons=((f"{facts.status} in a record older than the close paid to {standing.agent}"
                                       f" ({standing.closed_at or 'unknown time'}): the payment stands"),))
        return IssuePlan(facts, payee, "reverse", txn_id=REVERSAL_PREFIX + standing.id, amount=standing.amount,
                         standing=standing,
                         reasons=((f"reopened ({facts.status}) after {fmt(standing.amount)} tokens were paid to"
                                   f" {standing.agent} for closing it: that payment is reversed; closing it again"
                                   " pays again, once"),))
    if facts.not_work:
        return IssuePlan(facts, payee, "not-work", reasons=(f"{facts.not_work} is not work: nothing paid",))
    reward = issue_reward(cfg, facts.priority, facts.issue_type, facts.labels)
    if standing is not None:
        note = _changed(reward, standing)
        why = f"already paid {fmt(standing.amount)} to {standing.agent}; nothing new"
        return IssuePlan(facts, payee, "paid", reward, amount=standing.amount, standing=standing,
                         reasons=(why, note) if note else (why,))
    if payments:  # every payment so far was reversed: only a NEW close pays again
        last = payments[-1]
        closed, before = instant(facts.closed_at), instant(last.closed_at)
        if closed is None or before is None or closed <= before:
            return IssuePlan(facts, payee, "reversed", reward,
                             reasons=((f"the close of {facts.closed_at or 'unknown time'} was paid ({last.id}) and"
                                       f" reversed ({last.reversed_by}); only a later close pays again"),))
    if payee.agent is None:
        return IssuePlan(facts, payee, "unpaid", reward, reasons=(f"nobody to pay ({payee.detail})",))
    amount, cut = cap_amount(cfg, payee.agent, "issues", reward.amount, view, issue_time_us(facts))
    reasons = (reward.reason, f"payee from {payee.source} {payee.detail}", *((cut,) if cut else ()))
    return IssuePlan(facts, payee, "pay", reward, txn_id=issue_payment_id(facts.id, len(payments) + 1),
                     amount=amount, reasons=reasons, cut=cut)


def issue_time_us(facts: IssueFacts) -> int:
    """The moment a close is priced at for the ``[caps]`` windows: bd's ``closed_at``, else ``updated_at``.
    Without either, 0: the windows then reach back over everything earned (never more than a cap allows)."""
    when = instant(facts.closed_at) or instant(facts.updated_at)
    return when[0] * 1_000_000 + when[1] // 1000 if when else 0
