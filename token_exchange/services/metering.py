"""Charging the LLM usage agents' own files report, and refusing prompts (issue 18, parts 3 and 4).

The service behind ``tx meter claude-code | codex | aider``, ``tx guard claude-code`` and the lean
hook programs ``tx-meter`` / ``tx-guard`` (``token_exchange.hooks.meter``).  The parsing is
``token_exchange.meter`` (pure); this module adds the exchange: which agent a session is, what a
record costs, the charge, and the read offsets kept in the home.

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

Import cost matters: Claude Code starts a fresh process for every hook.  This module imports the
ledger, the config and the meter parsers only; never typer, rich, tomlkit, GitPython, the reward
engine or ``services.exchange`` (a test checks it).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from token_exchange.errors import UserError
from token_exchange.meter.records import PREFIX, MeterError, Source, Usage, short, short_path

if TYPE_CHECKING:
    from token_exchange.ledger.ledger import Ledger
    from token_exchange.ledger.protocols import Index
    from token_exchange.ledger.txn import Txn
    from token_exchange.meter.claude_code import HookInput, SessionRead
    from token_exchange.meter.guard import HookReply
    from token_exchange.meter.offsets import OffsetState
    from token_exchange.meter.pricing import UsagePrices
    from token_exchange.rules.config import Config, MeterConfig
    from token_exchange.services.exchange import Exchange

# The same names as services.home (a test checks it), without that module's git import.
HOME_ENV = "TOKEN_EXCHANGE_HOME"
HOME_DIR = ".exchange"
AGENT_ENV = "TOKEN_EXCHANGE_AGENT"
METER_DIR = "meter"
LOCK_WAIT = 10.0  # seconds a hook waits for the session's state or the ledger before leaving it to the next run
PROG = "token-exchange"


class UnknownAgent(MeterError):
    """No agent for this session: nothing is charged, nothing is saved (the next run charges it all)."""


class Busy(MeterError):
    """Another process holds the state or the ledger: nothing is lost, the next run charges it."""


# --- where: the home, and the meter's own state in it ------------------------------------------
def repo_main_worktree(start: Path) -> Path | None:
    """The main work tree of the repository containing ``start`` (git's rules, without running git).

    ``.git`` a directory: that work tree.  ``.git`` a file (``gitdir: X``, a linked worktree or a
    submodule): the parent of X's ``commondir`` when that is a ``.git`` directory, else this work
    tree, as ``git.main_worktree`` decides from ``git rev-parse --git-common-dir``.
    """
    here = Path(os.path.abspath(start))
    for d in (here, *here.parents):
        dot = d / ".git"
        try:
            st = os.stat(dot)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            return d
        if not stat.S_ISREG(st.st_mode):
            return None
        try:
            with open(dot, encoding="utf-8", errors="replace") as f:
                text = f.read(4096)
        except OSError:
            return d
        if not text.startswith("gitdir:"):
            return d
        gitdir = Path(text[len("gitdir:"):].strip())
        gitdir = gitdir if gitdir.is_absolute() else d / gitdir
        common = gitdir
        try:
            with open(gitdir / "commondir", encoding="utf-8", errors="replace") as f:
                rel = Path(f.read(4096).strip())
            common = rel if rel.is_absolute() else gitdir / rel
        except OSError:
            pass  # a submodule (or an old layout): its own repository
        common = Path(os.path.normpath(common))
        return common.parent if common.name == ".git" else d
    return None


def find_home(option: str | Path | None, cwd: str | Path | None, env: Mapping[str, str]) -> Path:
    """``--home``, else ``$TOKEN_EXCHANGE_HOME``, else ``.exchange/`` of the main work tree of the
    repository at ``cwd`` (the session's working directory): ``services.home.find_home``'s order."""
    if option:
        return Path(option).expanduser().absolute()
    if env.get(HOME_ENV):
        return Path(env[HOME_ENV]).expanduser().absolute()
    top = repo_main_worktree(Path(cwd) if cwd else Path.cwd())
    if top is None:
        raise MeterError("no exchange home: pass --home, set TOKEN_EXCHANGE_HOME, or run inside a git repository")
    return top / HOME_DIR


def _real_dir(path: Path, what: str) -> None:
    """``path`` is a directory we may write in (created 0700 if missing), never through a symlink."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as e:
            raise MeterError(f"{what} {short_path(path)}: cannot create ({e.strerror})") from None
        st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise MeterError(f"{what} {short_path(path)} is a symlink; refusing to follow it")
    if not stat.S_ISDIR(st.st_mode):
        raise MeterError(f"{what} {short_path(path)} is not a directory")


def state_dir(home: Path, source: Source) -> Path:
    """``HOME/meter/<source>/``: real directories inside the home (no symlink followed)."""
    if not os.path.isdir(home):
        raise MeterError(f"no exchange at {short_path(home)} (run `tx init`)")
    _real_dir(home / METER_DIR, "meter directory")
    d = home / METER_DIR / source
    _real_dir(d, "meter directory")
    return d


def state_file_for(home: Path, source: Source, path: Path | str) -> Path:
    """The state file of one codex or aider file: named by a digest of its absolute path."""
    from token_exchange.meter.offsets import key
    from token_exchange.meter.records import digest

    return state_dir(home, source) / f"{digest(key(path))}.json"


@contextmanager
def locked(path: Path, timeout: float = LOCK_WAIT) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created 0600, never through a symlink) for the block."""
    import fcntl
    import time

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                     0o600)
    except OSError as e:
        raise MeterError(f"lock file {short_path(path)}: cannot open ({e.strerror})") from None
    try:
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise Busy(f"{short_path(path)} is held by another hook; "
                               "the next run charges what is new") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def load_state(path: Path) -> tuple[OffsetState, str | None]:
    """The saved offsets, or an empty state and why (damaged: every id is idempotent, read again).

    A symlink or a non-file at ``path`` is refused, never read through or replaced."""
    from token_exchange.meter import offsets

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return offsets.OffsetState(), None
    if not stat.S_ISREG(st.st_mode):
        raise MeterError(f"state file {short_path(path)} is a symlink or not a regular file; refusing it")
    try:
        return offsets.load(path), None
    except MeterError as e:
        return offsets.OffsetState(), f"{e}: reading again from the start (nothing is charged twice)"


# --- the exchange, opened for metering -----------------------------------------------------------
def micros(moment: datetime) -> int:
    """``rules.limits.micros`` (a test checks it), without that module's imports on the meter's path."""
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


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

    def __init__(self, home: Path, *, cfg: Config | None = None, ledger: Ledger | None = None,
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
    def of(cls, ex: Exchange, env: Mapping[str, str] | None = None) -> Meter:
        """The meter of an opened exchange (same config, ledger and clock)."""
        return cls(ex.home, cfg=ex.cfg, ledger=ex.ledger, clock=ex.clock, env=env)

    def clock(self) -> datetime:
        """Now: the exchange's clock when opened from one, else the system clock (tests inject one)."""
        if self._clock is None:
            from token_exchange.clock import now

            return now()
        return self._clock()

    @property
    def ledger(self) -> Ledger:
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
        from token_exchange.meter.pricing import UsagePrices, match_model

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
    def ensure_open(self, idx: Index, agent: str) -> None:
        """``Exchange.ensure_open``: the starting balance, once (the same transaction, a test checks it)."""
        if idx.get(f"open:{agent}") is None:
            from token_exchange.ledger.txn import GENESIS, make_txn

            self.ledger.append(make_txn(f"open:{agent}", "open", GENESIS, agent, self.cfg.starting_balance,
                                        agent=agent, description="starting balance"))

    def expire_due(self, idx: Index, now_us: int) -> None:
        """Release reservations whose time is up (as every spending operation does), if there are any."""
        if idx.expired_holds(now_us):
            from typing import cast

            from token_exchange.services.spending import expire_due

            expire_due(cast("Exchange", self), idx)  # it uses .clock() and .ledger, which a Meter has

    def charge(self, agent: str, records: Sequence[Usage]) -> Charged:
        """Charge every record not in the ledger yet, in one locked write (see the module docstring)."""
        from token_exchange.ledger.txn import ts_text
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

    def _txn(self, agent: str, u: Usage, priced: Priced, cost: int, charged: int, ts: str) -> Txn:
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

    # --- refusing ------------------------------------------------------------------------------
    def refusal(self, agent: str) -> str | None:
        """Why ``agent`` may not start more work now (the seed's reason and when capacity frees up),
        or None.  Funds, emergency reserve, hourly and daily limits must all leave room for
        ``meter.guard_headroom``; the burst limit is per request and does not apply to a prompt."""
        from token_exchange.amounts import MAX_UNITS
        from token_exchange.rules.limits import LimitRefused, enforce

        a = self.cfg.agent(agent)
        now_us = micros(self.clock())
        idx = self.ledger.fresh()
        if idx.get(f"open:{agent}") is None or idx.expired_holds(now_us):
            with self.ledger.locked() as idx:
                self.ensure_open(idx, agent)
                self.expire_due(idx, now_us)
        try:
            enforce(idx, a.limits._replace(burst=MAX_UNITS), agent, self.settings.guard_headroom, now_us)
        except LimitRefused as e:
            return f"{agent}: {e}"
        return None


# --- Claude Code: the meter hook and the guard ---------------------------------------------------
class HookRun(NamedTuple):
    """What a hook run replies (exit code, stdout, stderr), and what it charged (for callers and tests)."""

    reply: HookReply
    charged: Charged | None = None
    read: SessionRead | None = None
    agent: str | None = None


def _note(text: str) -> str:
    return f"{PROG}: {' '.join(text.split())[:600]}\n"


def meter_session(m: Meter, hook: HookInput, agent: str) -> tuple[Charged | None, SessionRead | None, list[str]]:
    """Charge what is new in the session's transcripts: lock the session's state, read, charge, save."""
    from token_exchange.meter import claude_code as cc
    from token_exchange.meter import offsets

    notes: list[str] = []
    main = hook.transcript()
    if not os.path.isfile(main):
        return None, None, [f"no transcript at {short_path(main)} yet; nothing to charge"]
    d = state_dir(m.home, "claude-code")
    state_path = d / f"{hook.session_id}.json"
    with locked(d / f"{hook.session_id}.lock"):
        state, damaged = load_state(state_path)
        if damaged:
            notes.append(damaged)
        files = cc.files_for_hook(hook)
        read = cc.read_session(files, state, session_id=hook.session_id, final_files=cc.final_files_for(hook, files))
        charged = m.charge(agent, read.records) if read.records else None
        offsets.save(state_path, read.state, sync=False)  # only after the charge: a crash re-reads, never loses
    if read.skipped:
        notes.append(f"{read.skipped} transcript line{'s' if read.skipped != 1 else ''} skipped"
                     + (f" ({read.reasons[0]})" if read.reasons else ""))
    elif read.reasons:
        notes.append(read.reasons[0])
    return charged, read, notes


def _open(home: str | Path | None, hook: HookInput, meter: Meter | None, env: Mapping[str, str]) -> Meter:
    return meter if meter is not None else Meter(find_home(home, hook.cwd, env), env=env)


def claude_code_hook(stdin: bytes, *, home: str | Path | None = None, agent: str | None = None,
                     meter: Meter | None = None, env: Mapping[str, str] | None = None) -> HookRun:
    """``tx meter claude-code``: a Stop / SubagentStop / SessionEnd hook.  Never exits 2 (that would
    keep Claude running): 0 when charged, when nothing is new and when the session has no agent
    (one line on stderr), 1 with one line when the exchange or the transcript cannot be used."""
    from token_exchange.meter import claude_code as cc
    from token_exchange.meter import guard

    env = os.environ if env is None else env
    m: Meter | None = None
    try:
        hook = cc.parse_hook_input(stdin)
        m = _open(home, hook, meter, env)
        who = m.agent_for("claude-code", option=agent, cwd=hook.cwd,
                          path=str(hook.transcript_path) if hook.transcript_path else None, session=hook.session_id)
        charged, read, notes = meter_session(m, hook, who)
    except (UnknownAgent, Busy) as e:
        return HookRun(guard.HookReply(0, "", _note(str(e))))
    except UserError as e:
        if "locked by another process" in str(e):
            return HookRun(guard.HookReply(0, "", _note(f"{e}; the next run charges what is new")))
        return HookRun(guard.meter_failed(f"{PROG}: {e}"))
    finally:
        if m is not None and meter is None:
            m.close()
    lines = ([charged.line()] if charged is not None else []) + notes
    return HookRun(guard.HookReply(0, "", "".join(_note(t) for t in lines)), charged, read, who)


def claude_code_guard(stdin: bytes, *, home: str | Path | None = None, agent: str | None = None,
                      meter: Meter | None = None, env: Mapping[str, str] | None = None,
                      meter_first: bool = True) -> HookRun:
    """``tx guard claude-code``: a UserPromptSubmit hook.  Charges what the session's transcripts
    hold that is not charged yet (so the decision sees all usage even if a Stop hook was missed),
    then blocks the prompt (exit 2, the reason on stderr: Claude Code's block protocol) when the
    agent is out of funds, at its emergency reserve or over its hourly or daily limit; otherwise
    exit 0 and nothing on stdout (stdout would be added to Claude's context).  A session without an
    agent, or an exchange that cannot be read, lets the prompt through with one line on stderr."""
    from token_exchange.meter import claude_code as cc
    from token_exchange.meter import guard

    env = os.environ if env is None else env
    m: Meter | None = None
    charged: Charged | None = None
    read: SessionRead | None = None
    notes: list[str] = []
    try:
        hook = cc.parse_hook_input(stdin)
        m = _open(home, hook, meter, env)
        who = m.agent_for("claude-code", option=agent, cwd=hook.cwd,
                          path=str(hook.transcript_path) if hook.transcript_path else None, session=hook.session_id)
        if meter_first and hook.transcript_path is not None:
            try:
                charged, read, notes = meter_session(m, hook, who)
            except UserError as e:  # metering is best effort here: the decision still counts
                notes.append(f"not metered now: {e}")
        reason = m.refusal(who)
    except UserError as e:
        return HookRun(guard.HookReply(0, "", _note(f"{e}; prompt let through")))
    finally:
        if m is not None and meter is None:
            m.close()
    if reason is not None:
        return HookRun(guard.block(f"{PROG}: {reason}"), charged, read, who)
    return HookRun(guard.HookReply(0, "", "".join(_note(t) for t in notes)), charged, read, who)


def transcript_hook_input(path: Path | str) -> bytes:
    """The hook input a ``SessionEnd`` for ``path`` would get (``tx meter claude-code FILE``: charge
    a transcript by hand, e.g. sessions from before the hooks were installed)."""
    import json

    p = Path(path).expanduser().absolute()
    return json.dumps({"hook_event_name": "SessionEnd", "session_id": p.stem, "transcript_path": str(p),
                       "reason": "other"}).encode()


# --- codex rollouts and aider analytics logs -----------------------------------------------------
class FileRun(NamedTuple):
    """One codex or aider file metered: its agent, what was charged, skipped lines and notes."""

    path: str
    agent: str | None
    charged: Charged | None
    records: int
    skipped: int
    notes: tuple[str, ...]
    error: str | None = None  # the file could not be metered (one line); nothing was charged

    @property
    def ok(self) -> bool:
        return self.agent is not None and self.error is None

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "agent": self.agent, "records": self.records, "skipped": self.skipped,
                "notes": list(self.notes), "charge": self.charged.to_json() if self.charged else None,
                "error": self.error}

    def line(self) -> str:
        head = f"{short_path(self.path, 80)}: "
        if self.error is not None:
            return head + self.error
        if self.charged is not None:
            head += self.charged.line()
        elif self.agent is None:
            head += "not charged"
        else:
            head += "nothing new"
        if self.skipped:
            head += f"; {self.skipped} line{'s' if self.skipped != 1 else ''} skipped"
        return head + "".join(f"; {n}" for n in self.notes[:2])


