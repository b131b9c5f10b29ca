"""Charging metered usage into the ledger: which agent a session is, what a record costs, the charge.

The exchange side of ``token_exchange.meter`` (the pure parsers): ``Meter`` is an exchange home
opened for metering, as cheaply as a hook can afford.  ``services.meter_sources`` feeds it the
records of a transcript, a rollout or a log; ``services.prompt_guard`` asks it whether an agent may
start more work.

Accounting rule for metered usage (docs/spending.md, "Metered usage"): the usage already happened,
so it cannot be refused.  It is charged as a ``spend`` (agent -> ``world:llm``, id
``meter:<record id>``) whatever the burst, reserve, hourly and daily limits say, and it counts in
the hourly and daily windows like any spend.  It is charged down to a balance of 0, never below:
what the wallet could not pay is recorded on the transaction (``breakdown.unbilled``), so every
account stays >= 0 and ``tx doctor`` stays consistent.  What refuses further work is the guard.

Idempotency: the transaction id comes from the usage record, so a replayed transcript, a hook run
twice, two hooks racing or a lost state file charge nothing new.  A record whose id is already in
the ledger counts as charged even if its figures differ (a re-read after a lost state file can see
a streaming message settle on other figures than the ones charged): it is never charged twice.

Import cost matters: Claude Code starts a fresh process for every hook.  The metering modules
import the ledger, the config and the meter parsers only; never typer, rich, tomlkit, GitPython,
the reward engine or ``services.exchange`` (a test checks it).
"""

# No ``from __future__ import annotations``: NamedTuple fields are real types here (docs/DEVELOPING.md, Hot paths).

import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from token_exchange import clock
from token_exchange.meter.pricing import UsagePrices
from token_exchange.meter.records import PREFIX, MeterError, Source, Usage, short, short_path
from token_exchange.services.meter_state import LOCK_WAIT

if TYPE_CHECKING:
    from token_exchange.ledger.ledger import Ledger
    from token_exchange.ledger.protocols import Index
    from token_exchange.ledger.txn import Txn
    from token_exchange.rules.config import Config, MeterConfig
    from token_exchange.services.exchange import Exchange

AGENT_ENV = "TOKEN_EXCHANGE_AGENT"


class UnknownAgent(MeterError):
    """No agent for this session: nothing is charged, nothing is saved (the next run charges it all)."""


micros = clock.micros  # what ``rules.limits.micros`` is (a test checks it), without that module's imports


class Priced(NamedTuple):
    """The price table a model id is charged at, and whether no pattern matched it."""

    name: str
    prices: UsagePrices
    fallback: bool


class Charged(NamedTuple):
    """What one charge wrote: responses charged (new), already in the ledger, costs and the balance."""

    agent: str
    new: int
    duplicates: int
    cost: int  # units: the full price of the new records
    charged: int  # units actually taken from the wallet
    balance: int
    fallback_models: tuple[str, ...] = ()

    @property
    def unbilled(self) -> int:
        return self.cost - self.charged

    def to_json(self) -> dict[str, object]:
        from token_exchange.amounts import to_decimal

        return {"agent": self.agent, "charged_responses": self.new, "already_charged": self.duplicates,
                "cost": to_decimal(self.cost), "charged": to_decimal(self.charged),
                "unbilled": to_decimal(self.unbilled), "balance": to_decimal(self.balance),
                "fallback_models": list(self.fallback_models)}

    def line(self) -> str:
        from token_exchange.amounts import fmt

        parts = [f"{self.agent}: charged {self.new} response{'s' if self.new != 1 else ''} {fmt(self.charged)}"]
        if self.unbilled:
            parts.append(f"{fmt(self.unbilled)} unbilled (wallet empty)")
        if self.duplicates:
            parts.append(f"{self.duplicates} already charged")
        if self.fallback_models:
            parts.append(f"priced at the fallback: {', '.join(self.fallback_models[:3])}")
        return "; ".join(parts) + f"; balance {fmt(self.balance)}"


