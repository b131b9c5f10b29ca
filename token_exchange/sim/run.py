"""The run loop: a simulated clock, one ``random.Random(seed)``, events bucketed by hour, each played
through the real engine.

Events are bucketed by hour (only one hour is ever sorted) and every per-agent lookup is a list index or a
dict probe, so a run costs the same per agent-hour whatever its length or population.  The whole run holds
``ledger.locked()`` once.
"""

from __future__ import annotations

import gc
import heapq
import random
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from token_exchange.errors import UserError
from token_exchange.rules import config as config_mod
from token_exchange.sim.activity import (
    COMMIT_HOURS,
    EPOCH,
    REQUEST_HOURS,
    SUBJECTS,
    Plan,
    Strategy,
    Task,
    day_count,
    strategy_for,
)
from token_exchange.sim.config import sim_config
from token_exchange.sim.journal import SimExchange
from token_exchange.sim.result import EVENTS_KEPT, AgentStats, LimitEvent, SimResult
from token_exchange.sim.spending import Spending

MAX_HOURS = 24 * 366 * 5
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
        plans: dict[Strategy, Plan] = {}
        self.plans: list[Plan] = []
        for a in names:
            s = strategy_for(a, self.templates.get(a))
            if s not in plans:
                plans[s] = Plan(s)
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
        # A run makes no reference cycles (tests/test_sim_speed.py checks), so the cyclic collector could only
        # re-scan the growing ledger, ever longer as it grows: paused for the run, as it was after.
        collecting = gc.isenabled()
        gc.disable()
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
                    from token_exchange.viz.summary import collect

                    self.summary = collect(ex.ledger.index, names)
            if keep:
                ex.persist()
                result.home = home
            return result
        finally:
            if collecting:
                gc.enable()
            ex.close()
            # The exchange's clock is this simulation's: without the exchange, the run's ledger is no cycle and
            # is freed here, not by a later full garbage collection (which every next run would pay for).
            del self.ex, self.spending

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
            for _ in range(day_count(rng, s.commits_per_day)):
                self.order += 1
                at = base + commit_hour(rng) * 3600 + rng.randrange(3600)
                self.buckets.setdefault(at // 3600, []).append((at, self.order, i, COMMIT, None))
            if self.broke[i]:  # out of funds (refused by reserve or balance) and nothing earned since
                continue
            lo, hi = s.session
            starts: list[int] = []
            for _ in range(day_count(rng, s.sessions_per_day)):
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
            self.now = EPOCH + timedelta(0, at)  # (days, seconds): no keyword parsing per event
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
        amount = self.ex.commit(agent, project, msg, reward_id=self._id("c")).amount
        self.agent_stats[i].commits += 1
        row = self.hourly[at // 3600 % 24]
        row["commits"] += 1
        row["earned"] += amount
        if amount > 0:
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