def expand(source: Source, paths: Sequence[str | Path]) -> list[Path]:
    """Files to meter: each file given, and in each directory given (codex: ``~/.codex/sessions``) its
    ``rollout-*.jsonl`` (codex) or ``*.jsonl`` (aider) files, recursively, never through symlinks."""
    pattern = "rollout-*.jsonl" if source == "codex" else "*.jsonl"
    out: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser().absolute()
        if p.is_dir():
            from fnmatch import fnmatchcase

            for root, dirs, files in os.walk(p):
                dirs.sort()
                out.extend(Path(root) / f for f in sorted(files) if fnmatchcase(f, pattern))
        else:
            out.append(p)
    return list(dict.fromkeys(out))


def meter_files(m: Meter, source: Source, paths: Sequence[str | Path], *, agent: str | None = None) -> list[FileRun]:
    """``meter_file`` for every file ``expand`` finds; a file that cannot be read or charged is its
    own one-line error, and the others still count."""
    runs = []
    for path in expand(source, paths):
        try:
            runs.append(meter_file(m, source, path, agent=agent))
        except UserError as e:
            runs.append(FileRun(str(path), None, None, 0, 0, (), str(e)))
    return runs


def meter_file(m: Meter, source: Source, path: Path, *, agent: str | None = None) -> FileRun:
    """Charge what is new in one codex rollout or aider analytics log (offsets in ``HOME/meter/<source>/``)."""
    from token_exchange.meter import aider, codex, offsets

    session = codex.session_from_name(path) if source == "codex" else ""
    try:
        who = m.agent_for(source, option=agent, cwd=os.getcwd(), path=str(path), session=session or None)
    except UnknownAgent as e:
        return FileRun(str(path), None, None, 0, 0, (str(e),))
    state_path = state_file_for(m.home, source, path)
    reader = codex.reader_for(path) if source == "codex" else aider.reader_for(path)
    notes: list[str] = []
    with locked(state_path.with_suffix(".lock")):
        state, damaged = load_state(state_path)
        if damaged:
            notes.append(damaged)
        adv = offsets.advance(path, state.get(path), reader)
        records = adv.result.records
        charged = m.charge(who, records) if records else None
        offsets.save(state_path, state.with_mark(path, adv.mark), sync=False)
    notes.extend(r for r in adv.result.reasons if not r.startswith("line "))
    if adv.result.reasons and adv.result.reasons[0].startswith("line "):
        notes.append(adv.result.reasons[0])
    return FileRun(str(path), who, charged, len(records), adv.result.skipped, tuple(notes))


