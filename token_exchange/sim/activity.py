"""The activity model: who commits what and when, and which LLM requests each agent attempts.

Everything here is behaviour (how often, where, how big), calibrated so that 20 seeds reproduce the seed's
"Final Balances", "Model Usage Patterns" and "Time-of-Day Effects"; none of it is a rule (the rules are the
engine's).  ``EPOCH`` is when the simulated clock starts.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)

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


def strategy_for(name: str, template: str | None = None) -> Strategy:
    return STRATEGIES.get(template or name) or STRATEGIES.get(name) or GENERIC


class Table:
    """Weighted choice by one ``random()`` and a bisect over cumulative weights (built once)."""

    def __init__(self, items: Sequence[tuple[Any, float]]) -> None:
        self.items = [item for item, _ in items]
        self.cum = list(itertools.accumulate(w for _, w in items))
        self.total = self.cum[-1]

    def pick(self, rng: random.Random) -> Any:
        return self.items[min(bisect.bisect_right(self.cum, rng.random() * self.total), len(self.items) - 1)]


COMMIT_HOURS = Table(list(enumerate(HOUR_COMMITS)))
REQUEST_HOURS = Table(list(enumerate(HOUR_REQUESTS)))
MESSAGE_TEXTS = {group: tuple(t.format(x=x) for t in templates for x in SUBJECTS)
                 for group, _, templates in MESSAGES}


class Plan:
    """A strategy's draw tables, built once per run."""

    def __init__(self, s: Strategy) -> None:
        self.s = s
        self.projects = Table(s.projects)
        self.tasks = Table([(t, t.weight) for t in s.tasks])
        weights = s.messages or tuple((group, w) for group, w, _ in MESSAGES)
        self.messages = Table([(MESSAGE_TEXTS[group], w) for group, w in weights])


def day_count(rng: random.Random, per_day: float) -> int:
    """A routine's count for one day: the whole part, plus one on the fraction of days."""
    whole = int(per_day)
    return whole + (rng.random() < per_day - whole)
