"""The exchange: a home (config + ledger) and the operations that pay agents.

This is the one place that joins the pure engine (``rules.engine``) to storage
(``ledger``).  Check-then-write always happens inside ``ledger.locked()`` so
budgets, balances and ids are decided against the state the write lands on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from token_exchange import clock as clock_mod
from token_exchange.amounts import Units, fmt
from token_exchange.clock import Clock
from token_exchange.errors import UserError, clean_text
from token_exchange.ledger.backends import open_journal
from token_exchange.ledger.ledger import Ledger
from token_exchange.ledger.protocols import Index
from token_exchange.ledger.timestamps import ts_micros
from token_exchange.ledger.txn import GENESIS, REWARDS, Appended, Balance, Txn, make_txn
from token_exchange.rules import config as config_mod
from token_exchange.rules.config import Config
from token_exchange.rules.engine import (
    COMMIT_REF,
    FOREVER_US,
    SOURCE_KINDS,
    CommitFacts,
    CommitPlan,
    Payment,
    plan_commit,
)
from token_exchange.services.home import find_home

LINKS = "world:links"

HOME_GITIGNORE = """# token-exchange: only config.toml is tracked; the ledger is local state.
*
!.gitignore
!config.toml
"""


# Which kinds of transaction count as earned from each source, for the [caps] windows.


class IndexView:
    """The engine's read-only view of a ledger index.

    ``provisional``: the view of the hooks in on-merge mode, where a provisional award counts as the
    change's payment (a rewrite of it is not paid provisionally again) and, net of voids, as earned
    from commits.  Settlement and reports see settled awards (``earn``) only.
    """

    def __init__(self, idx: Index, provisional: bool = False) -> None:
        self.idx = idx
        self.kinds = ("earn", "provisional") if provisional else ("earn",)

    def payments(self, ids: Sequence[str]) -> list[Payment]:
        for i in ids:
            found = self._paid(COMMIT_REF + i, follow=True)
            if found:
                return found
        return []

    def _paid(self, ref: str, follow: bool, kinds: tuple[str, ...] | None = None) -> list[Payment]:
        kinds = kinds or self.kinds
        txns = self.idx.by_ref(ref)
        if not txns:  # a change not paid yet (every new commit): nothing to collect or follow
            return []
        found = [Payment(t.ref, t.agent, t.amount, str(t.source.get("sha", "")), ts_micros(t.ts))
                 for t in txns if t.kind in kinds]
        if not found and follow:
            for t in txns:
                target = t.source.get("of") if t.kind == "link" else None
                if isinstance(target, str) and target.startswith(COMMIT_REF):
                    return self._paid(target, follow=False, kinds=kinds)
        return found

    def provisional(self, ids: Sequence[str]) -> list[Txn]:
        """Every provisional award recorded for the change known under any of ``ids`` (links followed)."""
        out: dict[str, Txn] = {}
        for i in ids:
            refs = [COMMIT_REF + i]
            refs += [str(t.source.get("of")) for t in self.idx.by_ref(refs[0])
                     if t.kind == "link" and str(t.source.get("of", "")).startswith(COMMIT_REF)]
            for ref in refs:
                for t in self.idx.by_ref(ref):
                    if t.kind == "provisional":
                        out.setdefault(t.id, t)
        return list(out.values())

    def contract_paid(self, contract: str) -> Units:
        return self.idx.contract_paid(contract)

    def earned(self, agent: str, source: str, since_us: int) -> Units:
        kinds = SOURCE_KINDS.get(source, ())
        # No upper bound: whatever the ledger holds from ``since_us`` on was earned before this plan.
        total = self.idx.window_sum(agent, kinds, since_us, FOREVER_US) if kinds else 0
        if source == "commits" and "provisional" in self.kinds:
            total += self.idx.window_sum(agent, ("provisional",), since_us, FOREVER_US)
            total -= self.idx.window_sum(agent, ("void",), since_us, FOREVER_US)
        return max(total, 0)


class CommitResult:
    """A plan and what writing it appended (one share per agent; nothing when already paid)."""

    def __init__(self, plan: CommitPlan, shares: list[Appended]) -> None:
        self.plan = plan
        self.shares = shares

    @property
    def amount(self) -> Units:
        return sum(a.txn.amount for a in self.shares) if self.shares else self.plan.amount

    @property
    def reward_id(self) -> str:
        return self.plan.facts.reward_id

    @property
    def provisional(self) -> bool:
        return any(a.txn.kind == "provisional" for a in self.shares)

    def describe(self) -> str:
        text = self.plan.describe()
        return text + " (provisional: settled when it lands on the default branch)" if self.provisional else text


PROVISIONAL_PREFIX = "prov:"


def provisional_id(ref: str, agent: str) -> str:
    """The id of a provisional award of ``ref`` (commit:<reward id>) to ``agent``."""
    return f"{PROVISIONAL_PREFIX}{ref[len(COMMIT_REF):]}:{agent}"[:200]


def commit_txns(plan: CommitPlan, idx: Index, *, provisional: bool = False, settled: dict[str, str] | None = None,
                ts: str = "") -> list[Txn]:
    """The transactions that write a plan: one ``earn`` per agent, or ``link`` records of the ids the
    ledger does not know yet to the existing payment of the same change.

    ``provisional``: one ``provisional`` award per agent instead (on-merge mode, at commit time).
    ``settled``: source fields that mark an ``earn`` as written by settlement (with ``ts``, the landing time)."""
    facts = plan.facts
    if plan.already:
        # One zero-amount record per new id (``ref`` = that id), pointing at the payment: a later rewrite
        # that only carries this commit's ids still finds it.
        return [make_txn(f"link:{alias[:190]}", "link", REWARDS, LINKS, 0, ref=COMMIT_REF + alias,
                         description="an id of a rewritten commit", project=facts.project,
                         source={"type": "link", "of": plan.already[0].ref[:200], "sha": facts.sha[:64]})
                for alias in plan.links if not idx.by_ref(COMMIT_REF + alias)]
    if plan.reward is None:
        return []
    source: dict[str, str | int] = {"type": "commit", "reward_id": facts.reward_id[:120]}
    if facts.sha:
        source["sha"] = facts.sha[:64]
    if facts.aliases:
        source["aliases"] = ",".join(facts.aliases)[:500]
    if facts.origins:  # the commits it rewrote: a clone that paid one of them first makes this a double
        source["origins"] = ",".join(facts.origins)[:500]
    if len(plan.agents) > 1:
        source["coauthors"] = ",".join(plan.agents)
    if settled:
        source.update(settled)
    subject = facts.message.splitlines()[0] if facts.message else ""
    out = []
    for share in plan.shares:
        bd = plan.reward.breakdown()
        if len(plan.agents) > 1:
            bd["share"] = f"1/{len(plan.agents)}"
        if share.cut:
            bd["cap"] = share.cut
            bd["uncapped"] = fmt(share.uncut)
        kind, id = ("provisional", provisional_id(plan.ref, share.agent)) if provisional else \
            ("earn", f"{plan.ref}:{share.agent}")
        out.append(make_txn(id, kind, REWARDS, share.agent, share.amount,
                            agent=share.agent, project=facts.project, description=subject, source=source,
                            breakdown=bd, ref=plan.ref, ts=ts))
    return out


class Exchange:
    """A home directory: config.toml + the ledger chosen by its backend."""

    def __init__(self, home: Path, cfg: Config | None = None, clock: Clock | None = None) -> None:
        self.home = home
        self.cfg = cfg if cfg is not None else config_mod.load(home / "config.toml")
        # None: token_exchange.clock.now (the system clock; tests inject one in-process, never via env).
        self._clock = clock
        self._ledger: Ledger | None = None

    @classmethod
    def open(cls, home: str | Path | None = None, clock: Clock | None = None) -> Exchange:
        path = find_home(home)
        if not (path / "config.toml").exists():
            raise UserError(f"no exchange at {path} (run `tx init`)")
        return cls(path, clock=clock)

    def clock(self) -> datetime:
        """Now (the injected clock of a test or simulation, else the system clock)."""
        return (self._clock or clock_mod.now)()

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger(open_journal(self.cfg.backend, self.home, self.cfg), self.home / "index.sqlite",
                                  self._clock)
        return self._ledger

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()

    # --- wallets -----------------------------------------------------------------
    def ensure_open(self, idx: Index, agent: str) -> None:
        """Record the agent's starting balance once (call inside ``ledger.locked()``)."""
        if idx.get(f"open:{agent}") is None:
            self.ledger.append(make_txn(f"open:{agent}", "open", GENESIS, agent, self.cfg.starting_balance,
                                        agent=agent, description="starting balance"))

    def open_all(self) -> None:
        with self.ledger.locked() as idx:
            for name in self.cfg.agents:
                self.ensure_open(idx, name)

    def balance(self, agent: str) -> Balance:
        self.cfg.agent(agent)
        idx = self.ledger.fresh()
        if idx.get(f"open:{agent}") is None:
            with self.ledger.locked() as idx:
                self.ensure_open(idx, agent)
        return self.ledger.balance(agent)

    def balances(self) -> list[Balance]:
        return [self.balance(name) for name in sorted(self.cfg.agents)]

    # --- earning -----------------------------------------------------------------
    def award(self, agent: str, amount: Units, source: str, description: str, id: str | None = None,
              project: str = "", kind: str = "award", extra: dict[str, str | int] | None = None,
              breakdown: dict[str, str | int] | None = None) -> Appended:
        """Pay ``amount`` to ``agent`` from the outside world, idempotently by ``id``."""
        self.cfg.agent(agent)
        source = clean_text(source, limit=100)
        description = clean_text(description, limit=500)
        if id is None:
            digest = hashlib.sha256(f"{agent}\0{amount}\0{source}\0{description}\0{project}".encode()).hexdigest()
            id = f"award:{digest[:32]}"
        txn = make_txn(id, kind, REWARDS, agent, amount, agent=agent, project=project, description=description,
                       source={"type": source, **(extra or {})}, breakdown=dict(breakdown or {}))
        with self.ledger.locked() as idx:
            self.ensure_open(idx, agent)
            return self.ledger.append(txn)

    def pay_commit(self, facts: CommitFacts) -> CommitResult:
        """Plan and pay one commit under the lock: once per change (see ``rules.engine``).

        In on-merge mode (``[settlement]``) the same plan is recorded as a provisional award, which
        ``tx settle`` replaces by the settled one when the commit lands on the default branch."""
        message, project = clean_text(facts.message, limit=65536), clean_text(facts.project, limit=200)
        if message is not facts.message or project is not facts.project:  # clean_text returns clean text itself
            facts = facts._replace(message=message, project=project)
        facts = self._timed(facts)
        on_merge = self.cfg.on_merge
        with self.ledger.locked() as idx:
            plan = plan_commit(self.cfg, facts, IndexView(idx, provisional=on_merge))
            if plan.status == "unmatched" and self.cfg.unknown_author == "error":
                raise UserError(f"author {facts.author[:80]} maps to no agent (add it to an agent's emails)")
            txns = commit_txns(plan, idx, provisional=on_merge)
            if plan.reward is not None:
                for name in plan.agents:
                    self.ensure_open(idx, name)
            written = self.ledger.append_many(txns) if txns else []
        return CommitResult(plan, [a for a in written if a.txn.kind in ("earn", "provisional")])

    def preview_commit(self, facts: CommitFacts) -> CommitPlan:
        """What a commit would earn now (no write, no lock)."""
        return plan_commit(self.cfg, self._timed(facts), IndexView(self.ledger.fresh(), provisional=self.cfg.on_merge))

    def _timed(self, facts: CommitFacts) -> CommitFacts:
        """Facts priced now when they carry no moment of their own (the commit-msg preview)."""
        return facts if facts.time_us else facts._replace(time_us=self._now_us())

    def _now_us(self) -> int:
        return clock_mod.micros(self.clock())

    def commit(self, email: str, project: str, message: str, *, reward_id: str | None = None,
               sha: str = "", parents: int = 1) -> CommitResult:
        """``tx commit``: pay a commit given by hand, once per reward id (default: the SHA, else a digest)."""
        if not reward_id:  # the digest of the cleaned text (pay_commit cleans the facts themselves)
            message = clean_text(message, limit=65536)
            project = clean_text(project, limit=200)
            reward_id = sha or hashlib.sha256(f"{email}\0{project}\0{message}".encode("utf-8", "replace")).hexdigest()
        return self.pay_commit(CommitFacts(email, message, project, parents, reward_id, (), (), sha, self._now_us()))
