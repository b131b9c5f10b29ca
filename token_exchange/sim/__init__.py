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
journal and an in-memory SQLite index (``SimJournal``), inside one
``ledger.locked()`` block, so no event pays for an fsync or a lock.  The real
``Ledger`` class does the appends, hash chaining and indexing.  With
``--out DIR`` the journal is written to ``DIR/ledger.toml`` (and the index
saved) at the end, so ``tx --home DIR ...`` can inspect the result.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterator
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
from token_exchange.services.exchange import Exchange

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
MAX_HOURS = 24 * 366 * 5
MAX_AGENTS = 100_000
LOG_LINES = 20
POOL_MIN = 50 * 10_000  # units: a pool job's minimum contribution (50 tokens)
EVENTS_KEPT = 500

# --- the activity model ---------------------------------------------------------------------------
# Relative commit / request intensity by hour of day (seed: Time-of-Day Effects): heavy commits 0-4,
# balanced 5-12, fewer commits 13-18 with steady LLM use, an evening spike of complex work 19-23.
HOUR_COMMITS = (1.7,) * 5 + (1.0,) * 8 + (0.55,) * 6 + (1.25,) * 5
HOUR_REQUESTS = (0.85,) * 5 + (1.0,) * 8 + (1.0,) * 6 + (1.35,) * 5
BANDS = (("0-4", range(0, 5), "heavy commit activity"), ("5-12", range(5, 13), "balanced; rate limits kick in"),
         ("13-18", range(13, 19), "fewer commits, steady LLM use"), ("19-23", range(19, 24), "evening spike in "
                                                                                        "complex work"))

# Projects (seed: Project Multipliers): two land in the default contract.
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
    key: str
    label: str
    models: str
    commits_per_day: float
    requests_per_day: float
    session: float              # mean requests per working session (clustered requests)
    tasks: tuple[Task, ...]
    pool_on_burst: float = 0.0  # a refused-for-burst job goes to a team pool with this probability
    joins_pools: bool = False


# The six seed agents.  Rates are tuned (not the rules) so the seed's findings come out for most seeds.
STRATEGIES: dict[str, Strategy] = {s.key: s for s in (
    Strategy("claude", "Quality at all costs", "Claude Opus (15/1K)", 10, 42, 2.5,
             (Task("reasoning", 5, 8_000, 30_000, large=0.2, large_tokens=(34_000, 60_000)),
              Task("coding", 5, 6_000, 26_000, large=0.15, large_tokens=(34_000, 50_000))),
             pool_on_burst=0.35),
    Strategy("builder", "Pragmatic choices", "Mixed (task-based)", 30, 30, 2.5,
             (Task("coding", 6, 5_000, 60_000), Task("planning", 4, 8_000, 30_000)), joins_pools=True),
    Strategy("lambda", "Mostly working, rarely spending", "Claude Opus, rarely", 26, 5, 1.0,
             (Task("review", 1, 5_000, 12_000),), joins_pools=True),
    Strategy("spark", "Balanced approach", "Claude Sonnet + Llama", 18, 20, 2.5,
             (Task("general", 1, 6_000, 24_000, model="claude-sonnet"),
              Task("drafting", 1, 5_000, 40_000, model="llama3.2")), joins_pools=True),
    Strategy("observer", "Analysis", "Gemini Pro (2/1K)", 28, 16, 2.0,
             (Task("analysis", 1, 8_000, 24_000),), joins_pools=True),
    Strategy("zero", "Maximum efficiency", "Llama 3.2 (0.1/1K)", 14, 20, 2.0,
             (Task("general", 1, 10_000, 60_000),)),
)}
GENERIC = Strategy("generic", "Primary model", "(primary LLM)", 14, 12, 2.0, (Task("general", 1, 5_000, 25_000),))
SEED_ORDER = ("claude", "builder", "observer", "lambda", "spark", "zero")


def strategy_for(name: str, template: str | None = None) -> Strategy:
    return STRATEGIES.get(template or name) or STRATEGIES.get(name) or GENERIC


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
        breaches = sorted(a for a in self.agents
                          if (self.stats[a].min_balance is not None
                              and self.stats[a].min_balance < self.cfg.agents[a].limits.reserve))
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
                "pool_jobs": st.pool_jobs, "pool_contributions": st.pool_contributions}

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
    return SpendOutcome(False, model, r.amount, REFUSAL_KINDS.get(r.limit, "other"), r.message)


class Spending:
    """Calls the real spending engine; turns its refusals into (kind, message) limit events."""

    def __init__(self, ex: Exchange) -> None:
        self.ex = ex

    def llm(self, agent: str, task: str, tokens: int, model: str | None, id: str) -> SpendOutcome:
        from token_exchange.rules.limits import LimitRefused
        from token_exchange.services import spending as llm

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
        from token_exchange.errors import UserError as Refusal_
        from token_exchange.rules.limits import LimitRefused
        from token_exchange.services import pools
        from token_exchange.services import spending as llm

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
            except Refusal_ as e:  # pragma: no cover - e.g. below the pool minimum
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
def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _pick(rng: random.Random, items: tuple[tuple[Any, int], ...] | list[tuple[Any, int]]) -> Any:
    total = sum(w for _, w in items)
    r = rng.random() * total
    for item, w in items:
        r -= w
        if r < 0:
            return item
    return items[-1][0]