# --- installing the hooks into .claude/settings.json ---------------------------------------------
HOOK_PROGRAMS = {"tx-meter": "claude-code", "tx-guard": "claude-code"}
TX_PROGRAMS = ("tx", "token-exchange")


def is_our_command(command: object) -> bool:
    """A hook command we install: ``[PATH/]tx-meter claude-code ...``, ``[PATH/]tx-guard claude-code ...``
    or ``[PATH/]tx meter|guard claude-code ...`` (options after it allowed)."""
    import shlex

    if not isinstance(command, str) or len(command) > 4096:
        return False
    try:
        argv = shlex.split(command)
    except ValueError:
        return False
    if len(argv) < 2:
        return False
    prog = os.path.basename(argv[0])
    if HOOK_PROGRAMS.get(prog) == argv[1]:
        return True
    return prog in TX_PROGRAMS and len(argv) >= 3 and argv[1] in ("meter", "guard") and argv[2] == "claude-code"


def our_commands(text: str, name: str = "settings.json") -> list[str]:
    """Every hook command in a settings text that ``is_our_command``."""
    from token_exchange.meter import claude_settings

    doc = claude_settings.parse(text, name=name)
    found: dict[str, None] = {}
    for groups in (doc.get("hooks") or {}).values():
        for group in groups:
            for handler in group.get("hooks", []):
                if isinstance(handler, dict) and is_our_command(handler.get("command")):
                    found[handler["command"]] = None
    return list(found)


