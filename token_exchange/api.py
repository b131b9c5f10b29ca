"""The Python API for agents and integrations: one object, amounts in tokens, typed frozen results.

::

    from token_exchange import api

    with api.open() as tx:                          # --home / $TOKEN_EXCHANGE_HOME / .exchange/
        print(tx.wallet("claude").balance)          # Decimal('10000')
        with tx.reserve("claude", "claude-opus", max_tokens=8000) as r:
            reply = call_the_model(max_tokens=8000)
            r.use(input_tokens=reply.usage.input_tokens, output_tokens=reply.usage.output_tokens)
        # settled on exit with the usage recorded; nothing recorded (or an exception before ``use``): voided

Every amount going in or out is a ``Decimal`` of tokens (at most 4 places), never units and never a
float; token counts are ints.  Every failure is a ``token_exchange.errors.UserError`` with a one-line
message: ``Refused`` for a refusal by the rules (``rules.limits.LimitRefused``, a ``Refused``, also
says when capacity frees up), ``IdConflict`` for an id reused with other content.  Nothing is
written when an operation fails.

The CLI spending commands (``cli/spend.py``), the MCP server (``agents/mcp_server.py``) and the
LiteLLM hook (``agents/litellm.py``) all sit on this module; the services it calls
(``services.spending``, ``services.reservations``, ``services.pools``, ``services.exchange``) decide
everything under the ledger lock.

One ``Exchange`` may be shared by threads: each thread gets its own connection to the ledger
(SQLite connections belong to the thread that made them) and the ledger's file lock orders the
writes of threads and processes alike.

Why over 400 lines: this is the whole public surface in one importable module (``from token_exchange import
api``), the frozen result types and the one ``Exchange`` object users see; each method is a short call into
the services, where every rule lives.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from token_exchange.amounts import Units, to_decimal, to_units
from token_exchange.errors import IdConflict, Refused, UserError, clean_text

if TYPE_CHECKING:  # pragma: no cover
    from token_exchange.clock import Clock
    from token_exchange.ledger.txn import Txn
    from token_exchange.rules.config import Config
    from token_exchange.services import pools as _pools
    from token_exchange.services import reservations as _reservations
    from token_exchange.services import spending as _spending
    from token_exchange.services.exchange import Exchange as _Svc

__all__ = [
    "CommitQuote",
    "Contribution",
    "Earning",
    "Entry",
    "Exchange",
    "Hold",
    "IdConflict",
    "IssueQuote",
    "Limits",
    "Pool",
    "PoolMember",
    "PoolResult",
    "PoolSpend",
    "Refunds",
    "Refused",
    "Reservation",
    "ReservationInfo",
    "Spend",
    "Transfer",
    "UserError",
    "Verdict",
    "Wallet",
    "Window",
    "open",
]

DEFAULT_TASK = "llm"
ONE_UNIT = Decimal("0.0001")


def _d(units: Units) -> Decimal:
    return to_decimal(units)


def _amount(value: Decimal | int | str, what: str, *, zero: bool = False) -> Units:
    """Tokens given by a caller -> units (exact; floats refused with a one-line error)."""
    if isinstance(value, float):
        raise UserError(f"{what}: give tokens as a Decimal, int or string, not a float ({value!r})")
    return to_units(value, what=what, allow_zero=zero)


def _count(value: object, what: str, *, zero: bool = False) -> int:
    """A token count: an int, or its digits as text (a command line's), 1..10^12 (0 too with ``zero``)."""
    from token_exchange.services.spending import parse_tokens

    if isinstance(value, str):
        if zero and value.strip() == "0":
            return 0
        return parse_tokens(value, what)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{what}: expected a whole number of tokens, got {str(value)[:30]!r}")
    if value == 0 and zero:
        return 0
    return parse_tokens(value, what)


def _usage(tokens: int | str | None, input_tokens: int | str | None,
           output_tokens: int | str | None) -> tuple[int, int | None]:
    """(total, output or None): either ``tokens`` (optionally with the ``output_tokens`` among them) or
    ``input_tokens`` + ``output_tokens``.  A total of 0 is returned as 0 (nothing was used)."""
    if tokens is not None:
        if input_tokens is not None:
            raise UserError("give either tokens or input_tokens/output_tokens, not both")
        total = _count(tokens, "tokens", zero=True)
        out = None if output_tokens is None else _count(output_tokens, "output tokens", zero=True)
        if out is not None and out > total:
            raise UserError(f"output tokens ({out}) must be between 0 and the token count ({total})")
        return total, out
    if input_tokens is None and output_tokens is None:
        raise UserError("give the tokens used: tokens=N, or input_tokens=N and output_tokens=M")
    i = _count(input_tokens or 0, "input tokens", zero=True)
    o = _count(output_tokens or 0, "output tokens", zero=True)
    return i + o, o


# --- result types --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Wallet:
    """An agent's wallet: ``balance`` (held reservations already taken out), what is ``reserved`` in
    open reservations, and the largest single spend the limits allow now (``available``)."""

    agent: str
    balance: Decimal
    reserved: Decimal
    available: Decimal
    earned: Decimal
    spent: Decimal
    by_kind: Mapping[str, Decimal]
    projects: Mapping[str, Decimal]

    def to_json(self) -> dict[str, Any]:
        return {"agent": self.agent, "balance": self.balance, "reserved": self.reserved,
                "available": self.available, "earned": self.earned, "spent": self.spent,
                "by_kind": dict(self.by_kind), "projects": dict(self.projects)}


@dataclass(frozen=True)
class Window:
    """A rolling window (hourly: last 60 minutes, daily: last 24 hours)."""

    limit: Decimal
    used: Decimal
    remaining: Decimal
    next_frees_at: str | None
    next_frees_in_seconds: int | None
    next_frees_amount: Decimal | None

    def to_json(self) -> dict[str, Any]:
        return {"limit": self.limit, "used": self.used, "remaining": self.remaining,
                "next_frees_at": self.next_frees_at, "next_frees_in_seconds": self.next_frees_in_seconds,
                "next_frees_amount": self.next_frees_amount}


@dataclass(frozen=True)
class Hold:
    """An open reservation counted against the limits."""

    id: str
    amount: Decimal
    since: str
    expires: str | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "amount": self.amount, "since": self.since, "expires": self.expires}


