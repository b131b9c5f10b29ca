"""``tx simulate``: the seed's 24-hour economy, driven through the real engine.

Only the *activity* is simulated: which agent commits what, when, on which
project with which keywords, and which LLM requests and pool jobs it attempts.
Every commit goes through ``Exchange.commit`` (real reward rules, contract
budgets, idempotency), every request through the real spending engine
(``llm.py``/``limits.py``: prices, burst/hourly/daily/reserve limits) and pool
work through ``pools.py``.  Whatever those rules refuse is recorded as a limit
event; nothing here re-implements a rule.

Determinism: one ``random.Random(seed)`` draws every choice, the clock is a
simulated one starting at ``EPOCH``, ids derive from the seed and a counter,
so the same seed and config give the same ledger and the same result.

Speed: the simulation runs in a throwaway home whose ledger uses an in-memory
journal (``SimJournal``) and the dict-backed index (``memindex.MemoryIndex``),
inside one ``ledger.locked()`` block, so no event pays for an fsync or a lock.
The real ``Ledger`` class does the appends, hash chaining and indexing.  Events
are bucketed by hour (only one hour is ever sorted), every per-agent lookup is a
list index or a dict probe, so a run costs the same per agent-hour whatever its
length or population.  With ``--out DIR`` the journal is written to
``DIR/ledger.toml`` (and the index saved) at the end, so ``tx --home DIR ...``
can inspect the result.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import json
import random
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from token_exchange.amounts import SCALE, Units, fmt, to_decimal
from token_exchange.errors import UserError
from token_exchange.ledger.index import SqliteIndex
from token_exchange.ledger.ledger import Ledger
from token_exchange.ledger.memindex import MemoryIndex
from token_exchange.ledger.protocols import Chunk, Index, Tail
from token_exchange.ledger.txn import Txn, chain
from token_exchange.rules import config as config_mod
from token_exchange.rules.config import Config
from token_exchange.rules.limits import LimitRefused
from token_exchange.services import pools
from token_exchange.services import spending as llm
from token_exchange.services.exchange import Exchange

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
MAX_HOURS = 24 * 366 * 5
MAX_AGENTS = 100_000
LOG_LINES = 20
POOL_MIN = 50 * 10_000  # units: a pool job's minimum contribution (50 tokens)
EVENTS_KEPT = 500

# --- the activity model ---------------------------------------------------------------------------
# Everything below is behaviour (who does what, when, how big), calibrated so that 20 seeds reproduce the
# seed's "Final Balances", "Model Usage Patterns" and "Time-of-Day Effects"; none of it is a rule.

# Relative commit / request intensity by hour of day (seed: Time-of-Day Effects): heavy commits 0-4 (the seed
# counts 46 commits and 24 requests there; with these weights ~46 of the ~91 daily commits and ~23 of the
# ~125 requests fall there), balanced 5-12, fewer commits 13-18 with steady LLM use, an evening spike of
# complex work (requests) 19-23.
HOUR_COMMITS = (3.0,) * 5 + (1.0,) * 8 + (0.45,) * 6 + (0.9,) * 5
HOUR_REQUESTS = (0.95,) * 5 + (1.0,) * 8 + (1.0,) * 6 + (1.4,) * 5
BANDS = (("0-4", range(5), "heavy commit activity"), ("5-12", range(5, 13), "balanced; rate limits kick in"),
         ("13-18", range(13, 19), "fewer commits, steady LLM use"),
         ("19-23", range(19, 24), "evening spike in complex work"))

# Projects (seed: Project Multipliers): agent-token-exchange and dotfiles fall in the default contract.
PROJECTS = (("nexushive-setup", 28), ("claude-monitor", 18), ("scheme-compiler", 10), ("scheme-lsp", 8),
            ("agent-token-exchange", 22), ("dotfiles", 14))

# Commit messages: keyword mixes (seed: Commit Message Bonuses); "plain" has no bonus keyword.
MESSAGES: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("emergency", 5, ("hotfix: {x} crash on startup", "security: sanitize {x} input", "urgent: restore {x}",
                      "critical: {x} loses data on restart")),
    ("bugfix", 24, ("fix: {x} off-by-one", "fix({x}): handle empty input", "resolve race in {x}",
                    "patch {x} for the new API", "bug: {x} ignores config")),
    ("testing", 15, ("test: cover {x} edge cases", "add spec for {x}", "raise {x} test coverage")),
    ("quality", 12, ("refactor {x}", "cleanup: remove dead {x} code", "optimize {x} hot path")),
    ("docs", 10, ("docs: explain {x}", "update readme for {x}", "documentation for {x}")),
    ("plain", 34, ("feat: add {x}", "add {x} support", "wire {x} into the pipeline", "implement {x}",
                   "chore: bump {x}")),
)
SUBJECTS = ("wallet", "ledger", "pool", "rate limiter", "scheduler", "parser", "repl", "dashboard", "hook",
            "config loader", "cache", "indexer", "monitor", "exporter", "cli")


@dataclass(frozen=True)
class Task:
    """A kind of LLM request: the task type (the agent's config picks the model unless ``model`` is set)."""

    task: str
    weight: int
    min_tokens: int
    max_tokens: int
    model: str | None = None
    large: float = 0.0          # probability the request is a large job (large_tokens range instead)
    large_tokens: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Strategy:
    """One agent's working day: how many commits and where, how many LLM sessions and of what.

    Counts are per day and regular (an agent works to a routine): the whole part every day, the fraction
    on that share of days; *when* each happens is drawn from the hour-of-day profiles.  Requests come in
    working sessions of a few requests 1-5 minutes apart, which is what runs claude into its hourly limit.
    """

    key: str
    label: str
    models: str
    commits_per_day: float
    projects: tuple[tuple[str, int], ...]
    sessions_per_day: float
    session: tuple[int, int]    # requests per session: min, max
    tasks: tuple[Task, ...]
    session_gap: int = 0        # seconds at least between the starts of two of its sessions in a day
    split_on_burst: bool = False  # a job refused for burst is redone in parts the burst limit allows
    pool_on_burst: float = 0.0  # ... or, with this probability, taken to a team pool instead
    joins_pools: bool = False
    messages: tuple[tuple[str, int], ...] | None = None  # keyword-group weights (default: MESSAGES' weights)


# The six seed agents (seed: Agent Hierarchy, Resource Management Strategies, Model Usage Patterns).
STRATEGIES: dict[str, Strategy] = {s.key: s for s in (
    Strategy("claude", "Quality at all costs", "Claude Opus (15/1K)", 11,
             (("claude-monitor", 85), ("nexushive-setup", 15)), 5, (6, 8),
             (Task("reasoning", 1, 8_000, 30_000, large=0.2, large_tokens=(34_000, 60_000)),
              Task("coding", 1, 6_000, 26_000, large=0.2, large_tokens=(34_000, 50_000))),
             session_gap=7200, split_on_burst=True, pool_on_burst=0.08,
             messages=(("bugfix", 40), ("testing", 15), ("quality", 20), ("docs", 5), ("plain", 20))),
    Strategy("builder", "Pragmatic choices", "Mixed (task-based)", 19.4,
             (("nexushive-setup", 80), ("claude-monitor", 20)), 10, (2, 4),
             (Task("coding", 45, 5_000, 60_000), Task("planning", 55, 8_000, 30_000)), joins_pools=True),
    Strategy("lambda", "Mostly working, rarely spending", "Claude Opus, rarely", 16.6,
             (("scheme-compiler", 55), ("scheme-lsp", 45)), 1, (1, 1),
             (Task("review", 1, 6_000, 8_000),), joins_pools=True),
    Strategy("spark", "Balanced approach", "Claude Sonnet + Llama", 14,
             (("agent-token-exchange", 60), ("dotfiles", 40)), 12, (4, 4),
             (Task("general", 3, 10_000, 22_000, model="claude-sonnet"),
              Task("drafting", 2, 5_000, 40_000, model="llama3.2"))),
    Strategy("observer", "Analysis", "Gemini Pro (2/1K)", 21.3,
             (("claude-monitor", 80), ("nexushive-setup", 20)), 5, (1, 3),
             (Task("analysis", 1, 8_000, 18_000),), joins_pools=True),
    Strategy("zero", "Maximum efficiency", "Llama 3.2 (0.1/1K)", 9.3,
             (("scheme-compiler", 60), ("dotfiles", 40)), 4, (2, 4),
             (Task("general", 1, 20_000, 100_000),)),
)}
GENERIC = Strategy("generic", "Primary model", "(primary LLM)", 14, PROJECTS, 6, (1, 3),
                   (Task("general", 1, 5_000, 25_000),))
SEED_ORDER = ("claude", "builder", "observer", "lambda", "spark", "zero")
# The calibration's targets.  Seed, "Final Balances" (a 24-hour run): agent -> (earned, spent, final) in tokens;
# its Final = Start + Earned - Spent, so "spent" is everything that left the wallet (LLM spend and pool stakes).
SEED_TABLE: dict[str, tuple[int, int, int]] = {
    "claude": (3255, 3935, 9320), "builder": (5538, 977, 14561), "observer": (4260, 284, 13976),
    "lambda": (4103, 105, 13998), "spark": (1978, 1419, 10559), "zero": (1539, 75, 11464)}
# Seed, "Time-of-Day Effects": hours 0-4 saw 46 commits and 24 requests.
SEED_BANDS: dict[str, tuple[int, int]] = {"0-4": (46, 24)}
FINDINGS = ("only_claude_negative", "zero_spends_least", "no_reserve_breach", "claude_hits_burst",
            "claude_hits_hourly")


def strategy_for(name: str, template: str | None = None) -> Strategy:
    return STRATEGIES.get(template or name) or STRATEGIES.get(name) or GENERIC


class _Table:
    """Weighted choice by one ``random()`` and a bisect over cumulative weights (built once)."""

    def __init__(self, items: Sequence[tuple[Any, float]]) -> None:
        self.items = [item for item, _ in items]
        self.cum = list(itertools.accumulate(w for _, w in items))
        self.total = self.cum[-1]

    def pick(self, rng: random.Random) -> Any:
        return self.items[min(bisect.bisect_right(self.cum, rng.random() * self.total), len(self.items) - 1)]


COMMIT_HOURS = _Table(list(enumerate(HOUR_COMMITS)))
REQUEST_HOURS = _Table(list(enumerate(HOUR_REQUESTS)))
MESSAGE_TEXTS = {group: tuple(t.format(x=x) for t in templates for x in SUBJECTS)
                 for group, _, templates in MESSAGES}


class _Plan:
    """A strategy's draw tables, built once per run."""

    def __init__(self, s: Strategy) -> None:
        self.s = s
        self.projects = _Table(s.projects)
        self.tasks = _Table([(t, t.weight) for t in s.tasks])
        weights = s.messages or tuple((group, w) for group, w, _ in MESSAGES)
        self.messages = _Table([(MESSAGE_TEXTS[group], w) for group, w in weights])


def _count(rng: random.Random, per_day: float) -> int:
    """A routine's count for one day: the whole part, plus one on the fraction of days."""
    whole = int(per_day)
    return whole + (rng.random() < per_day - whole)


# --- a fast journal for throwaway homes ----------------------------------------------------------
class SimJournal:
    """An in-memory ``Journal`` (positions are counts); ``persist()`` writes a real ``ledger.toml``."""

    name = "memory"

    def __init__(self, home: Path) -> None:
        self.home = home
        self.txns: list[Txn] = []

    def lock_path(self) -> Path:
        return self.home / "ledger.lock"

    def end(self) -> str:
        return str(len(self.txns))

    def is_behind(self, position: str, end: str) -> bool:
        return int(position or 0) <= int(end or 0)

    def verify_position(self, position: str, last_hash: str) -> str:
        return ""

    def append(self, txns: list[Txn]) -> str:
        self.txns.extend(txns)
        return str(len(self.txns))

    def read_from(self, position: str) -> Chunk:
        return Chunk(self.txns[int(position or 0):], self.end())

    def chunks(self, position: str = "") -> Iterator[Chunk]:
        yield self.read_from(position)

    def read_all(self) -> Chunk:
        return Chunk(list(self.txns), self.end())

    def seal(self, txns: list[Txn], last_hash: str) -> list[Txn]:
        return chain(txns, last_hash)

    def accept(self, idx: Index, txns: list[Txn]) -> tuple[list[Txn], bool]:
        return txns, False

    def link_problems(self, txns: list[Txn]) -> list[str]:
        return []

    def link_notes(self) -> list[str]:
        return []

    def set_aside(self, tail: Tail) -> Path:  # pragma: no cover - nothing is ever torn in memory
        raise UserError("an in-memory journal has no tail")

    def new_records(self, old: str, new: str) -> list[Txn]:
        return self.txns[int(old or 0):int(new or 0)]

    def sync(self, ledger: Ledger, remote: str) -> Any:
        raise UserError("a simulated ledger does not sync")

    def setup(self) -> dict[str, Any]:
        return {}

    def existing(self) -> str | None:
        return None

    def persist(self) -> int:
        """Write every transaction to HOME/ledger.toml in the TOML journal's format; returns its size."""
        from token_exchange.ledger.backends.toml import HEADER, render

        path = self.home / "ledger.toml"
        with open(path, "wb") as f:
            f.write(HEADER)
            chunk: list[str] = []
            for i, t in enumerate(self.txns, 1):
                chunk.append(render(t))
                if i % 5000 == 0:
                    f.write("".join(chunk).encode("utf-8"))
                    chunk = []
            f.write("".join(chunk).encode("utf-8"))
        return path.stat().st_size


class SimIndex(MemoryIndex):
    """The index of a throwaway home: the dict-backed ``MemoryIndex`` (same answers as SQLite, no SQL)."""


class SimExchange(Exchange):
    """The real ``Exchange`` over a ``SimJournal`` and an in-memory index."""

    def __init__(self, home: Path, cfg: Config, clock: Callable[[], datetime]) -> None:
        super().__init__(home, cfg, clock)
        self.journal = SimJournal(home)
        self._ledger = Ledger(self.journal, Path(":memory:"), clock, index=SimIndex())

    def persist(self) -> None:
        """Write ledger.toml and a caught-up index.sqlite so `tx --home` can read the result."""
        size = self.journal.persist()
        target = SqliteIndex(self.home / "index.sqlite")
        try:
            target.rebuild([Chunk(self.journal.txns, str(size))])
        finally:
            target.close()


# --- configuration for a run ---------------------------------------------------------------------
def _toml_key(name: str) -> str:
    return json.dumps(name)


def sim_config(base_text: str, path: Path | None, n_agents: int | None) -> tuple[str, Config, dict[str, str]]:
    """The run's config text (generated agents appended), the parsed config and agent -> strategy template."""
    cfg = config_mod.parse(base_text, path)
    names = list(cfg.agents)
    if not names:
        raise UserError("the config has no agents to simulate")
    templates = {n: n for n in names}
    if n_agents is None or n_agents == len(names):
        return base_text, cfg, templates
    if n_agents < 1 or n_agents > MAX_AGENTS:
        raise UserError(f"--agents must be between 1 and {MAX_AGENTS}")
    if n_agents < len(names):
        keep = names[:n_agents]
        cfg = cfg._replace(agents={n: cfg.agents[n] for n in keep})
        return base_text, cfg, {n: n for n in keep}
    extra: list[str] = []
    agents = dict(cfg.agents)
    k = 2
    while len(agents) < n_agents:
        for base in names:
            if len(agents) >= n_agents:
                break
            name = f"{base[:56]}-{k}"
            if name in agents:
                continue
            a = cfg.agents[base]
            agents[name] = a._replace(name=name, emails=())
            templates[name] = base
            lines = [f"\n[agents.{_toml_key(name)}]", f"level = {a.level}", f"base_rate = {a.base_rate}",
                     f"primary_llm = {json.dumps(a.primary_llm)}", "emails = []"]
            if a.preferred_llm:
                pref = ", ".join(f"{_toml_key(t)} = {json.dumps(m)}" for t, m in a.preferred_llm.items())
                lines.append(f"preferred_llm = {{ {pref} }}")
            if a.limits != cfg.limits:
                lim = ", ".join(f"{n} = {fmt(getattr(a.limits, n))}" for n in ("hourly", "daily", "burst",
                                                                                 "reserve"))
                lines.append(f"limits = {{ {lim} }}")
            extra.append("\n".join(lines) + "\n")
        k += 1
    text = base_text.rstrip("\n") + "\n\n# Agents generated by `tx simulate --agents`" + "".join(extra)
    return text, cfg._replace(agents=agents), templates


# --- results ---------------------------------------------------------------------------------------
LIMIT_KINDS = ("burst", "hourly", "daily", "reserve")


@dataclass
class LimitEvent:
    at: datetime
    agent: str
    kind: str          # burst | hourly | daily | reserve | balance | other
    message: str
    model: str
    tokens: int
    cost: Units
    pool: str = ""

    def clock(self, multi_day: bool) -> str:
        hms = self.at.strftime("%H:%M:%S")
        if multi_day:
            return f"day {(self.at - EPOCH).days + 1} {hms}"
        return hms

    def line(self, multi_day: bool = False) -> str:
        """The seed's log form: ``[23:51:34] WARN: Transaction exceeds burst limit (660.0 > 500)``."""
        text = self.message
        if text.startswith("Exceeds "):
            text = "Transaction exceeds " + text[len("Exceeds "):]
        who = f"{self.agent}, {self.model}" + (f", {self.tokens:,} tokens" if self.tokens else "")
        if self.pool:
            who += f", pool {self.pool}"
        return f"[{self.clock(multi_day)}] WARN: {text}  ({who})"

    def to_json(self) -> dict[str, Any]:
        return {"time": self.at.strftime("%Y-%m-%dT%H:%M:%SZ"), "agent": self.agent, "kind": self.kind,
                "message": self.message, "model": self.model, "tokens": self.tokens, "cost": to_decimal(self.cost),
                "pool": self.pool or None}


@dataclass
class AgentStats:
    requests: int = 0
    accepted: int = 0
    commits: int = 0
    min_balance: Units | None = None
    by_model: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0]))
    refusals: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    pool_jobs: int = 0
    pool_contributions: int = 0
    deferred: int = 0   # requests not sent: the agent was waiting for a limit to free up (or for income)


