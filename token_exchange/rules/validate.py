"""The config's checks: the raw TOML dict becomes a ``Config``, or one error naming the key and its
line.  Every rule of what a valid config is lives here, once (``tx init``, the hooks, the report and
settlement all read the rules through it)."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

from token_exchange.amounts import Units, to_decimal, to_units
from token_exchange.errors import ConfigError, UserError
from token_exchange.ledger.backends import DEFAULT as DEFAULT_BACKEND
from token_exchange.rules.patterns import MAX_PATTERN, PatternError, compiled
from token_exchange.rules.settings import (
    AGENT_NAME,
    BACKENDS,
    BRANCH_RE,
    CACHE_PRICE_KEYS,
    CAP_SOURCES,
    CAP_WINDOWS,
    DEFAULT_GUARD_HEADROOM,
    METER_KEYS,
    METER_SOURCES,
    SESSION_MATCHERS,
    SETTLEMENT_MODES,
    UNKNOWN_AUTHOR,
    Agent,
    BonusGroup,
    Cap,
    CommitRules,
    Config,
    Contract,
    Limits,
    MeterConfig,
    Model,
    SessionRule,
    Settlement,
    defaults,
)


class Validator:
    """Turns the raw TOML dict into a Config, naming key and line on every error.

    ``patterns_checked``: RE2 compiled the patterns in ``raw`` when it was validated before (``rules.config``'s
    cache of a validated config): not again, so a hook that tries none of them never loads RE2."""

    def __init__(self, raw: dict[str, Any], text: str, where: str, *, patterns_checked: bool = False) -> None:
        self.raw = raw
        self.lines = text.splitlines()
        self.where = where
        self.patterns_checked = patterns_checked

    def fail(self, key: str, msg: str) -> ConfigError:
        leaf = key.rsplit(".", 1)[-1].split("[")[0]
        line = ""
        pat = re.compile(rf"^\s*(\[\[?\s*)?\"?{re.escape(leaf)}\"?\s*(=|\]|\.)")
        for i, text in enumerate(self.lines, 1):
            if pat.search(text):
                line = f":{i}"
                break
        return ConfigError(f"{self.where}{line}: {key}: {msg}")

    def table(self, obj: Any, key: str, allowed: set[str] | None) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise self.fail(key, "expected a table")
        if allowed is not None:
            for k in obj:
                if k not in allowed:
                    raise self.fail(f"{key}.{k}" if key else k, f"unknown key (allowed: {', '.join(sorted(allowed))})")
        return obj

    def multiplier(self, value: Any, key: str) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
            raise self.fail(key, f"expected a number, got {value!r}")
        d = Decimal(value)
        if not d.is_finite() or d <= 0:
            raise self.fail(key, f"must be a positive number, got {value}")
        if d > 1000:
            raise self.fail(key, f"{value} is implausibly large (max 1000)")
        return d

    def amount(self, value: Any, key: str, *, allow_zero: bool = True) -> Units:
        if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
            raise self.fail(key, f"expected a number, got {value!r}")
        try:
            return to_units(value, what=key, allow_zero=allow_zero)
        except UserError as e:
            raise self.fail(key, str(e).split(": ", 1)[-1]) from None

    def string(self, value: Any, key: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {value!r}")
        if choices and value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def limits(self, obj: Any, key: str, base: Limits | None) -> Limits:
        t = self.table(obj, key, {"hourly", "daily", "burst", "reserve", "reservation_ttl"})
        vals: dict[str, Units] = {}
        for name in ("hourly", "daily", "burst", "reserve"):
            if name in t:
                vals[name] = self.amount(t[name], f"{key}.{name}")
            elif base is not None:
                vals[name] = getattr(base, name)
            else:
                raise self.fail(f"{key}.{name}", "missing")
        return Limits(vals["hourly"], vals["daily"], vals["burst"], vals["reserve"])

    def config(self, path: Path | None) -> Config:
        raw = self.table(self.raw, "", {"exchange", "agents", "models", "contracts", "bonuses",
                                        "commit_rules", "issues", "limits", "hooks", "meter", "settlement",
                                        "caps"})
        get = lambda k: raw[k] if k in raw else defaults()[k]  # noqa: E731  (defaults parsed only if needed)

        ex = self.table(get("exchange"), "exchange",
                        {"backend", "starting_balance", "unknown_author", "project", "notes_ref", "dsn"})
        backend = self.string(ex.get("backend", DEFAULT_BACKEND), "exchange.backend", BACKENDS)
        start = self.amount(ex.get("starting_balance", 10000), "exchange.starting_balance")
        unknown = self.string(ex.get("unknown_author", "ignore"), "exchange.unknown_author", UNKNOWN_AUTHOR)
        project = self.string(ex.get("project", ""), "exchange.project")
        notes_ref = self.string(ex.get("notes_ref", "refs/notes/token-exchange"), "exchange.notes_ref")
        if not re.fullmatch(r"refs/notes/[A-Za-z0-9._/-]{1,100}", notes_ref) or ".." in notes_ref:
            raise self.fail("exchange.notes_ref", f"must look like refs/notes/NAME, got {notes_ref!r}")
        # [exchange] dsn: the postgres backend's connection string (read there, from raw; docs/postgres.md).
        if len(self.string(ex.get("dsn", ""), "exchange.dsn")) > 4096:
            raise self.fail("exchange.dsn", "is longer than 4096 characters")

        lim = self.table(get("limits"), "limits", {"hourly", "daily", "burst", "reserve", "reservation_ttl"})
        limits = self.limits(lim, "limits", None)
        ttl = lim.get("reservation_ttl", 900)
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= 7 * 86400:
            raise self.fail("limits.reservation_ttl", f"must be whole seconds between 1 and 604800, got {ttl!r}")

        settlement = self.settlement(get("settlement"))
        # Provisional awards only exist in on-merge mode; only there can the limits hold them back.
        spendable = settlement.spend_provisional or settlement.mode != "on-merge"
        limits = limits._replace(spend_provisional=spendable)
        caps = self.caps(get("caps"), "caps", ())

        models: dict[str, Model] = {}
        for name, spec in self.table(get("models"), "models", None).items():
            key = f"models.{name}"
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}", name):
                raise self.fail(key, "invalid model name")
            s = self.table(spec, key, {"cost_per_1k", "input_per_1k", "output_per_1k", *CACHE_PRICE_KEYS})
            if "cost_per_1k" not in s:
                raise self.fail(f"{key}.cost_per_1k", "missing")
            cost = self._price(s["cost_per_1k"], f"{key}.cost_per_1k")
            models[name] = Model(name, cost, self._price(s.get("input_per_1k", cost), f"{key}.input_per_1k"),
                                 self._price(s.get("output_per_1k", cost), f"{key}.output_per_1k"),
                                 *self.cache_prices(s, key))

        agents: dict[str, Agent] = {}
        seen_emails: dict[str, str] = {}
        for name, spec in self.table(get("agents"), "agents", None).items():
            key = f"agents.{name}"
            if not AGENT_NAME.fullmatch(name):
                raise self.fail(key, "agent names are 1-64 of a-z 0-9 _ . - starting with a letter or digit")
            if name in agents:  # pragma: no cover - TOML itself rejects duplicate tables
                raise self.fail(key, "duplicate agent")
            s = self.table(spec, key, {"level", "base_rate", "primary_llm", "preferred_llm", "emails", "limits",
                                       "caps"})
            level = s.get("level", 1)
            if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 100:
                raise self.fail(f"{key}.level", f"expected a whole number 0-100, got {level!r}")
            if "base_rate" not in s:
                raise self.fail(f"{key}.base_rate", "missing")
            rate = to_decimal(self.amount(s["base_rate"], f"{key}.base_rate", allow_zero=False))
            primary = self.string(s.get("primary_llm", ""), f"{key}.primary_llm")
            if primary not in models:
                raise self.fail(f"{key}.primary_llm", f"unknown model {primary!r}")
            pref = self.table(s.get("preferred_llm", {}), f"{key}.preferred_llm", None)
            for task, model in pref.items():
                if self.string(model, f"{key}.preferred_llm.{task}") not in models:
                    raise self.fail(f"{key}.preferred_llm.{task}", f"unknown model {model!r}")
            emails = s.get("emails", [])
            if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails):
                raise self.fail(f"{key}.emails", "expected a list of strings")
            for e in emails:
                low = e.strip().lower()
                if low in seen_emails and seen_emails[low] != name:
                    raise self.fail(f"{key}.emails", f"{e} already belongs to agent {seen_emails[low]}")
                seen_emails[low] = name
            agent_limits = self.limits(s["limits"], f"{key}.limits", limits) if "limits" in s else limits
            agent_limits = agent_limits._replace(spend_provisional=spendable)
            agent_caps = self.caps(s["caps"], f"{key}.caps", caps) if "caps" in s else caps
            agents[name] = Agent(name, level, rate, primary, dict(pref), tuple(e.strip().lower() for e in emails),
                                 agent_limits, agent_caps)

        self.meter(agents, models)  # [meter] (issue 18): validated with the rest, read by meter_config()

        contracts = self._contracts(get("contracts"))
        bonuses = self._bonuses(get("bonuses"))

        cr = self.table(get("commit_rules"), "commit_rules", {"pay_merges", "pay_fixups", "pay_reverts"})
        for k, v in cr.items():
            if not isinstance(v, bool):
                raise self.fail(f"commit_rules.{k}", f"expected true or false, got {v!r}")
        rules = CommitRules(**cr)

        iss = self.table(get("issues"), "issues", {"default_type_multiplier", "priority", "types"})
        dtm = self.multiplier(iss.get("default_type_multiplier", Decimal(1)), "issues.default_type_multiplier")
        prio: dict[str, Decimal] = {}
        priorities = iss["priority"] if "priority" in iss else defaults()["issues"]["priority"]
        for k, v in self.table(priorities, "issues.priority", None).items():
            if not re.fullmatch(r"P[0-9]", k):
                raise self.fail(f"issues.priority.{k}", "priority keys are P0-P9")
            prio[k] = to_decimal(self.amount(v, f"issues.priority.{k}"))
        type_table = iss["types"] if "types" in iss else defaults()["issues"]["types"]
        types = {k.lower(): self.multiplier(v, f"issues.types.{k}")
                 for k, v in self.table(type_table, "issues.types", None).items()}

        self.table(raw.get("hooks", {}), "hooks", {"server"})  # [hooks] server: the old hook server, ignored

        return Config(backend, start, unknown, project, notes_ref, agents, models, contracts, bonuses, rules,
                      prio, types, dtm, limits, ttl, path, self.raw, settlement, caps)

    def settlement(self, obj: Any) -> Settlement:
        t = self.table(obj, "settlement", {"mode", "branch", "provisional_ttl", "spend_provisional"})
        mode = self.string(t.get("mode", "immediate"), "settlement.mode", SETTLEMENT_MODES)
        branch = self.string(t.get("branch", "main"), "settlement.branch")
        if not BRANCH_RE.fullmatch(branch) or ".." in branch or branch.endswith((".lock", "/")):
            raise self.fail("settlement.branch", f"not a usable branch name: {branch[:60]!r}")
        ttl = t.get("provisional_ttl", 30 * 86400)
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 60 <= ttl <= 366 * 86400:
            raise self.fail("settlement.provisional_ttl",
                            f"must be whole seconds between 60 and {366 * 86400} (a year), got {ttl!r}")
        spend = t.get("spend_provisional", False)
        if not isinstance(spend, bool):
            raise self.fail("settlement.spend_provisional", f"expected true or false, got {spend!r}")
        return Settlement(mode, branch, ttl, spend)

    def caps(self, obj: Any, key: str, base: tuple[Cap, ...]) -> tuple[Cap, ...]:
        """``{commits = {daily = N}, issues = {...}}``; an agent's table overrides ``base`` per source and window."""
        t = self.table(obj, key, set(CAP_SOURCES))
        found = {(c.source, c.window): c for c in base}
        for source, spec in t.items():
            windows = self.table(spec, f"{key}.{source}", set(CAP_WINDOWS))
            for window, value in windows.items():
                found[(source, window)] = Cap(source, window, CAP_WINDOWS[window],
                                              self.amount(value, f"{key}.{source}.{window}"))
        return tuple(found[k] for k in sorted(found, key=lambda k: (CAP_SOURCES.index(k[0]), CAP_WINDOWS[k[1]])))

    def _price(self, value: Any, key: str) -> Decimal:
        return to_decimal(self.amount(value, key, allow_zero=True))

    def _contracts(self, obj: Any) -> tuple[Contract, ...]:
        if not isinstance(obj, list) or not obj:
            raise self.fail("contracts", "expected a non-empty array of tables ([[contracts]])")
        out: list[Contract] = []
        names: set[str] = set()
        for i, spec in enumerate(obj):
            key = f"contracts[{i}]"
            s = self.table(spec, key, {"name", "pattern", "multiplier", "budget"})
            name = self.string(s.get("name", s.get("pattern", "")), f"{key}.name")
            if not name or len(name) > 100:
                raise self.fail(f"{key}.name", "must be 1-100 characters")
            if name in names:
                raise self.fail(f"{key}.name", f"duplicate contract {name!r}")
            names.add(name)
            pattern = s.get("pattern")
            if name == "default" and pattern is None:
                pat = None
            else:
                pat = self.string(pattern if pattern is not None else name, f"{key}.pattern")
                if len(pat) > MAX_PATTERN:
                    raise self.fail(f"{key}.pattern", f"longer than {MAX_PATTERN} characters")
                try:  # the one pattern policy: RE2, linear time (rules.patterns)
                    if not self.patterns_checked:
                        compiled(pat)
                except PatternError as e:
                    raise self.fail(f"{key}.pattern", str(e)) from None
            mult = self.multiplier(s.get("multiplier", Decimal(1)), f"{key}.multiplier")
            if "budget" not in s:
                raise self.fail(f"{key}.budget", "missing")
            budget = self.amount(s["budget"], f"{key}.budget")
            out.append(Contract(name, pat, mult, budget))
        if out[-1].name != "default":
            raise self.fail("contracts", 'the last contract must be "default" (the catch-all)')
        if any(c.name == "default" for c in out[:-1]):
            raise self.fail("contracts", '"default" must be the last contract')
        return tuple(out)

    def _bonuses(self, obj: Any) -> tuple[BonusGroup, ...]:
        if not isinstance(obj, list):
            raise self.fail("bonuses", "expected an array of tables ([[bonuses]])")
        out = []
        for i, spec in enumerate(obj):
            key = f"bonuses[{i}]"
            s = self.table(spec, key, {"name", "keywords", "multiplier"})
            kws = s.get("keywords")
            if not isinstance(kws, list) or not kws or not all(isinstance(k, str) and k.strip() for k in kws):
                raise self.fail(f"{key}.keywords", "expected a non-empty list of words")
            if any(len(k) > 50 for k in kws):
                raise self.fail(f"{key}.keywords", "keywords are at most 50 characters")
            mult = self.multiplier(s.get("multiplier"), f"{key}.multiplier")
            out.append(BonusGroup(str(s.get("name", kws[0])), tuple(k.strip().lower() for k in kws), mult))
        return tuple(out)

    # --- metering (issue 18): [models.NAME] cache prices and the [meter] table ---------------------
    def cache_prices(self, spec: dict[str, Any], key: str) -> tuple[Decimal | None, Decimal | None]:
        """``cache_write_per_1k`` / ``cache_read_per_1k`` of a model; None when not given (derived)."""
        write, read = (self._price(spec[k], f"{key}.{k}") if k in spec else None for k in CACHE_PRICE_KEYS)
        return write, read

    def meter(self, agents: dict[str, Agent], models: dict[str, Model]) -> MeterConfig:
        """The [meter] table, key by key as ``METER_KEYS`` declares it; defaults for what it leaves out."""
        given = self.raw.get("meter")
        m = self.table({} if given is None else given, "meter", set(METER_KEYS))
        default_agent = self.string(m.get("default_agent", ""), "meter.default_agent")
        if default_agent and default_agent not in agents:
            raise self.fail("meter.default_agent", f"unknown agent {default_agent!r}")
        fallback = self.string(m.get("fallback_model", ""), "meter.fallback_model")
        if fallback and fallback not in models:
            raise self.fail("meter.fallback_model", f"unknown model {fallback!r}")
        headroom = self.amount(m.get("guard_headroom", DEFAULT_GUARD_HEADROOM), "meter.guard_headroom",
                               allow_zero=False)
        if "models" in m:
            aliases: dict[str, str] = {}
            for pattern, name in self.table(m["models"], "meter.models", None).items():
                what = f"meter.models.{pattern}"
                if not pattern or len(pattern) > MAX_PATTERN or "\x00" in pattern:
                    raise self.fail(what, f"a model id pattern is 1-{MAX_PATTERN} characters")
                if self.string(name, what) not in models:
                    raise self.fail(what, f"unknown model {name!r} (known: {', '.join(sorted(models))})")
                aliases[pattern] = name
        else:  # the defaults' map, minus entries for price tables this config does not have
            aliases = {k: v for k, v in defaults()["meter"]["models"].items() if v in models}
        rules = m.get("sessions", [])
        if not isinstance(rules, list):
            raise self.fail("meter.sessions", "expected an array of tables ([[meter.sessions]])")
        sessions = tuple(self.session_rule(r, f"meter.sessions[{i}]", agents) for i, r in enumerate(rules))
        return MeterConfig(default_agent, fallback, headroom, aliases, sessions)

    def session_rule(self, obj: Any, key: str, agents: dict[str, Agent]) -> SessionRule:
        s = self.table(obj, key, {"agent", *SESSION_MATCHERS})
        if "agent" not in s:
            raise self.fail(f"{key}.agent", "missing")
        agent = self.string(s["agent"], f"{key}.agent")
        if agent not in agents:
            raise self.fail(f"{key}.agent", f"unknown agent {agent!r}")
        source = s.get("source", [])
        sources = [source] if isinstance(source, str) else source
        if not isinstance(sources, list) or not all(isinstance(x, str) and x in METER_SOURCES for x in sources):
            raise self.fail(f"{key}.source", f"expected one or a list of {', '.join(METER_SOURCES)}")
        globs: dict[str, str | None] = {}
        for name in ("cwd", "path", "session"):
            value = s.get(name)
            if value is not None:
                value = self.string(value, f"{key}.{name}")
                if not value or len(value) > MAX_PATTERN or "\x00" in value:
                    raise self.fail(f"{key}.{name}", f"a pattern is 1-{MAX_PATTERN} characters")
            globs[name] = value
        return SessionRule(agent, tuple(dict.fromkeys(sources)), globs["cwd"], globs["path"], globs["session"])
    # --- end of metering ---------------------------------------------------------------------------