@dataclass(frozen=True)
class Limits:
    """Every limit of an agent, what is used and left, and when more frees up (`tx limits`)."""

    agent: str
    now: str
    balance: Decimal
    reserved: Decimal
    available: Decimal
    burst: Decimal
    reserve: Decimal
    above_reserve: Decimal
    hourly: Window
    daily: Window
    reservations: tuple[Hold, ...]

    def to_json(self) -> dict[str, Any]:
        return {"agent": self.agent, "now": self.now, "balance": self.balance, "reserved": self.reserved,
                "available": self.available, "burst": {"limit": self.burst},
                "reserve": {"limit": self.reserve, "above_reserve": self.above_reserve},
                "hourly": self.hourly.to_json(), "daily": self.daily.to_json(),
                "reservations": [h.to_json() for h in self.reservations]}


@dataclass(frozen=True)
class Verdict:
    """May the agent start paid work now?  ``reason`` is the seed's wording when not;
    ``limit`` names the rule (burst, funds, reserve, hourly, daily); ``frees_at`` says when a window
    has room again (None: not by time alone)."""

    agent: str
    allowed: bool
    reason: str | None = None
    limit: str | None = None
    frees_at: str | None = None


@dataclass(frozen=True)
class Entry:
    """One transaction as an agent sees it: ``amount`` is positive in, negative out."""

    id: str
    ts: str
    kind: str
    amount: Decimal
    payer: str
    payee: str
    description: str
    project: str


