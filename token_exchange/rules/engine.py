"""The one pricing engine: what a commit pays, to whom, and why.

Every payer and previewer calls :func:`plan_commit`: ``tx commit``, the post-commit hook (which then
writes the plan), the commit-msg preview, ``tx report`` (with a view of the ledger as it stood before
the range, plus what the range itself has planned so far), settlement and the simulation.  Nothing
else maps authors to agents, checks "already paid", applies a contract budget or splits a reward
among co-authors.

The engine is pure: the rules (``Config``), the facts of one commit, and a read-only
:class:`LedgerView` in; a :class:`CommitPlan` out.  No I/O, no clock, no git: the moment a commit is
priced at (for the ``[caps]`` windows) is one of its facts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from token_exchange.amounts import Units, fmt, split
from token_exchange.rules.config import Cap, Config
from token_exchange.rules.identities import agent_for, co_author_emails
from token_exchange.rules.rewards import CommitReward, commit_reward, match_contract

PREFIX = "token-exchange"
COMMIT_REF = "commit:"


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


class LedgerView(Protocol):
    """The read-only ledger facts a plan depends on."""

    def payments(self, ids: Sequence[str]) -> list[Payment]:
        """The shares recorded for the change known under any of ``ids`` (as its id or an alias)."""
        ...

    def contract_paid(self, contract: str) -> Units:
        """Everything ever paid under ``contract`` (its budget is what is left)."""
        ...

    def earned(self, agent: str, source: str, since_us: int) -> Units:
        """What ``agent`` earned from ``source`` (``commits`` or ``issues``) at or after ``since_us``."""
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
    paid = view.payments([i for i in (facts.reward_id, *facts.aliases, *facts.origins) if i])
    if paid:
        return CommitPlan(facts, agents, None, already=tuple(paid))
    contract = match_contract(cfg.contracts, facts.project).name
    reward = commit_reward(cfg, agents[0], facts.project, facts.message, facts.parents,
                           view.contract_paid(contract))
    amounts = split(reward.amount, {a: 1 for a in agents}) if len(agents) > 1 else {agents[0]: reward.amount}
    shares = []
    for a in agents:
        amount, cut = cap_amount(cfg, a, "commits", amounts[a], view, facts.time_us)
        shares.append(Share(a, amount, cut, amounts[a]) if cut else Share(a, amount))
    return CommitPlan(facts, agents, reward, tuple(shares))


def cap_amount(cfg: Config, agent: str, source: str, amount: Units, view: LedgerView,
               time_us: int) -> tuple[Units, str]:
    """``amount`` cut to what ``agent``'s ``[caps]`` for ``source`` leave in the windows ending at ``time_us``,
    and why ("" when nothing was cut).  Issue awards call this with ``source="issues"``."""
    caps = [c for c in cfg.agent(agent).caps if c.source == source]
    if not caps or amount <= 0:
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