@dataclass
class SimResult:
    seed: int
    hours: int
    start: datetime
    agents: list[str]
    templates: dict[str, str]
    cfg: Config
    balances: dict[str, dict[str, Units]]
    stats: dict[str, AgentStats]
    hourly: list[dict[str, int]]
    events: list[LimitEvent]
    event_counts: dict[str, dict[str, int]]
    pools: list[dict[str, Any]]
    transactions: int
    home: Path | None = None

    def findings(self) -> dict[str, Any]:
        """The seed's key insights, checked on this run."""
        net = {a: self.balances[a]["net"] for a in self.agents}
        negative = sorted(a for a, v in net.items() if v < 0)
        spent = {a: self.balances[a]["spent"] + self.balances[a]["pooled"] for a in self.agents}
        least = min(self.agents, key=lambda a: (spent[a], a)) if self.agents else None
        lowest = {a: self.stats[a].min_balance for a in self.agents}
        breaches = sorted(a for a, low in lowest.items() if low is not None and low < self.cfg.agents[a].limits.reserve)
        c = self.event_counts.get("claude", {})
        return {"net_negative": negative, "only_claude_negative": negative == ["claude"],
                "claude_hits_burst": c.get("burst", 0) > 0, "claude_hits_hourly": c.get("hourly", 0) > 0,
                "least_spender": least, "zero_spends_least": least == "zero",
                "reserve_breaches": breaches, "no_reserve_breach": not breaches}

    def to_json(self) -> dict[str, Any]:
        multi = self.hours > 24
        d: dict[str, Any] = {
            "seed": self.seed, "hours": self.hours, "start": self.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "agents": len(self.agents), "transactions": self.transactions,
            "home": str(self.home) if self.home else None,
            "balances": [{"agent": a, "strategy": self.templates.get(a, a),
                          **{k: to_decimal(v) for k, v in self.balances[a].items()},
                          "min_balance": to_decimal(self.stats[a].min_balance or self.balances[a]["final"])}
                         for a in self.agents],
            "model_usage": [self._usage(a) for a in self.agents],
            "limit_events": {"counts": {a: {k: self.event_counts.get(a, {}).get(k, 0) for k in
                                            (*LIMIT_KINDS, "balance", "other")} for a in self.agents},
                             "total": sum(sum(c.values()) for c in self.event_counts.values()),
                             "log": [e.line(multi) for e in self.events[:LOG_LINES]],
                             "events": [e.to_json() for e in self.events[:EVENTS_KEPT]],
                             "events_truncated": len(self.events) > EVENTS_KEPT},
            "hourly": [{"hour": h, **{k: (to_decimal(v) if k in ("earned", "spent") else v)
                                      for k, v in row.items()}} for h, row in enumerate(self.hourly)],
            "bands": self.bands(),
            "pools": self.pools,
            "findings": self.findings(),
        }
        return d

    def _usage(self, a: str) -> dict[str, Any]:
        st = self.stats[a]
        strat = strategy_for(a, self.templates.get(a))
        spent = self.balances[a]["spent"]
        return {"agent": a, "strategy": strat.label, "preferred_models": strat.models,
                "requests": st.requests, "accepted": st.accepted, "commits": st.commits,
                "daily_spend": to_decimal(int(spent * 24 // max(self.hours, 1))),
                "models": {m: {"requests": v[0], "tokens": v[1], "spent": to_decimal(v[2])}
                           for m, v in sorted(st.by_model.items())},
                "deferred": st.deferred, "pool_jobs": st.pool_jobs, "pool_contributions": st.pool_contributions}

    def bands(self) -> list[dict[str, Any]]:
        out = []
        for label, hours, note in BANDS:
            rows = [self.hourly[h] for h in hours]
            out.append({"hours": label, "note": note, "commits": sum(r["commits"] for r in rows),
                        "requests": sum(r["requests"] for r in rows),
                        "refusals": sum(r["refusals"] for r in rows)})
        return out


# --- spending: an adapter over the real engine (llm.py, limits.py, pools.py) ----------------------
@dataclass
class SpendOutcome:
    ok: bool
    model: str
    cost: Units
    kind: str = ""       # refusal kind: burst | hourly | daily | reserve | balance | other
    message: str = ""
    cap: Units = 0       # the refusing limit (burst: the largest single spend allowed)
    frees_at_us: int | None = None  # hourly/daily: when the engine says enough capacity frees up


@dataclass
class PoolJob:
    pool: str
    lead: str
    model: str
    tokens: int
    contributions: dict[str, Units] = field(default_factory=dict)
    refusals: list[tuple[str, SpendOutcome]] = field(default_factory=list)
    spent: Units = 0
    refunded: Units = 0
    outcome: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"pool": self.pool, "lead": self.lead, "model": self.model, "tokens": self.tokens,
                "contributions": {a: to_decimal(v) for a, v in self.contributions.items()},
                "refused": [{"agent": a, "kind": r.kind, "message": r.message} for a, r in self.refusals],
                "spent": to_decimal(self.spent), "refunded": to_decimal(self.refunded), "outcome": self.outcome}


REFUSAL_KINDS = {"burst": "burst", "hourly": "hourly", "daily": "daily", "reserve": "reserve", "funds": "balance"}


def refusal_outcome(e: Any, model: str) -> SpendOutcome:
    """A ``limits.LimitRefused`` as an outcome: kind, and the engine's own message (first clause)."""
    r = e.refusal
    return SpendOutcome(False, model, r.amount, REFUSAL_KINDS.get(r.limit, "other"), r.message, r.cap,
                        e.frees_at_us)


class Spending:
    """Calls the real spending engine; turns its refusals into (kind, message) limit events."""

    def __init__(self, ex: Exchange) -> None:
        self.ex = ex

    def llm(self, agent: str, task: str, tokens: int, model: str | None, id: str) -> SpendOutcome:
        name = model or self.ex.cfg.agents[agent].model_for(task)
        try:
            res = llm.spend(self.ex, agent, task, tokens, model=name, id=id)
        except LimitRefused as e:
            return refusal_outcome(e, name)
        return SpendOutcome(True, name, res.cost)

    def pool_job(self, id: str, lead: str, members: list[str], model: str, tokens: int,
                 description: str) -> PoolJob:
        """Create a pool, members join and chip in equal shares (under their own limits), the pool pays
        for the job if the shares cover it, then the pool is dissolved (unspent stakes refunded)."""
        ex = self.ex
        name = id.lower()
        job = PoolJob(name, lead, model, tokens)
        cost = llm.cost(ex.cfg.model(model), tokens)
        share = -(-cost // len(members) // SCALE) * SCALE  # equal shares, whole tokens, rounded up
        pools.create(ex, name, lead, POOL_MIN)
        for a in members[1:]:
            pools.join(ex, name, a)
        for i, a in enumerate(members):
            try:
                c = pools.contribute(ex, name, a, share, id=f"{id}-c{i}")
                job.contributions[a] = c.txn.amount
            except LimitRefused as e:
                job.refusals.append((a, refusal_outcome(e, model)))
            except UserError as e:  # pragma: no cover - e.g. below the pool minimum
                job.refusals.append((a, SpendOutcome(False, model, share, "other", str(e))))
        funded = sum(job.contributions.values())
        payers = [a for a in members if a in job.contributions]
        if funded < cost and payers:  # one top-up round: those who could pay cover the gap
            extra = -(-(cost - funded) // len(payers) // SCALE) * SCALE
            for i, a in enumerate(payers):
                try:
                    c = pools.contribute(ex, name, a, max(extra, POOL_MIN), id=f"{id}-t{i}")
                    job.contributions[a] += c.txn.amount
                except LimitRefused as e:
                    job.refusals.append((a, refusal_outcome(e, model)))
            funded = sum(job.contributions.values())
        if funded >= cost:
            res = pools.spend(ex, name, model, tokens, description, id=f"{id}-s", by=lead)
            job.spent = res.txn.amount
            job.outcome = "spent"
        else:
            job.outcome = "underfunded"
        job.refunded = sum(pools.dissolve(ex, name, by=lead).refunds.values())
        return job


# --- the engine ------------------------------------------------------------------------------------
# Event kinds: a commit; a session's first request; a later request of a session; a part of a split job.
COMMIT, SESSION, REQUEST, PART = 0, 1, 2, 3
EPOCH_US = int(EPOCH.timestamp()) * 1_000_000
PAUSE_FALLBACK = 3600  # seconds an agent waits after a window refusal the engine gives no time for
POOL_NEIGHBOURHOOD = 50
SPACING_TRIES = 20  # draws to find a session start ``session_gap`` away from the agent's others that day


class Simulation:
    """One run.  ``run()`` returns a ``SimResult``; ``progress(done, total)`` is called per hour."""

    def __init__(self, hours: int = 24, seed: int = 1, agents: int | None = None, config: Path | None = None,
                 out: Path | None = None, progress: Callable[[int, int], None] | None = None,
                 summary: bool = False) -> None:
        self.want_summary = summary
        self.summary: Any = None
        if not 1 <= hours <= MAX_HOURS:
            raise UserError(f"--hours must be between 1 and {MAX_HOURS}")
        self.hours, self.seed, self.out, self.progress = hours, seed, out, progress
        if config is not None:
            try:
                base_text = Path(config).read_text("utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise UserError(f"cannot read --config {config}: {e}") from None
        else:
            base_text = config_mod.default_text()
        self.config_text, self.cfg, self.templates = sim_config(base_text, Path(config) if config else None, agents)
        self.rng = random.Random(seed)
        self.now = EPOCH
        self.counter = 0

    def clock(self) -> datetime:
        return self.now

    def _id(self, what: str) -> str:
        self.counter += 1
        return f"sim{self.seed}-{what}{self.counter}"

    def run(self) -> SimResult:
        import tempfile

        if self.out is not None:
            home = Path(self.out).expanduser().absolute()
            if home.exists() and any(home.iterdir()):
                raise UserError(f"--out {home} is not empty; the simulation only writes to a new or empty directory")
            home.mkdir(parents=True, exist_ok=True)
            return self._run_in(home, keep=True)
        with tempfile.TemporaryDirectory(prefix="tx-sim-") as tmp:
            return self._run_in(Path(tmp), keep=False)

    def _run_in(self, home: Path, keep: bool) -> SimResult:
        (home / "config.toml").write_text(self.config_text, "utf-8")
        self.ex = ex = SimExchange(home, self.cfg, self.clock)
        self.spending = Spending(ex)
        names = self.names = list(self.cfg.agents)
        plans: dict[Strategy, _Plan] = {}
        self.plans: list[_Plan] = []
        for a in names:
            s = strategy_for(a, self.templates.get(a))
            if s not in plans:
                plans[s] = _Plan(s)
            self.plans.append(plans[s])
        self.helpers = [i for i, p in enumerate(self.plans) if p.s.joins_pools]
        self.stats = {a: AgentStats() for a in names}
        self.agent_stats = [self.stats[a] for a in names]
        self.hourly = [{"commits": 0, "requests": 0, "refusals": 0, "earned": 0, "spent": 0} for _ in range(24)]
        self.events: list[LimitEvent] = []
        self.event_counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.pool_log: list[dict[str, Any]] = []
        # Each agent's reaction to refusals: after an hourly/daily refusal it pauses its LLM work until the
        # time the engine says capacity frees up; after a reserve/funds refusal until it has earned again.
        self.paused_until = [0] * len(names)
        self.broke = [False] * len(names)
        # Events: (at, order, agent, what, data), bucketed by the hour they fall in; the playing hour's own
        # additions go to a small heap.
        self.queue: list[tuple[int, int, int, int, Any]] = []
        self.buckets: dict[int, list[tuple[int, int, int, int, Any]]] = {}
        self.hour = -1
        self.order = 0
        try:
            with ex.ledger.locked():
                ex.open_all()
                for h in range(self.hours):
                    if h % 24 == 0:
                        self._plan_day(h // 24)
                    self._play_hour(h)
                    if self.progress:
                        self.progress(h + 1, self.hours)
                result = self._result(names)
                if self.want_summary:
                    from token_exchange.viz.dashboard import collect

                    self.summary = collect(ex.ledger.index, names)
            if keep:
                ex.persist()
                result.home = home
            return result
        finally:
            ex.close()

    # --- drawing the activity ------------------------------------------------------------------------
    def _push(self, at: int, agent: int, what: int, data: Any = None) -> None:
        """Schedule an event: into the bucket of the hour it falls in, or, if that hour is playing, into
        its small heap (so nothing ever sorts more than one hour of events)."""
        self.order += 1
        event = (at, self.order, agent, what, data)
        hour = at // 3600
        if hour <= self.hour:
            heapq.heappush(self.queue, event)
        else:
            self.buckets.setdefault(hour, []).append(event)

    def _plan_day(self, day: int) -> None:
        """Every agent's commits and LLM sessions of one day, at times drawn from the hour profiles.

        A session is planned as its first request and its length; each request schedules the next one
        when it is done, so a session the limits stop costs nothing more."""
        rng = self.rng
        base = day * 86400
        commit_hour, request_hour = COMMIT_HOURS.pick, REQUEST_HOURS.pick
        for i, plan in enumerate(self.plans):
            s = plan.s
            for _ in range(_count(rng, s.commits_per_day)):
                self.order += 1
                at = base + commit_hour(rng) * 3600 + rng.randrange(3600)
                self.buckets.setdefault(at // 3600, []).append((at, self.order, i, COMMIT, None))
            if self.broke[i]:  # out of funds (refused by reserve or balance) and nothing earned since
                continue
            lo, hi = s.session
            starts: list[int] = []
            for _ in range(_count(rng, s.sessions_per_day)):
                at = request_hour(rng) * 3600 + rng.randrange(3600)
                for _ in range(SPACING_TRIES if s.session_gap else 0):
                    if all(abs(at - other) >= s.session_gap for other in starts):
                        break
                    at = request_hour(rng) * 3600 + rng.randrange(3600)
                starts.append(at)
                self._push(base + at, i, SESSION, rng.randint(lo, hi) - 1)

    def _play_hour(self, hour: int) -> None:
        """Play one hour's events in time order: its bucket, sorted, merged with what the hour itself adds."""
        self.hour = hour
        bucket = self.buckets.pop(hour, [])
        bucket.sort()
        queue = self.queue  # events scheduled during this hour for this hour (next requests, split parts)
        i, n = 0, len(bucket)
        while i < n or queue:
            if queue and (i == n or queue[0] < bucket[i]):
                at, _, agent, what, data = heapq.heappop(queue)
            else:
                at, _, agent, what, data = bucket[i]
                i += 1
            self.now = EPOCH + timedelta(seconds=at)
            if what == COMMIT:
                self._commit(agent, at)
            else:
                self._request(agent, at, what, data)

    # --- acting through the engine -------------------------------------------------------------------
    def _commit(self, i: int, at: int) -> None:
        rng = self.rng
        agent = self.names[i]
        plan = self.plans[i]
        project = plan.projects.pick(rng)
        msg = rng.choice(plan.messages.pick(rng))
        out = self.ex.commit(agent, project, msg, reward_id=self._id("c"))
        self.agent_stats[i].commits += 1
        row = self.hourly[at // 3600 % 24]
        row["commits"] += 1
        row["earned"] += out.amount
        if out.amount > 0:
            self.broke[i] = False

    def _request(self, i: int, at: int, what: int, data: Any) -> None:
        """One LLM request (``data``: how many more the session holds, or a split part's (task, tokens)).

        Refused by a window limit, the agent stops the session and pauses until the engine says capacity
        frees up; a session due meanwhile starts then.  Refused by the reserve (or funds), it stops asking
        until it has earned again."""
        st = self.agent_stats[i]
        more = 0 if what == PART else data
        if self.broke[i]:
            st.deferred += 1 + more
            return
        if at < self.paused_until[i]:
            if what == SESSION:
                self._push(self.paused_until[i], i, what, data)
            else:
                st.deferred += 1 + more
            return
        rng = self.rng
        agent = self.names[i]
        plan = self.plans[i]
        if what != PART:
            task: Task = plan.tasks.pick(rng)
            lo, hi = task.large_tokens if task.large and rng.random() < task.large else (task.min_tokens,
                                                                                         task.max_tokens)
            tokens = rng.randrange(lo // 1000, hi // 1000 + 1) * 1000
        else:
            task, tokens = data
        hod = at // 3600 % 24
        st.requests += 1
        self.hourly[hod]["requests"] += 1
        res = self.spending.llm(agent, task.task, tokens, task.model, self._id("r"))
        if res.ok:
            st.accepted += 1
            row = st.by_model[res.model]
            row[0] += 1
            row[1] += tokens
            row[2] += res.cost
            self.hourly[hod]["spent"] += res.cost
            self._track_min(agent)
        else:
            self._refused(agent, res, tokens, hod)
            if res.kind in ("hourly", "daily"):
                until = (res.frees_at_us - EPOCH_US + 999_999) // 1_000_000 if res.frees_at_us \
                    else at + PAUSE_FALLBACK
                self.paused_until[i] = max(until, at + 1)
                st.deferred += more  # the rest of this session is dropped; later sessions wait for the window
                return
            if res.kind in ("reserve", "balance"):
                self.broke[i] = True
                st.deferred += more
                return
            if res.kind == "burst" and what != PART:
                s = plan.s
                if s.pool_on_burst and rng.random() < s.pool_on_burst:
                    self._pool_job(i, res.model, tokens, hod)
                elif s.split_on_burst and res.cap > 0:
                    parts = -(-res.cost // res.cap)
                    t = at
                    for k in range(parts):
                        t += rng.randrange(60, 180)
                        self._push(t, i, PART, (task, tokens // parts + (k < tokens % parts)))
        if more:
            self._push(at + rng.randrange(60, 300), i, REQUEST, more - 1)

    def _refused(self, agent: str, res: Any, tokens: int, hod: int, pool: str = "") -> None:
        self.stats[agent].refusals[res.kind] += 1
        self.event_counts[agent][res.kind] += 1
        self.hourly[hod]["refusals"] += 1
        if len(self.events) <= EVENTS_KEPT:  # the result shows the first EVENTS_KEPT (and says if there were more)
            self.events.append(LimitEvent(self.now, agent, res.kind, res.message, res.model, tokens, res.cost,
                                          pool))

    def _pool_job(self, lead: int, model: str, tokens: int, hod: int) -> None:
        """An expensive job no single agent may afford: the lead and 2-3 teammates pool for it."""
        rng = self.rng
        helpers = self.helpers
        if len(helpers) > POOL_NEIGHBOURHOOD:  # big runs: pick from a neighbourhood, not the whole population
            start = rng.randrange(len(helpers))
            helpers = helpers[start:start + POOL_NEIGHBOURHOOD]
        helpers = [h for h in helpers if h != lead]
        if not helpers:
            return
        name = self.names[lead]
        members = [name, *(self.names[h] for h in rng.sample(helpers, min(len(helpers), rng.choice((2, 3)))))]
        job = self.spending.pool_job(self._id("pool"), name, members, model, tokens,
                                     f"opus job for {name}: {rng.choice(SUBJECTS)} design review")
        self.stats[name].pool_jobs += 1
        for a, amount in job.contributions.items():
            if amount:
                self.stats[a].pool_contributions += 1
                self._track_min(a)
        for a, res in job.refusals:
            self._refused(a, res, 0, hod, pool=job.pool)
        if job.spent:
            self.hourly[hod]["spent"] += job.spent
        self.pool_log.append(job.to_json())

    def _track_min(self, agent: str) -> None:
        bal = self.ex.ledger.index.account(agent)
        st = self.stats[agent]
        if st.min_balance is None or bal < st.min_balance:
            st.min_balance = bal

    def _result(self, names: list[str]) -> SimResult:
        idx = self.ex.ledger.index
        balances = {}
        for a in names:
            b = idx.balance(a)
            pooled = b.by_kind.get("contribute", 0) - b.by_kind.get("refund", 0)
            start = self.cfg.starting_balance
            balances[a] = {"start": start, "earned": b.earned, "spent": b.spent, "pooled": pooled,
                           "final": b.balance, "net": b.balance - start}
        return SimResult(self.seed, self.hours, EPOCH, names, self.templates, self.cfg, balances, self.stats,
                         self.hourly, self.events, {a: dict(c) for a, c in self.event_counts.items()},
                         self.pool_log, idx.count())


def simulate(hours: int = 24, seed: int = 1, agents: int | None = None, config: Path | None = None,
             out: Path | None = None, progress: Callable[[int, int], None] | None = None) -> SimResult:
    return Simulation(hours, seed, agents, config, out, progress).run()


def _median(values: Sequence[int]) -> int:
    """The median of whole numbers, as a whole number (the lower unit when it falls between two)."""
    s = sorted(values)
    n = len(s)
    return (s[(n - 1) // 2] + s[n // 2]) // 2


def calibration(runs: Sequence[SimResult]) -> dict[str, Any]:
    """Runs of the seed's setting (24 h, six agents) against the seed's figures: each agent's median earned,
    spent (LLM spend plus net pool stakes, as the seed's Final = Start + Earned - Spent) and final balance,
    in units; how many runs show each of the seed's findings; the median commits and requests per band."""
    agents: dict[str, dict[str, int]] = {}
    for a in SEED_TABLE:
        rows = [r.balances[a] for r in runs if a in r.balances]
        if rows:
            agents[a] = {"earned": _median([b["earned"] for b in rows]),
                         "spent": _median([b["spent"] + b["pooled"] for b in rows]),
                         "final": _median([b["final"] for b in rows])}
    tally = {k: 0 for k in FINDINGS}
    bands: dict[str, list[list[int]]] = {label: [[], []] for label, _, _ in BANDS}
    for r in runs:
        f = r.findings()
        for k in FINDINGS:
            tally[k] += bool(f[k])
        for b in r.bands():
            bands[b["hours"]][0].append(b["commits"])
            bands[b["hours"]][1].append(b["requests"])
    return {"runs": len(runs), "agents": agents, "findings": tally,
            "bands": {k: {"commits": _median(c), "requests": _median(q)} for k, (c, q) in bands.items()}}