@dataclass(frozen=True)
class Spend:
    """A direct LLM spend (``created`` False: the same id was recorded before; nothing new)."""

    id: str
    agent: str
    model: str
    task: str
    tokens: int
    output_tokens: int | None
    cost: Decimal
    price_per_1k: Decimal
    created: bool
    balance: Decimal
    ts: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "agent": self.agent, "model": self.model, "task": self.task, "tokens": self.tokens,
                "output_tokens": self.output_tokens, "cost": self.cost, "price_per_1k": self.price_per_1k,
                "created": self.created, "balance": self.balance, "ts": self.ts}


@dataclass(frozen=True)
class Earning:
    """An award paid to an agent (``created`` False: that id was paid before; nothing new)."""

    id: str
    agent: str
    amount: Decimal
    source: str
    description: str
    created: bool
    balance: Decimal

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "agent": self.agent, "amount": self.amount, "source": self.source,
                "description": self.description, "created": self.created, "balance": self.balance}


@dataclass(frozen=True)
class Transfer:
    """Tokens moved from one agent to another (``created`` False: that id moved them before; nothing new)."""

    id: str
    payer: str
    payee: str
    amount: Decimal
    description: str
    created: bool
    balance: Decimal  # the payer's, after

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "payer": self.payer, "payee": self.payee, "amount": self.amount,
                "description": self.description, "created": self.created, "balance": self.balance}


@dataclass(frozen=True)
class ReservationInfo:
    """A reservation: ``state`` is open, settled, voided or expired; ``over`` is what was charged above
    the hold (usage beyond the worst case, included in ``cost``)."""

    id: str
    agent: str
    model: str
    task: str
    max_tokens: int
    held: Decimal
    since: str
    expires: str
    state: str
    cost: Decimal
    tokens: int
    released: Decimal
    over: Decimal

    def to_json(self) -> dict[str, Any]:
        """The `tx llm reserve|settle|void|show --json` document."""
        return {"id": self.id, "agent": self.agent, "model": self.model, "task": self.task,
                "max_tokens": self.max_tokens, "held": self.held, "since": self.since, "expires": self.expires,
                "state": self.state, "cost": self.cost, "tokens": self.tokens, "released": self.released}


@dataclass(frozen=True)
class CommitQuote:
    """What a commit with this message would earn now (nothing is written)."""

    status: str  # pay, excluded, unmatched, paid
    amount: Decimal
    shares: Mapping[str, Decimal]
    project: str
    contract: str | None
    multiplier: Decimal | None
    bonus: Decimal | None
    keyword: str | None
    capped: bool
    excluded: str | None
    reason: str
    preview: str


@dataclass(frozen=True)
class IssueQuote:
    """What closing a bd issue would earn: priority tokens x the type multiplier."""

    priority: str
    issue_type: str
    base: Decimal
    multiplier: Decimal
    multiplier_from: str
    amount: Decimal
    reason: str


@dataclass(frozen=True)
class PoolMember:
    agent: str
    member: bool
    contributed: Decimal
    credit: Decimal
    refunded: Decimal
    stake: Decimal
    share_percent: Decimal


@dataclass(frozen=True)
class Pool:
    """A team pool: members, stakes (contributed - credited - refunded, summing to ``balance``)."""

    name: str
    creator: str
    min_contribution: Decimal
    created: str
    members: tuple[str, ...]
    dissolved: bool
    balance: Decimal
    spent: Decimal
    spends: int
    contributors: tuple[PoolMember, ...]

    def to_json(self) -> dict[str, Any]:
        """The `tx pool show --json` document."""
        return {"pool": self.name, "creator": self.creator, "min_contribution": self.min_contribution,
                "created": self.created, "members": list(self.members), "dissolved": self.dissolved,
                "balance": self.balance, "spent": self.spent, "spends": self.spends,
                "contributors": [{"agent": c.agent, "member": c.member, "contributed": c.contributed,
                                  "credit": c.credit, "refunded": c.refunded, "stake": c.stake,
                                  "share_percent": c.share_percent} for c in self.contributors]}


