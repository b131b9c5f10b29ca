"""What a config is: the seed's tables as typed, exact values (``Config`` and its parts), the
built-in defaults, and the ``[meter]`` table's types.  Reading, caching and editing the file live in
``rules.config``; the checks that build these values, in ``rules.validate``."""

# No ``from __future__ import annotations``: typing.NamedTuple would compile each of these classes' string
# annotations into a ForwardRef (~10 us a field), and every hook process builds them.

import re
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from token_exchange.amounts import Units
from token_exchange.errors import UserError
from token_exchange.ledger.backends import NAMES

AGENT_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
BACKENDS = NAMES  # the backend registry (ledger/backends/__init__.py)
UNKNOWN_AUTHOR = ("ignore", "error")
SETTLEMENT_MODES = ("immediate", "on-merge")
CAP_SOURCES = ("commits", "issues")
CAP_WINDOWS = {"hourly": 3600, "daily": 86400, "weekly": 7 * 86400}
BRANCH_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,99}")


class Limits(NamedTuple):
    """Spending limits in units (burst: per spend; reserve: floor; windows: rolling)."""

    hourly: Units
    daily: Units
    burst: Units
    reserve: Units
    spend_provisional: bool = True  # False: unsettled provisional awards are not spendable ([settlement])


class Cap(NamedTuple):
    """The most an agent may earn from one source (commits, issues) in a rolling window."""

    source: str
    window: str  # hourly, daily, weekly
    seconds: int
    amount: Units


class Settlement(NamedTuple):
    """Who pays: the hooks at commit time (``immediate``), or ``tx settle`` once a commit lands on the
    default branch (``on-merge``: the hooks record a provisional award meanwhile)."""

    mode: str = "immediate"
    branch: str = "main"
    provisional_ttl: int = 30 * 86400  # seconds before an unlanded provisional award expires
    spend_provisional: bool = False


class Agent(NamedTuple):
    name: str
    level: int
    base_rate: Decimal
    primary_llm: str
    preferred_llm: dict[str, str]
    emails: tuple[str, ...]
    limits: Limits
    caps: tuple[Cap, ...] = ()  # [caps] with this agent's [agents.NAME.caps] overrides

    def model_for(self, task_type: str) -> str:
        """The agent's model for a task type, falling back to its primary LLM."""
        return self.preferred_llm.get(task_type, self.primary_llm)


class Model(NamedTuple):
    name: str
    cost_per_1k: Decimal
    input_per_1k: Decimal
    output_per_1k: Decimal
    # Metering (issue 18): prompt-cache prices; None = derived from input_per_1k (see cache_prices).
    cache_write_per_1k: Decimal | None = None
    cache_read_per_1k: Decimal | None = None

    def cache_prices(self) -> tuple[Decimal, Decimal]:
        """(cache write, cache read) per 1K: as configured, else ``CACHE_WRITE_FACTOR`` /
        ``CACHE_READ_FACTOR`` x input_per_1k (Anthropic bills a 5-minute cache write at 1.25x and a
        cache hit at 0.1x the base input price; OpenAI's cached input is 0.1x on current models)."""
        write = self.cache_write_per_1k
        read = self.cache_read_per_1k
        return (self.input_per_1k * CACHE_WRITE_FACTOR if write is None else write,
                self.input_per_1k * CACHE_READ_FACTOR if read is None else read)


class Contract(NamedTuple):
    name: str
    pattern: str | None  # None: the catch-all "default"
    multiplier: Decimal
    budget: Units


class BonusGroup(NamedTuple):
    name: str
    keywords: tuple[str, ...]
    multiplier: Decimal


class CommitRules(NamedTuple):
    pay_merges: bool = False
    pay_fixups: bool = False
    pay_reverts: bool = False


class Config(NamedTuple):
    backend: str
    starting_balance: Units
    unknown_author: str
    project: str
    notes_ref: str
    agents: dict[str, Agent]
    models: dict[str, Model]
    contracts: tuple[Contract, ...]
    bonuses: tuple[BonusGroup, ...]
    commit_rules: CommitRules
    issue_priority: dict[str, Decimal]
    issue_types: dict[str, Decimal]
    default_type_multiplier: Decimal
    limits: Limits
    reservation_ttl: int
    path: Path | None = None
    raw: dict[str, Any] = {}  # the parsed TOML, for tools that need keys we do not model
    settlement: Settlement = Settlement()
    caps: tuple[Cap, ...] = ()  # the [caps] defaults (each agent's effective caps: Agent.caps)

    @property
    def on_merge(self) -> bool:
        return self.settlement.mode == "on-merge"

    def agent(self, name: str) -> Agent:
        try:
            return self.agents[name]
        except KeyError:
            raise UserError(f"unknown agent {name!r} (known: {', '.join(sorted(self.agents))})") from None

    def model(self, name: str) -> Model:
        try:
            return self.models[name]
        except KeyError:
            raise UserError(f"unknown model {name!r} (known: {', '.join(sorted(self.models))})") from None



def default_text() -> str:
    """The commented default config (the seed's tables)."""
    return (Path(__file__).parent / "defaults.toml").read_text("utf-8")  # no importlib.resources: hooks pay ~20 ms


@lru_cache(maxsize=1)
def defaults() -> dict[str, Any]:
    import tomllib

    return tomllib.loads(default_text(), parse_float=Decimal)


# --- metering (issue 18): which agent a session is, which price table a model id is ----------------
CACHE_PRICE_KEYS = ("cache_write_per_1k", "cache_read_per_1k")
CACHE_WRITE_FACTOR = Decimal("1.25")
CACHE_READ_FACTOR = Decimal("0.1")
METER_SOURCES = ("claude-code", "codex", "aider")
METER_KEYS = ("default_agent", "fallback_model", "guard_headroom", "models", "sessions")
SESSION_MATCHERS = ("source", "cwd", "path", "session")
DEFAULT_GUARD_HEADROOM = Decimal("0.0001")


class SessionRule(NamedTuple):
    """One ``[[meter.sessions]]`` rule: every matcher it sets must match (globs, ``~`` = home)."""

    agent: str
    source: tuple[str, ...]  # empty: any source
    cwd: str | None
    path: str | None
    session: str | None

    def matches(self, source: str, cwd: str | None, path: str | None, session: str | None) -> bool:
        from fnmatch import fnmatchcase
        from os.path import expanduser

        if self.source and source not in self.source:
            return False
        for pattern, value in ((self.cwd, cwd), (self.path, path), (self.session, session)):
            if pattern is not None and (not value or not fnmatchcase(value, expanduser(pattern))):
                return False
        return True


class MeterConfig(NamedTuple):
    """The validated ``[meter]`` table (see defaults.toml)."""

    default_agent: str  # "" = none
    fallback_model: str  # "" = the agent's primary_llm
    guard_headroom: Units
    models: dict[str, str]  # real model id glob -> price table name
    sessions: tuple[SessionRule, ...]

    def agent_for(self, source: str, *, cwd: str | None = None, path: str | None = None,
                  session: str | None = None) -> str | None:
        """The first rule that matches, else ``default_agent``; None when neither gives an agent."""
        for rule in self.sessions:
            if rule.matches(source, cwd, path, session):
                return rule.agent
        return self.default_agent or None