@dataclass(order=True)
class _Event:
    at: int                     # seconds since EPOCH
    order: int
    agent: str = field(compare=False)
    what: str = field(compare=False)   # commit | session
    n: int = field(compare=False, default=1)


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
        names = list(self.cfg.agents)
        self.stats = {a: AgentStats() for a in names}
        self.hourly = [{"commits": 0, "requests": 0, "refusals": 0, "earned": 0, "spent": 0} for _ in range(24)]
        self.events: list[LimitEvent] = []
        self.event_counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.pool_log: list[dict[str, Any]] = []
        try:
            with ex.ledger.locked():
                ex.open_all()
                for h in range(self.hours):
                    self._hour(h, names)
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

    # one simulated hour: draw every agent's activity, then play it in time order
    def _hour(self, h: int, names: list[str]) -> None:
        rng = self.rng
        hod = h % 24
        cw = HOUR_COMMITS[hod] / (sum(HOUR_COMMITS) / 24) / 24
        rw = HOUR_REQUESTS[hod] / (sum(HOUR_REQUESTS) / 24) / 24
        base = h * 3600
        events: list[_Event] = []
        order = 0
        for a in names:
            st = strategy_for(a, self.templates.get(a))
            for _ in range(_poisson(rng, st.commits_per_day * cw)):
                order += 1
                events.append(_Event(base + rng.randrange(3600), order, a, "commit"))
            sessions = _poisson(rng, st.requests_per_day * rw / st.session)
            for _ in range(sessions):
                order += 1
                n = 1 + _poisson(rng, st.session - 1)
                events.append(_Event(base + rng.randrange(3600), order, a, "session", n))
        events.sort()
        for ev in events:
            self.now = EPOCH + timedelta(seconds=ev.at)
            if ev.what == "commit":
                self._commit(ev.agent, hod)
            else:
                at = ev.at
                for i in range(ev.n):
                    self.now = EPOCH + timedelta(seconds=at)
                    self._request(ev.agent, hod)
                    at += rng.randrange(20, 240)

    def _commit(self, agent: str, hod: int) -> None:
        rng = self.rng
        project = _pick(rng, PROJECTS)
        group = _pick(rng, [(m, w) for m in MESSAGES for w in (m[1],)])
        msg = rng.choice(group[2]).format(x=rng.choice(SUBJECTS))
        out = self.ex.commit(agent, project, msg, reward_id=self._id("c"))
        self.stats[agent].commits += 1
        self.hourly[hod]["commits"] += 1
        self.hourly[hod]["earned"] += out.amount

    def _request(self, agent: str, hod: int) -> None:
        rng = self.rng
        strat = strategy_for(agent, self.templates.get(agent))
        task = _pick(rng, [(t, t.weight) for t in strat.tasks])
        lo, hi = task.large_tokens if task.large and rng.random() < task.large else (task.min_tokens, task.max_tokens)
        tokens = rng.randrange(lo // 1000, hi // 1000 + 1) * 1000
        st = self.stats[agent]
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
            return
        self._refused(agent, res, tokens, hod)
        if res.kind == "burst" and strat.pool_on_burst and rng.random() < strat.pool_on_burst:
            self._pool_job(agent, res.model, tokens, hod)

    def _refused(self, agent: str, res: Any, tokens: int, hod: int, pool: str = "") -> None:
        self.stats[agent].refusals[res.kind] += 1
        self.event_counts[agent][res.kind] += 1
        self.hourly[hod]["refusals"] += 1
        self.events.append(LimitEvent(self.now, agent, res.kind, res.message, res.model, tokens, res.cost, pool))

    def _pool_job(self, lead: str, model: str, tokens: int, hod: int) -> None:
        """An expensive job no single agent may afford: the lead and 2-3 teammates pool for it."""
        rng = self.rng
        helpers = [a for a in self.cfg.agents if a != lead
                   and strategy_for(a, self.templates.get(a)).joins_pools]
        if not helpers:
            return
        if len(helpers) > 50:  # big runs: pick from a neighbourhood, not the whole population
            start = rng.randrange(len(helpers))
            helpers = helpers[start:start + 50]
        members = [lead, *rng.sample(helpers, min(len(helpers), rng.choice((2, 3))))]
        job = self.spending.pool_job(self._id("pool"), lead, members, model, tokens,
                                     f"opus job for {lead}: {rng.choice(SUBJECTS)} design review")
        self.stats[lead].pool_jobs += 1
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