@dataclass(frozen=True)
class PoolResult:
    """A pool after create/join; ``changed`` False: it already was so (nothing new written)."""

    pool: Pool
    changed: bool


@dataclass(frozen=True)
class Contribution:
    id: str
    pool: str
    agent: str
    amount: Decimal
    created: bool
    pool_balance: Decimal

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "pool": self.pool, "agent": self.agent, "amount": self.amount,
                "created": self.created, "pool_balance": self.pool_balance}


@dataclass(frozen=True)
class PoolSpend:
    id: str
    pool: str
    model: str
    tokens: int
    cost: Decimal
    description: str
    created: bool
    credits: Mapping[str, Decimal]
    pool_balance: Decimal

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "pool": self.pool, "model": self.model, "tokens": self.tokens, "cost": self.cost,
                "description": self.description, "created": self.created,
                "credits": dict(sorted(self.credits.items())), "pool_balance": self.pool_balance}


@dataclass(frozen=True)
class Refunds:
    pool: str
    refunds: Mapping[str, Decimal]
    dissolved: bool
    members: tuple[str, ...]
    pool_balance: Decimal

    def to_json(self) -> dict[str, Any]:
        return {"pool": self.pool, "refunds": dict(sorted(self.refunds.items())), "dissolved": self.dissolved,
                "members": list(self.members), "pool_balance": self.pool_balance}


# --- conversions from the services' types --------------------------------------------------------
def _reservation(st: _reservations.ReservationState) -> ReservationInfo:
    return ReservationInfo(st.id, st.agent, st.model, st.task, st.max_tokens, _d(st.held), st.ts, st.expires,
                           st.state, _d(st.cost), st.tokens, _d(st.released), _d(st.over))


def _pool(st: _pools.PoolState) -> Pool:
    d = st.to_json()
    return Pool(d["pool"], d["creator"], d["min_contribution"], d["created"], tuple(d["members"]), d["dissolved"],
                d["balance"], d["spent"], d["spends"],
                tuple(PoolMember(c["agent"], c["member"], c["contributed"], c["credit"], c["refunded"], c["stake"],
                                 c["share_percent"]) for c in d["contributors"]))


def _window(d: Mapping[str, Any]) -> Window:
    return Window(d["limit"], d["used"], d["remaining"], d["next_frees_at"], d["next_frees_in_seconds"],
                  d["next_frees_amount"])


def _spend(result: _spending.SpendResult) -> Spend:
    d = result.to_json()
    return Spend(d["id"], d["agent"], str(d["model"]), str(d["task"]), int(d["tokens"]), d["output_tokens"],
                 d["cost"], d["price_per_1k"], d["created"], d["balance"], d["ts"])


def _entry(agent: str, t: Txn) -> Entry:
    signed = _d(t.amount) if t.payee == agent else -_d(t.amount)
    return Entry(t.id, t.ts, t.kind, signed, t.payer, t.payee, t.description, t.project)


