"""The exchange: a home (config + ledger) and the operations that pay agents.

This is the one place that joins pure rules (``rewards``) to storage
(``ledger``).  Check-then-write always happens inside ``ledger.locked()`` so
budgets, balances and ids are decided against the state the write lands on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from token_exchange import clock as clock_mod
from token_exchange.amounts import Units, fmt, split
from token_exchange.clock import Clock
from token_exchange.errors import UserError, clean_text
from token_exchange.git import find_home
from token_exchange.ledger.backends import open_journal
from token_exchange.ledger.ledger import Ledger
from token_exchange.ledger.protocols import Index
from token_exchange.ledger.txn import GENESIS, REWARDS, Appended, Balance, Txn, make_txn
from token_exchange.rules import config as config_mod
from token_exchange.rules.config import Config
from token_exchange.rules.identities import agent_for
from token_exchange.rules.rewards import CommitReward, commit_reward, match_contract

HOME_GITIGNORE = """# token-exchange: only config.toml is tracked; the ledger is local state.
*
!.gitignore
!config.toml
"""


class CommitOutcome:
    """What a commit paid (or why not): one share per agent."""

    def __init__(self, reward_id: str, reward: CommitReward | None, shares: list[Appended] | None = None,
                 already_paid: list[Txn] | None = None, unmatched: str = "") -> None:
        self.reward_id = reward_id
        self.reward = reward
        self.shares: list[Appended] = shares or []
        self.already_paid: list[Txn] = already_paid or []
        self.unmatched = unmatched

    @property
    def amount(self) -> Units:
        return sum(a.txn.amount for a in self.shares) if self.shares else sum(t.amount for t in self.already_paid)


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

    def commit(self, email: str, project: str, message: str, *, reward_id: str | None = None,
               sha: str = "", parents: int = 1, co_authors: Sequence[str] = (),
               also_paid: Sequence[str] = ()) -> CommitOutcome:
        """Pay a commit once per reward id.  Co-authoring agents share it equally (largest remainder).

        ``also_paid``: other ids of the same change (extra trailers of a squash, the commit an amend or
        rebase rewrote): if any of them was paid, this commit pays nothing new.
        """
        message = clean_text(message, limit=65536)
        project = clean_text(project, limit=200)
        if reward_id is None:
            reward_id = sha or hashlib.sha256(f"{email}\0{project}\0{message}".encode("utf-8", "replace")).hexdigest()
        ref = f"commit:{reward_id}"
        agents: list[str] = []
        for addr in (email, *co_authors):
            name = agent_for(self.cfg, addr)
            if name and name not in agents:
                agents.append(name)
        if not agents:
            if self.cfg.unknown_author == "error":
                raise UserError(f"author {email[:80]} maps to no agent (add it to an agent's emails)")
            return CommitOutcome(reward_id, None, unmatched=email)
        with self.ledger.locked() as idx:
            paid = idx.by_ref(ref)
            for other in also_paid:
                if paid:
                    break
                if other and other != reward_id:
                    paid = idx.by_ref(f"commit:{other}")
            if paid:
                return CommitOutcome(reward_id, None, already_paid=paid)
            lead = agents[0]
            contract = match_contract(self.cfg.contracts, project).name
            reward = commit_reward(self.cfg, lead, project, message, parents, idx.contract_paid(contract))
            shares = split(reward.amount, {a: 1 for a in agents})
            source: dict[str, str | int] = {"type": "commit", "reward_id": reward_id[:120]}
            if sha:
                source["sha"] = sha[:64]
            if len(agents) > 1:
                source["coauthors"] = ",".join(agents)
            subject = message.splitlines()[0] if message else ""
            txns = []
            for name in agents:
                self.ensure_open(idx, name)
                bd = reward.breakdown()
                if len(agents) > 1:
                    bd["share"] = f"1/{len(agents)}"
                txns.append(make_txn(f"{ref}:{name}", "earn", REWARDS, name, shares[name], agent=name,
                                     project=project, description=subject, source=dict(source), breakdown=bd,
                                     ref=ref))
            appended = self.ledger.append_many(txns)
        return CommitOutcome(reward_id, reward, shares=appended)

    def preview_commit(self, email: str, project: str, message: str, parents: int = 1) -> CommitReward | None:
        """What a commit would earn now (no write, no lock)."""
        name = agent_for(self.cfg, email)
        if name is None:
            return None
        contract = match_contract(self.cfg.contracts, project).name
        paid = self.ledger.fresh().contract_paid(contract)
        return commit_reward(self.cfg, name, project, message, parents, paid)


def describe_outcome(out: CommitOutcome) -> str:
    """One line: who earned what and why."""
    if out.unmatched:
        return f"token-exchange: {out.unmatched} is not an agent; nothing paid"
    if out.already_paid:
        who = ", ".join(f"{t.agent} {fmt(t.amount)}" for t in out.already_paid)
        return f"token-exchange: already paid for this change ({who}); nothing new"
    assert out.reward is not None
    r = out.reward
    if r.excluded:
        return f"token-exchange: {r.excluded} earns nothing"
    who = " + ".join(f"{a.txn.agent} {fmt(a.txn.amount)}" for a in out.shares)
    return f"token-exchange: {who} tokens on {r.project}: {r.reason}"