SCOPES = ("project", "local", "user")


class Installed(NamedTuple):
    """What ``install`` / ``uninstall`` did to one settings file."""

    path: Path
    changed: bool
    events: tuple[str, ...]
    replaced: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"settings": str(self.path), "changed": self.changed, "events": list(self.events),
                "replaced": list(self.replaced), "warnings": list(self.warnings)}


def settings_file(scope: str = "project", explicit: str | Path | None = None, cwd: Path | None = None) -> Path:
    """``--settings PATH``, else the scope's file: ``project`` = ``<repository>/.claude/settings.json``
    (shared, usually committed), ``local`` = ``settings.local.json`` next to it (yours only),
    ``user`` = ``~/.claude/settings.json`` (every project)."""
    if explicit:
        return Path(explicit).expanduser().absolute()
    if scope not in SCOPES:
        raise UserError(f"--scope must be one of {', '.join(SCOPES)}, not {short(scope)}")
    if scope == "user":
        return Path.home() / ".claude" / "settings.json"
    from token_exchange import git

    here = Path(cwd or Path.cwd())
    top = git.toplevel(here) or here
    return top / ".claude" / ("settings.local.json" if scope == "local" else "settings.json")


def hook_program(name: str) -> str:
    """The ``tx-meter`` / ``tx-guard`` script of this installation (next to the interpreter), else the
    one on PATH, else the bare name."""
    import shutil
    import sys

    here = Path(sys.executable).parent / name
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which(name) or name