# --- the reservation handle ---------------------------------------------------------------------
class Reservation:
    """An open reservation, made by ``Exchange.reserve``; use it as a context manager.

    In the block call ``use(...)`` with what the request really consumed.  On exit the recorded usage is
    settled (the unused part of the hold goes back); with nothing recorded, or a usage of 0 tokens, the
    reservation is voided.  If the block raises, usage already recorded is still settled (those tokens
    were consumed) and otherwise the reservation is voided; the exception propagates.  Usage above the
    maximum is charged in full: the hold, plus the rest outside the limits (``ReservationInfo.over``).
    """

    def __init__(self, tx: Exchange, info: ReservationInfo) -> None:
        self._tx = tx
        self.info = info
        self._used: tuple[int, int | None] | None = None

    def __repr__(self) -> str:
        i = self.info
        return (f"Reservation(id={i.id!r}, agent={i.agent!r}, model={i.model!r}, max_tokens={i.max_tokens}, "
                f"held={i.held!r}, state={i.state!r})")

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def held(self) -> Decimal:
        return self.info.held

    def use(self, tokens: int | str | None = None, *, input_tokens: int | str | None = None,
            output_tokens: int | str | None = None) -> None:
        """Record the tokens actually used (settled on exit): ``tokens`` in all, or input + output."""
        self._used = _usage(tokens, input_tokens, output_tokens)

    def settle(self, tokens: int | str | None = None, *, input_tokens: int | str | None = None,
               output_tokens: int | str | None = None) -> ReservationInfo:
        """Settle now instead of on exit."""
        self.info = self._tx.settle(self.id, tokens, input_tokens=input_tokens, output_tokens=output_tokens)
        return self.info

    def void(self) -> ReservationInfo:
        """Release it all now (the request did not happen)."""
        self.info = self._tx.void(self.id)
        return self.info

    def _finish(self) -> None:
        if self.info.state != "open":
            return
        current = self._tx.reservation(self.id)
        if current.state != "open":  # expired meanwhile, or resolved elsewhere
            self.info = current
            return
        if self._used is not None and self._used[0] > 0:
            total, out = self._used
            self.info = self._tx.settle(self.id, total, output_tokens=out)
        else:
            self.void()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            self._finish()
            return
        try:
            self._finish()
        except UserError:
            pass  # the block's exception matters more; an unresolved hold expires by itself


# --- the exchange --------------------------------------------------------------------------------
def open(home: str | Path | None = None, *, clock: Clock | None = None) -> Exchange:
    """The exchange at ``home``, else ``$TOKEN_EXCHANGE_HOME``, else ``.exchange/`` of this repository.

    ``clock`` (a function returning an aware datetime) replaces the real clock, for tests and replays
    (nothing in the environment can move it: an agent must not be able to lift its own limits)."""
    from token_exchange.services.exchange import Exchange as Svc

    return Exchange(Svc.open(home, clock=clock))


