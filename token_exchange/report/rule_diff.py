"""What a pull request changes in the reward rules: shown to reviewers, never applied to its own report."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from token_exchange.amounts import fmt
from token_exchange.errors import ConfigError, clean_text
from token_exchange.rules import config as config_mod
from token_exchange.rules.config import Config

MAX_DIFF = 8_000


# --- rule changes --------------------------------------------------------------------
def rule_changes(base_cfg: Config, base_text: str | None, head_text: str | None, head_rev: str,
                 path: str) -> dict[str, Any]:
    """What the pull request changes in the rules (none of it applies to this report)."""
    if (base_text or "") == (head_text or ""):
        return {"changed": False, "changes": [], "diff": "", "diff_truncated": False, "head_error": ""}
    changes: list[str] = []
    head_error = ""
    head_cfg: Config | None = None
    if head_text is None:
        changes.append(f"{path} is deleted (the built-in defaults would apply)")
        head_cfg = config_mod.parse(config_mod.default_text(), None)
    else:
        try:
            head_cfg = config_mod.parse(head_text, Path(f"{head_rev[:12]}:{path}"))
        except ConfigError as e:
            head_error = clean_text(str(e), limit=300)
    if head_cfg is not None:
        changes.extend(_semantic_changes(base_cfg, head_cfg))
    diff = "".join(difflib.unified_diff((base_text or "").splitlines(True), (head_text or "").splitlines(True),
                                        f"base:{path}", f"head:{path}", n=1))
    truncated = len(diff) > MAX_DIFF
    if truncated:
        diff = diff[:MAX_DIFF]
    return {"changed": True, "changes": changes, "diff": diff, "diff_truncated": truncated,
            "head_error": head_error}


def _arrow(label: str, get: Callable[[Any], Any]) -> Callable[[Any, Any], str | None]:
    """A field change shown as ``label old -> new``."""
    return lambda x, y: f"{label} {get(x)} -> {get(y)}" if get(x) != get(y) else None


def _emails_change(x: Any, y: Any) -> str | None:
    if x.emails == y.emails:
        return None
    added = [e for e in y.emails if e not in x.emails]
    removed = [e for e in x.emails if e not in y.emails]
    return "emails " + "; ".join(p for p in (f"added {', '.join(added)}" if added else "",
                                             f"removed {', '.join(removed)}" if removed else "") if p)


def _entry_changes(kind: str, names: list[str], a: dict[str, Any], b: dict[str, Any],
                   describe: Callable[[Any], str], fields: list[Callable[[Any, Any], str | None]]) -> list[str]:
    """Added, removed and changed entries of one rule table (agents, contracts, bonuses)."""
    out: list[str] = []
    for name in names:
        x, y = a.get(name), b.get(name)
        if x is None and y is not None:
            out.append(f"{kind} {name} added ({describe(y)})")
        elif y is None and x is not None:
            out.append(f"{kind} {name} removed")
        elif x is not None and y is not None:
            out.extend(f"{kind} {name}: {c}" for c in (f(x, y) for f in fields) if c)
    return out


def _semantic_changes(a: Config, b: Config) -> list[str]:
    out = _entry_changes("agent", sorted(set(a.agents) | set(b.agents)), a.agents, b.agents,
                         lambda y: f"base rate {y.base_rate}, emails {', '.join(y.emails) or 'none'}",
                         [_arrow("base rate", lambda v: v.base_rate), _emails_change])
    ca = {c.name: c for c in a.contracts}
    cb = {c.name: c for c in b.contracts}
    out += _entry_changes("contract", list(ca) + [n for n in cb if n not in ca], ca, cb,
                          lambda y: f"x{y.multiplier}, budget {fmt(y.budget)}",
                          [_arrow("multiplier", lambda v: v.multiplier), _arrow("budget", lambda v: fmt(v.budget)),
                           _arrow("pattern", lambda v: v.pattern)])
    if [c.name for c in a.contracts] != [c.name for c in b.contracts] and set(ca) == set(cb):
        out.append("contracts reordered (the first matching pattern wins)")
    ba = {g.name: g for g in a.bonuses}
    bb = {g.name: g for g in b.bonuses}
    out += _entry_changes("bonus", list(ba) + [n for n in bb if n not in ba], ba, bb,
                          lambda y: f"x{y.multiplier}: {', '.join(y.keywords)}",
                          [_arrow("multiplier", lambda v: v.multiplier),
                           lambda x, y: f"keywords {', '.join(y.keywords)}" if x.keywords != y.keywords else None])
    for k in ("pay_merges", "pay_fixups", "pay_reverts"):
        if getattr(a.commit_rules, k) != getattr(b.commit_rules, k):
            out.append(f"commit_rules.{k}: {getattr(a.commit_rules, k)} -> {getattr(b.commit_rules, k)}")
    for k in ("project", "backend", "unknown_author", "notes_ref"):
        if getattr(a, k) != getattr(b, k):
            out.append(f"exchange.{k}: {getattr(a, k)!r} -> {getattr(b, k)!r}")
    return out