def hook_commands(*, home: str | Path | None = None, agent: str | None = None,
                  meter_program: str | None = None, guard_program: str | None = None) -> tuple[str, str]:
    """The command lines the settings get: ``tx-meter claude-code`` and ``tx-guard claude-code``, with
    ``--home`` / ``--agent`` when given."""
    import shlex

    extra = ""
    if home:
        extra += f" --home {shlex.quote(str(Path(home).expanduser().absolute()))}"
    if agent:
        extra += f" --agent {shlex.quote(agent)}"
    meter = f"{shlex.quote(meter_program or hook_program('tx-meter'))} claude-code{extra}"
    guard = f"{shlex.quote(guard_program or hook_program('tx-guard'))} claude-code{extra}"
    return meter, guard


def _read_settings(path: Path) -> str:
    from token_exchange.meter.claude_settings import MAX_SETTINGS, SettingsError

    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SETTINGS + 1)
    except FileNotFoundError:
        return ""
    except OSError as e:
        raise SettingsError(f"{short_path(path)}: cannot read ({e.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"{short_path(path)} is not UTF-8 text; nothing was changed") from None


def _write_settings(path: Path, text: str) -> None:
    """Replace the file atomically, keeping its mode; a symlinked settings file (dotfiles) is written
    where it points, so the link stays."""
    target = Path(os.path.realpath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = 0o644
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tx-tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise UserError(f"{short_path(path)}: cannot write ({e.strerror})") from None


def install_claude_code(path: Path, meter_command: str, guard_command: str | None) -> Installed:
    """Merge our hooks into a Claude Code settings file (everything else is kept); an older command
    of ours (another path, other options) is replaced, so hooks never run twice."""
    from token_exchange.meter import claude_settings

    text = _read_settings(path)
    stale = tuple(c for c in our_commands(text, path.name) if c not in (meter_command, guard_command))
    removed = claude_settings.remove(text, list(stale), name=path.name) if stale else None
    merged = claude_settings.install(removed.text if removed else text, meter_command, guard_command, name=path.name)
    changed = merged.changed or bool(removed and removed.changed)
    if changed:
        _write_settings(path, merged.text)
    events = tuple(dict.fromkeys([*(removed.events if removed else ()), *merged.events]))
    return Installed(path, changed, events, stale, merged.warnings)


def uninstall_claude_code(path: Path) -> Installed:
    """Remove only our hook commands from a settings file; the rest stays as it was."""
    from token_exchange.meter import claude_settings

    text = _read_settings(path)
    if not text:
        return Installed(path, False, ())
    result = claude_settings.remove(text, our_commands(text, path.name), name=path.name)
    if result.changed:
        _write_settings(path, result.text)
    return Installed(path, result.changed, result.events)