class Meter:
    """An exchange home opened for metering: config, ledger (opened when first used) and clock."""

    def __init__(self, home: Path, *, cfg: "Config | None" = None, ledger: "Ledger | None" = None,
                 clock: Callable[[], datetime] | None = None, env: Mapping[str, str] | None = None) -> None:
        from token_exchange.rules import config as config_mod

        self.home = home
        self.env = os.environ if env is None else env
        if cfg is None:
            if not (home / "config.toml").is_file():
                raise MeterError(f"no exchange at {short_path(home)} (run `tx init`)")
            cfg = config_mod.load(home / "config.toml")
        self.cfg = cfg
        self.settings: MeterConfig = config_mod.meter_config(cfg)
        self._ledger = ledger
        self._clock = clock
        self._priced: dict[tuple[str, str], Priced] = {}

    @classmethod
    def of(cls, ex: "Exchange", env: Mapping[str, str] | None = None) -> "Meter":
        """The meter of an opened exchange (same config, ledger and clock)."""
        return cls(ex.home, cfg=ex.cfg, ledger=ex.ledger, clock=ex.clock, env=env)

    def clock(self) -> datetime:
        """Now: the exchange's clock when opened from one, else the system clock (tests inject one)."""
        if self._clock is None:
            from token_exchange.clock import now

            return now()
        return self._clock()

    @property
    def ledger(self) -> "Ledger":
        if self._ledger is None:
            from token_exchange.ledger.backends import open_journal
            from token_exchange.ledger.ledger import Ledger

            self._ledger = Ledger(open_journal(self.cfg.backend, self.home, self.cfg), self.home / "index.sqlite",
                                  self._clock)
            self._ledger.lock_timeout = LOCK_WAIT
        return self._ledger

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()

    # --- who -----------------------------------------------------------------------------------
    def agent_for(self, source: Source, *, option: str | None = None, cwd: str | None = None,
                  path: str | None = None, session: str | None = None) -> str:
        """``--agent``, else ``$TOKEN_EXCHANGE_AGENT``, else the first ``[[meter.sessions]]`` rule that
        matches, else ``meter.default_agent``; ``UnknownAgent`` (one line) when none gives a known agent."""
        for given, what in ((option, "--agent"), (self.env.get(AGENT_ENV), AGENT_ENV)):
            if given:
                if given not in self.cfg.agents:
                    raise UnknownAgent(f"{what}{'=' if what == AGENT_ENV else ' '}{short(given)} is not an agent of "
                                       "this exchange "
                                       f"(known: {', '.join(sorted(self.cfg.agents))}); nothing charged")
                return given
        found = self.settings.agent_for(source, cwd=cwd, path=path, session=session)
        if found is None:
            where = f" (cwd {short_path(cwd, 60)})" if cwd else ""
            config = short_path(self.home / "config.toml", 80)
            raise UnknownAgent(f"no agent for this {source} session{where}: set {AGENT_ENV}, or add a "
                               f"[[meter.sessions]] rule or meter.default_agent to {config}; nothing charged yet")
        return found

    # --- what it costs ------------------------------------------------------------------------
    def priced(self, agent: str, model_id: str) -> Priced:
        """The price table of ``model_id`` (``[meter.models]``), else ``meter.fallback_model``, else
        the agent's ``primary_llm``."""
        cached = self._priced.get((agent, model_id))
        if cached is not None:
            return cached
        from token_exchange.meter.pricing import match_model

        name = match_model(self.settings.models, model_id)
        fallback = name is None
        if name is None:
            name = self.settings.fallback_model or self.cfg.agent(agent).primary_llm
        m = self.cfg.model(name)
        write, read = m.cache_prices()
        found = Priced(name, UsagePrices(m.input_per_1k, m.output_per_1k, write, read), fallback)
        self._priced[(agent, model_id)] = found
        return found

    # --- charging -------------------------------------------------------------------------------
    def ensure_open(self, idx: "Index", agent: str) -> None:
        """``Exchange.ensure_open``: the starting balance, once (the same transaction, a test checks it)."""
        if idx.get(f"open:{agent}") is None:
            from token_exchange.ledger.txn import GENESIS, make_txn

            self.ledger.append(make_txn(f"open:{agent}", "open", GENESIS, agent, self.cfg.starting_balance,
                                        agent=agent, description="starting balance"))

    def expire_due(self, idx: "Index", now_us: int) -> None:
        """Release reservations whose time is up (as every spending operation does), if there are any."""
        if idx.expired_holds(now_us):
            from typing import cast

            from token_exchange.services.spending import expire_due

            expire_due(cast("Exchange", self), idx)  # it uses .clock() and .ledger, which a Meter has

    def charge(self, agent: str, records: Sequence[Usage]) -> Charged:
        """Charge every record not in the ledger yet, in one locked write (see the module docstring)."""
        from token_exchange.ledger.timestamps import ts_text
        from token_exchange.meter.pricing import cost as cost_of

        self.cfg.agent(agent)
        with self.ledger.locked() as idx:
            self.ensure_open(idx, agent)
            moment = self.clock()
            self.expire_due(idx, micros(moment))
            ts = ts_text(moment)
            balance = idx.account(agent)
            txns: list[Txn] = []
            ids: set[str] = set()
            dup = total = taken = 0
            fallback: dict[str, None] = {}
            for u in records:
                tid = f"meter:{u.record_id}"
                if tid in ids or idx.get(tid) is not None:
                    dup += 1
                    continue
                ids.add(tid)
                priced = self.priced(agent, u.model)
                if priced.fallback:
                    fallback[u.model or "(no model)"] = None
                cost = cost_of(priced.prices, u)
                charged = min(cost, max(balance, 0))
                balance -= charged
                total += cost
                taken += charged
                txns.append(self._txn(agent, u, priced, cost, charged, ts))
            if txns:
                self.ledger.append_many(txns)
            return Charged(agent, len(txns), dup, total, taken, idx.account(agent), tuple(fallback))

    def _txn(self, agent: str, u: Usage, priced: Priced, cost: int, charged: int, ts: str) -> "Txn":
        from token_exchange.amounts import fmt
        from token_exchange.ledger.txn import LLM, make_txn

        p = priced.prices
        source: dict[str, str | int] = {
            "type": "meter", "meter": u.source, "model": u.model, "price_table": priced.name,
            "tokens": u.total_tokens, "input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
            "cache_write_tokens": u.cache_write_tokens, "cache_read_tokens": u.cache_read_tokens,
            "session": u.session_id[:128], "record": u.record_id}
        if u.reasoning_tokens:
            source["reasoning_tokens"] = u.reasoning_tokens
        if u.timestamp:
            source["at"] = u.timestamp
        if u.where:
            source["where"] = u.where[-300:]
        bd: dict[str, str | int] = {
            "input_per_1k": format(p.input, "f"), "output_per_1k": format(p.output, "f"),
            "cache_write_per_1k": format(p.cache_write, "f"), "cache_read_per_1k": format(p.cache_read, "f"),
            "cost": fmt(cost), "rule": "ceil(sum over kinds of tokens/1000 x price); metered: never refused, "
                                       "charged down to a balance of 0"}
        if priced.fallback:
            bd["priced_as"] = f"fallback ({priced.name}): no [meter.models] pattern matches {u.model or 'no model'}"
        if cost > charged:
            bd["unbilled"] = fmt(cost - charged)
        model = u.model or "an unknown model"
        return make_txn(f"meter:{u.record_id}", "spend", agent, LLM, charged, agent=agent,
                        description=f"{model} via {u.source}", source=source, breakdown=bd,
                        ref=f"meter:{PREFIX[u.source]}:{u.session_id[:150]}", ts=ts)