class Exchange:
    """One exchange home: wallets, limits, reservations, pools, quotes.  Close it (or use ``with``)."""

    def __init__(self, svc: _Svc) -> None:
        self.home: Path = svc.home
        self.cfg: Config = svc.cfg
        self._clock = svc.clock
        self._local = threading.local()
        self._local.svc = svc

    def __repr__(self) -> str:
        return f"Exchange(home={str(self.home)!r}, agents={len(self.cfg.agents)})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close this thread's connection to the ledger (other threads' close when they end)."""
        svc = getattr(self._local, "svc", None)
        if svc is not None:
            svc.close()
            self._local.svc = None

    @property
    def svc(self) -> _Svc:
        """This thread's ``services.exchange.Exchange`` (for code that needs the services directly)."""
        svc: _Svc | None = getattr(self._local, "svc", None)
        if svc is None:
            from token_exchange.services.exchange import Exchange as Svc

            svc = Svc(self.home, self.cfg, self._clock)
            self._local.svc = svc
        return svc

    # --- reading -----------------------------------------------------------------------------
    @property
    def agents(self) -> tuple[str, ...]:
        """The configured agents, by name."""
        return tuple(sorted(self.cfg.agents))

    def wallet(self, agent: str) -> Wallet:
        """Balance, reserved, what may be spent now, and totals by kind, all in tokens."""
        from token_exchange.rules import limits as lim
        from token_exchange.services import spending

        svc = self.svc
        a = self.cfg.agent(agent)
        with svc.ledger.locked() as idx:
            svc.ensure_open(idx, agent)
            spending.expire_due(svc, idx)
            usage = lim.usage(idx, agent, lim.micros(svc.clock()))
            b = idx.balance(agent)
        return Wallet(agent, _d(b.balance), _d(usage.held), _d(lim.available(a.limits, usage)), _d(b.earned),
                      _d(b.spent), {k: _d(v) for k, v in sorted(b.by_kind.items())},
                      {k: _d(v) for k, v in sorted(b.projects.items())})

    def balance(self, agent: str) -> Decimal:
        """The wallet balance in tokens."""
        return self.wallet(agent).balance

    def limits(self, agent: str) -> Limits:
        """Each limit, used in its window, remaining, reserved, and when more frees up."""
        from token_exchange.rules import limits as lim
        from token_exchange.services import spending

        svc = self.svc
        a = self.cfg.agent(agent)
        with svc.ledger.locked() as idx:
            svc.ensure_open(idx, agent)
            spending.expire_due(svc, idx)
            d = lim.status(idx, a.limits, agent, lim.micros(svc.clock())).to_json()
        return Limits(d["agent"], d["now"], d["balance"], d["reserved"], d["available"], d["burst"]["limit"],
                      d["reserve"]["limit"], d["reserve"]["above_reserve"], _window(d["hourly"]),
                      _window(d["daily"]),
                      tuple(Hold(h["id"], h["amount"], h["since"], h["expires"]) for h in d["reservations"]))

    def check(self, agent: str, amount: Decimal | int | str | None = None) -> Verdict:
        """Would the limits let ``agent`` spend ``amount`` now (default: the smallest amount, i.e. may it
        start paid work at all)?  Nothing is written but an expiry of reservations whose time is up.

        This is what a guard asks before work starts (a Claude Code ``UserPromptSubmit`` hook refusing
        a prompt when the agent is under its reserve or over its hourly/daily limit)."""
        from token_exchange.rules import limits as lim
        from token_exchange.services import spending

        units = _amount(ONE_UNIT if amount is None else amount, "amount")
        svc = self.svc
        a = self.cfg.agent(agent)
        with svc.ledger.locked() as idx:
            svc.ensure_open(idx, agent)
            spending.expire_due(svc, idx)
            try:
                lim.enforce(idx, a.limits, agent, units, lim.micros(svc.clock()))
            except lim.LimitRefused as e:
                when = lim.iso(e.frees_at_us) if e.frees_at_us is not None else None
                return Verdict(agent, False, str(e), e.refusal.limit, when)
        return Verdict(agent, True)

    def history(self, agent: str, limit: int = 20) -> tuple[Entry, ...]:
        """The agent's most recent transactions, newest first."""
        self.cfg.agent(agent)
        n = _count(limit, "limit")
        return tuple(_entry(agent, t) for t in self.svc.ledger.fresh().history(agent, min(n, 100_000)))

    def price(self, model: str, tokens: int, *, output_tokens: int | None = None) -> Decimal:
        """What ``tokens`` of ``model`` cost (input and output priced apart when ``output_tokens`` is given)."""
        from token_exchange.services.spending import Price

        n = _count(tokens, "tokens")
        out = None if output_tokens is None else _count(output_tokens, "output tokens", zero=True)
        return _d(Price.of(self.cfg.model(model)).cost(n, out))

    def reservation(self, reservation_id: str) -> ReservationInfo:
        """A reservation's current state (one whose time is up is expired first)."""
        from token_exchange.services import reservations

        return _reservation(reservations.show(self.svc, reservation_id))

    # --- quotes ------------------------------------------------------------------------------
    def quote_commit(self, message: str, *, agent: str | None = None, author: str | None = None,
                     project: str | None = None, parents: int = 1) -> CommitQuote:
        """What a commit with ``message`` by ``agent`` (or author email) on ``project`` would earn now:
        the engine's own plan (``Exchange.preview_commit``), with the contract budget as it stands.

        ``project`` defaults to what a hook would use here: ``exchange.project``, else the current
        repository's (its origin's name, else its directory), else none (the default contract)."""
        from token_exchange.rules.engine import CommitFacts

        if (agent is None) == (author is None):
            raise UserError("give either agent or author (an email)")
        if agent is not None:
            a = self.cfg.agent(agent)
            author = a.emails[0] if a.emails else f"{a.name}@agents.invalid"
        assert author is not None
        if isinstance(parents, bool) or not isinstance(parents, int) or not 0 <= parents <= 1000:
            raise UserError(f"parents: expected 0-1000, got {parents!r}")
        proj = clean_text(project if project is not None else self._project(), limit=200)
        facts = CommitFacts(clean_text(author, limit=320), clean_text(message, limit=65536), proj, parents)
        plan = self.svc.preview_commit(facts)
        r = plan.reward
        return CommitQuote(plan.status, _d(plan.amount), {s.agent: _d(s.amount) for s in plan.shares}, proj,
                           r.contract if r else None, r.multiplier if r else None, r.bonus if r else None,
                           (r.keyword or None) if r else None, bool(r and r.capped), r.excluded if r else None,
                           r.reason if r else plan.describe(), plan.preview())

    def _project(self) -> str:
        if self.cfg.project:
            return self.cfg.project
        from token_exchange import git

        top = git.toplevel()
        return git.project_name(top) if top else ""

    def quote_issue(self, priority: int | str, issue_type: str = "task",
                    labels: tuple[str, ...] | list[str] = ()) -> IssueQuote:
        """What closing a bd issue of this priority (0-4 or P0-P4) and type would earn."""
        from token_exchange.rules.rewards import issue_reward

        r = issue_reward(self.cfg, priority, clean_text(issue_type, limit=100),
                         tuple(clean_text(str(x), limit=100) for x in labels))
        return IssueQuote(r.priority, r.issue_type, r.base, r.multiplier, r.multiplier_from, _d(r.amount), r.reason)

    # --- spending ----------------------------------------------------------------------------
    def reserve(self, agent: str, model: str | None, max_tokens: int | str, *, task: str = DEFAULT_TASK,
                id: str | None = None, ttl: int | None = None) -> Reservation:
        """Hold the most ``max_tokens`` of ``model`` can cost (None: the agent's model for ``task``).

        Refused (``LimitRefused``) before anything happens when the hold breaks a limit.  Same ``id``
        again returns the same reservation."""
        from token_exchange.services import reservations

        n = _count(max_tokens, "max tokens")
        st = reservations.reserve(self.svc, agent, task, n, model=model, id=id, ttl=ttl)
        return Reservation(self, _reservation(st))

    def settle(self, reservation_id: str, tokens: int | str | None = None, *, input_tokens: int | str | None = None,
               output_tokens: int | str | None = None, allow_over: bool = True) -> ReservationInfo:
        """Charge what a reservation really used (at the prices stored on it) and release the rest.

        Usage above its maximum is charged too (the hold in full, the rest outside the limits: those
        tokens were consumed); ``allow_over=False`` refuses it instead."""
        from token_exchange.services import reservations

        total, out = _usage(tokens, input_tokens, output_tokens)
        if total == 0:
            raise UserError("nothing used: void the reservation instead")
        return _reservation(reservations.settle(self.svc, reservation_id, total, output_tokens=out,
                                                allow_over=allow_over))

    def void(self, reservation_id: str) -> ReservationInfo:
        """Release all of an open reservation (the request did not happen)."""
        from token_exchange.services import reservations

        return _reservation(reservations.void(self.svc, reservation_id))

    def spend(self, agent: str, model: str | None, tokens: int | str | None = None, *,
              input_tokens: int | str | None = None, output_tokens: int | str | None = None,
              task: str = DEFAULT_TASK, id: str | None = None,
              description: str = "", project: str = "") -> Spend:
        """Charge a request now under the agent's limits: ``tokens`` in all (``output_tokens`` of them
        priced as output) or ``input_tokens`` + ``output_tokens``.  The same ``id`` twice charges once."""
        from token_exchange.services import spending

        total, out = _usage(tokens, input_tokens, output_tokens)
        return _spend(spending.spend(self.svc, agent, task, _count(total, "tokens"), model=model,
                                     output_tokens=out, id=id, description=clean_text(description, limit=500),
                                     project=clean_text(project, limit=200)))

    def earn(self, agent: str, amount: Decimal | int | str, source: str, description: str, *,
             id: str | None = None, project: str = "") -> Earning:
        """Pay ``amount`` tokens to ``agent`` from outside (an integration's award); the same ``id``
        twice pays once."""
        units = _amount(amount, "amount")
        svc = self.svc
        result = svc.award(agent, units, source, description, id=id, project=project)
        t = result.txn
        return Earning(t.id, agent, _d(t.amount), str(t.source.get("type", "")), t.description, result.created,
                       _d(svc.ledger.balance(agent).balance))

    def transfer(self, payer: str, payee: str, amount: Decimal | int | str, reason: str, *,
                 id: str | None = None) -> Transfer:
        """Move tokens from one agent's wallet to another's, under the payer's limits (``tx transfer``);
        the same ``id`` twice moves them once."""
        from token_exchange.services.corrections import transfer

        svc = self.svc
        done = transfer(svc, payer, payee, _amount(amount, "amount"), id=id, description=reason)
        t = done.txn
        return Transfer(t.id, t.payer, t.payee, _d(t.amount), t.description, done.created,
                        _d(svc.ledger.balance(payer).balance))

    # --- pools -------------------------------------------------------------------------------
    def pool(self, name: str) -> Pool:
        """A pool: members, contributions, credit, stakes, balance."""
        from token_exchange.services import pools

        return _pool(pools.show(self.svc, name))

    def pools(self) -> tuple[Pool, ...]:
        from token_exchange.services import pools

        return tuple(_pool(p) for p in pools.all_pools(self.svc))

    def pool_create(self, name: str, creator: str, min_contribution: Decimal | int | str) -> PoolResult:
        """Create a pool (the creator is its first member); the same settings again change nothing."""
        from token_exchange.services import pools

        minimum = _amount(min_contribution, "minimum contribution", zero=True)
        st, created = pools.create(self.svc, name, creator, minimum)
        return PoolResult(_pool(st), created)

    def pool_join(self, name: str, agent: str) -> PoolResult:
        from token_exchange.services import pools

        st, created = pools.join(self.svc, name, agent)
        return PoolResult(_pool(st), created)

    def pool_contribute(self, name: str, agent: str, amount: Decimal | int | str, *,
                        id: str | None = None) -> Contribution:
        """Move tokens from a member's wallet into the pool (under the member's limits)."""
        from token_exchange.services import pools

        c = pools.contribute(self.svc, name, agent, _amount(amount, "amount"), id=id)
        return Contribution(c.txn.id, c.pool.name, c.txn.agent, _d(c.txn.amount), c.created, _d(c.pool.balance))

    def pool_spend(self, name: str, model: str, tokens: int | str, description: str, *, id: str | None = None,
                   by: str | None = None, output_tokens: int | None = None) -> PoolSpend:
        """Spend pool tokens on a model call; contributors are credited in proportion to their stakes."""
        from token_exchange.services import pools

        s = pools.spend(self.svc, name, model, tokens, description, id=id, by=by, output_tokens=output_tokens)
        t = s.txn
        return PoolSpend(t.id, s.pool.name, str(t.source.get("model")), int(t.source.get("tokens", 0)), _d(t.amount),
                         t.description, s.created, {a: _d(v) for a, v in sorted(s.credits.items())},
                         _d(s.pool.balance))

    def pool_leave(self, name: str, agent: str) -> Refunds:
        """A member leaves and gets its unspent stake back."""
        from token_exchange.services import pools

        return _refunds(pools.leave(self.svc, name, agent))

    def pool_dissolve(self, name: str, *, by: str | None = None) -> Refunds:
        """Close the pool: every stake goes back to its contributor."""
        from token_exchange.services import pools

        return _refunds(pools.dissolve(self.svc, name, by=by))


def _refunds(r: _pools.Refunds) -> Refunds:
    return Refunds(r.pool.name, {a: _d(v) for a, v in sorted(r.refunds.items())}, r.pool.dissolved,
                   tuple(r.pool.members), _d(r.pool.balance))
