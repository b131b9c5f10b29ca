"""The per-pull-request earnings report: who earns what from a range of commits, and why.

CI is the authority (client hooks can be skipped), so the report recomputes every
reward from history with the pure rules in ``rewards``:

* the commits are ``merge-base(base, head)..head``, read with ONE ``git log``
  (NUL-separated fields) plus, when reward ids are wanted, the batched
  ``rewardid.patch_ids`` pipeline (two processes) -- never one process per commit;
* the rules come from the **base** revision's config read from git
  (``git show BASE:.exchange/config.toml``), never from the working tree, so a
  pull request that edits the config to pay itself gains nothing; the config
  diff between base and head is reported separately for reviewers;
* contract budgets are applied across the commits oldest first, starting from
  what the ledger says is already paid under the contract (0 without a ledger);
* with a ledger, each commit shows whether it is already paid (``commit:<id>``).

Rendering: ``render_markdown`` (a PR comment: < 60 KB, stable hidden marker,
untrusted text escaped, no @-mention pings), ``render_text``, ``to_json``.
Output is deterministic: no clock, no dates.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from token_exchange.rules import config as config_mod
from token_exchange.report.range import Begun, RawCommit, abandon, begin, config_texts_at, finish_range, rev
from token_exchange.amounts import Units, fmt, split, to_decimal
from token_exchange.rules.config import BonusGroup, Config
from token_exchange.errors import ConfigError, clean_text
from token_exchange.rules.identities import agent_for, co_author_emails
from token_exchange.rules.reward_ids import patch_ids, reward_id_of, trailer_ids
from token_exchange.rules.rewards import (CommitReward, commit_reward, exclusion, keyword_bonuses, match_contract,
                                    with_budget)

MARKER = "<!-- token-exchange-report -->"
DEFAULT_CONFIG_PATH = ".exchange/config.toml"
MAX_MARKDOWN = 60_000  # bytes; GitHub comments allow 65,536 characters
COLLAPSE_OVER = 15  # commit tables longer than this go in <details>
MAX_SUBJECT = 100
MAX_NAME = 60
MAX_UNMATCHED_SHOWN = 50
MAX_DIFF = 8_000
HINT = "add it to [agents.NAME] emails in .exchange/config.toml"


# --- collecting (history.py) -------------------------------------------------------
def rules_from(text: str | None, rev: str, path: str) -> tuple[Config, str | None]:
    """The rules in the config ``text`` read at ``rev`` (None: the file is not there, the defaults apply)."""
    if text is None:
        return config_mod.parse(config_mod.default_text(), None), None
    return config_mod.parse(text, Path(f"{rev[:12]}:{path}")), text


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
    import difflib

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


# --- computing -----------------------------------------------------------------------
# Plain classes with __slots__, not dataclasses: `import dataclasses` alone costs a report ~15 ms.
class CommitLine:
    __slots__ = ("sha", "parents", "email", "name", "subject", "agents", "reward", "amount", "shares", "reward_id",
                 "status", "paid", "overpaid")

    def __init__(self, sha: str, parents: int, email: str, name: str, subject: str, agents: list[str],
                 reward: CommitReward | None, amount: Units, shares: dict[str, Units],
                 reward_id: str | None = None) -> None:
        self.sha, self.parents, self.email, self.name, self.subject = sha, parents, email, name, subject
        self.agents, self.reward, self.shares, self.reward_id = agents, reward, shares, reward_id
        self.amount: Units = amount  # what the commit earns: the ledger's figure when paid, else the rules'
        self.status: str | None = None  # None without a ledger; "paid" / "unpaid"
        self.paid: Units = 0
        self.overpaid = False  # the ledger paid more than the base rules allow

    @property
    def excluded(self) -> str | None:
        return self.reward.excluded if self.reward else None


class AgentTotal:
    __slots__ = ("commits", "amount", "paid", "due")

    def __init__(self) -> None:
        self.commits = 0
        self.amount: Units = 0
        self.paid: Units = 0
        self.due: Units = 0


class ContractUse:
    __slots__ = ("name", "multiplier", "budget", "paid_before", "this_pr")

    def __init__(self, name: str, multiplier: str, budget: Units, paid_before: Units) -> None:
        self.name, self.multiplier, self.budget, self.paid_before = name, multiplier, budget, paid_before
        self.this_pr: Units = 0

    @property
    def left(self) -> Units:
        return max(self.budget - self.paid_before - self.this_pr, 0)


class Report(NamedTuple):
    base: str
    head: str
    merge_base: str
    project: str
    config_source: str
    ledger: str | None
    commits: list[CommitLine]
    agents: dict[str, AgentTotal]
    contracts: list[ContractUse]
    unmatched: dict[str, int]
    rules: dict[str, Any]
    unknown_author: str = "ignore"
    notes: list[str] = []  # never mutated: build() passes its own list

    @property
    def total(self) -> Units:
        return sum(a.amount for a in self.agents.values())


LedgerLookup = Callable[[str], list[Any]]  # reward id -> txns paid under commit:<id>


def compute(commits: Sequence[RawCommit], cfg: Config, project: str, *,
            reward_ids: dict[str, str] | None = None, paid_lookup: LedgerLookup | None = None,
            contract_paid: Callable[[str], Units] | None = None,
            bonus_by_sha: dict[str, tuple[BonusGroup | None, str]] | None = None,
            ) -> tuple[list[CommitLine], dict[str, AgentTotal], list[ContractUse], dict[str, int]]:
    """Apply the rules to the commits oldest first, exactly as ``Exchange.commit`` would pay them."""
    project = clean_text(project, limit=200)
    uses: dict[str, ContractUse] = {}
    agents: dict[str, AgentTotal] = {}
    unmatched: dict[str, int] = {}
    lines: list[CommitLine] = []
    who: dict[str, str | None] = {}  # email -> agent, memoised (thousands of commits, a few authors)
    contract = match_contract(cfg.contracts, project)
    priced: dict[tuple[str, int, str, str, str | None], CommitReward] = {}
    capped: dict[tuple[tuple[str, int, str, str, str | None], Units], CommitReward] = {}
    messages = [clean_text(rc.message, limit=65536) for rc in commits]
    known = bonus_by_sha or {}  # keyword bonuses priced as the log arrived (a pure function of the message)
    missing = [i for i, rc in enumerate(commits) if rc.sha not in known]
    found = dict(zip(missing, keyword_bonuses(cfg.bonuses, [messages[i] for i in missing])))
    bonuses = [known[rc.sha] if rc.sha in known else found[i] for i, rc in enumerate(commits)]
    rules = cfg.commit_rules
    solo: dict[str, list[str]] = {}  # author email -> its agents when there are no co-authors (shared, read-only)
    use: ContractUse | None = None  # one project, so one contract for the whole report
    for rc, message, (group, keyword) in zip(commits, messages, bonuses):
        nl = message.find("\n")
        subject = message if nl < 0 else message[:nl]
        co = co_author_emails(message) if ("-b" in message or "-B" in message) else ()  # "Co-authored-by:"
        names = solo.get(rc.email) if not co else None
        if names is None:
            names = []
            for addr in (rc.email, *co):
                if addr not in who:
                    who[addr] = agent_for(cfg, addr)
                n = who[addr]
                if n and n not in names:
                    names.append(n)
            if not co:
                solo[rc.email] = names
        parents = len(rc.parents)
        rid = reward_ids.get(rc.sha) if reward_ids is not None else None
        if not names:
            unmatched[rc.email] = unmatched.get(rc.email, 0) + 1
            lines.append(CommitLine(rc.sha, parents, rc.email, rc.name, subject, [], None, 0, {}, rid))
            continue
        if use is None:
            before = contract_paid(contract.name) if contract_paid else 0
            use = uses[contract.name] = ContractUse(contract.name, str(contract.multiplier), contract.budget, before)
        paid_txns = paid_lookup(rid) if (paid_lookup and rid) else []
        # commit_reward depends on the message only through its bonus and exclusion: price each
        # (agent, parents, bonus, exclusion) once, then apply the running budget.
        key = (names[0], parents, group.name if group else "", keyword, exclusion(message, parents, rules))
        uncapped = priced.get(key)
        if uncapped is None:
            uncapped = priced[key] = commit_reward(cfg, names[0], project, message, parents, 0)
        spent = use.paid_before + use.this_pr
        left = use.budget - spent if use.budget > spent else 0
        reward = capped.get((key, left))
        if reward is None:
            reward = capped[(key, left)] = with_budget(uncapped, spent)
        if paid_txns:
            # Already in the ledger (and so already in paid_before): report what was paid.
            shares: dict[str, Units] = {}
            for t in paid_txns:
                shares[t.agent] = shares.get(t.agent, 0) + t.amount
            line = CommitLine(rc.sha, parents, rc.email, rc.name, subject, names, reward, 0, shares, rid)
            line.paid = line.amount = sum(shares.values())
            line.overpaid = line.paid > reward.gross
        else:
            amount = reward.amount
            shares = {names[0]: amount} if len(names) == 1 else split(amount, {a: 1 for a in names})
            line = CommitLine(rc.sha, parents, rc.email, rc.name, subject, names, reward, amount, shares, rid)
            use.this_pr += amount
        paid = bool(paid_txns)
        if paid_lookup is not None:
            line.status = "paid" if paid else "unpaid"
        for a, amt in shares.items():
            tot = agents.get(a)
            if tot is None:
                tot = agents[a] = AgentTotal()
            tot.commits += 1
            tot.amount += amt
            if paid:
                tot.paid += amt
            else:
                tot.due += amt
        lines.append(line)
    if not uses:
        c = contract
        uses[c.name] = ContractUse(c.name, str(c.multiplier), c.budget, contract_paid(c.name) if contract_paid else 0)
    return lines, dict(sorted(agents.items())), list(uses.values()), unmatched


def compute_reward_ids(repo: Path, commits: Sequence[RawCommit]) -> dict[str, str]:
    """Reward ids for all commits: trailer, else batched patch-id (merges get none), else SHA."""
    trailers = [trailer_ids(clean_text(rc.message, limit=65536)) for rc in commits]
    pids = patch_ids(repo, [rc.sha for rc, ids in zip(commits, trailers) if len(rc.parents) <= 1 and not ids])
    return {rc.sha: reward_id_of(ids, rc.sha, pids.get(rc.sha)) for rc, ids in zip(commits, trailers)}


# --- the whole report ----------------------------------------------------------------
def project_for(repo: Path, cfg: Config, option: str | None) -> str:
    from token_exchange.git import project_name

    return option or project_name(repo, cfg.project)


def open_ledger(home: Path | None, cfg: Config, repo: Path) -> tuple[Any, str] | None:
    """An Exchange over ``home`` with the BASE rules, when a ledger actually exists there."""
    if home is None:
        return None
    from token_exchange.services.exchange import Exchange

    from token_exchange.ledger.backends import open_journal

    what = open_journal(cfg.backend, home, cfg).existing()
    if what is None:
        return None
    home.mkdir(parents=True, exist_ok=True)
    return Exchange(home, cfg=cfg), what


def build(repo: Path, base: str, head: str, *, config_path: str = DEFAULT_CONFIG_PATH,
          config_rev: str | None = None, project: str | None = None, home: Path | None = None,
          use_ledger: bool = True, want_ids: bool = True, begun: Begun | None = None) -> Report:
    """Collect, compute and return the report.

    Reward ids are always computed when a ledger is used (they decide paid/unpaid); otherwise
    only if ``want_ids`` -- then the patch-id pipeline runs in git processes while Python
    computes the rewards.  ``begun``: the range's git processes, already started (``history.begin``).
    """
    repo = Path(repo)
    begun = begun or begin(repo, base, head)  # git's walk of the range runs while the rules are read
    base_sha, head_sha, started = begun
    try:
        rules_rev = rev(repo, config_rev, "--config-rev") if config_rev else base_sha
        rules_text, head_text = config_texts_at(repo, [rules_rev, head_sha], config_path)
        cfg, base_text = rules_from(rules_text, rules_rev, config_path)
        where = "base" if rules_rev == base_sha else "revision"
        source = (f"{where} {rules_rev[:12]}:{config_path}" if base_text is not None
                  else f"built-in defaults ({config_path} is not in {where} {rules_rev[:12]})")
        changes = rule_changes(cfg, base_text, head_text, head_sha, config_path)
        proj = project_for(repo, cfg, project)
    except BaseException:
        abandon(started)
        raise
    bonus_by_sha: dict[str, tuple[BonusGroup | None, str]] = {}

    def price_batch(batch: list[RawCommit]) -> None:  # while git is still writing the rest of the log
        messages = [clean_text(rc.message, limit=65536) for rc in batch]
        bonus_by_sha.update(zip((rc.sha for rc in batch), keyword_bonuses(cfg.bonuses, messages)))

    mb, commits = finish_range(repo, base_sha, head_sha, started, price_batch)
    ledger = open_ledger(home, cfg, repo) if use_ledger else None
    notes: list[str] = []
    if ledger is not None:
        ex, _what = ledger
        try:
            ids = compute_reward_ids(repo, commits)
            idx = ex.ledger.fresh()
            lines, agents, uses, unmatched = compute(
                commits, cfg, proj, reward_ids=ids, paid_lookup=lambda rid: idx.by_ref("commit:" + rid),
                contract_paid=idx.contract_paid, bonus_by_sha=bonus_by_sha)
        finally:
            ex.close()
    else:
        ids_box: dict[str, str] = {}
        worker = None
        if want_ids:
            worker = threading.Thread(target=lambda: ids_box.update(compute_reward_ids(repo, commits)),
                                      daemon=True)
            worker.start()
        lines, agents, uses, unmatched = compute(commits, cfg, proj, bonus_by_sha=bonus_by_sha)
        if worker is not None:
            worker.join()
            for ln in lines:
                ln.reward_id = ids_box.get(ln.sha)
    if any(ln.overpaid for ln in lines):
        notes.append("some commits were paid more than the base rules allow (marked !)")
    return Report(base_sha, head_sha, mb, proj, source, ledger[1] if ledger else None, lines, agents, uses,
                  unmatched, changes, cfg.unknown_author, notes)


# --- JSON ----------------------------------------------------------------------------
def _amt(units: Units) -> Any:
    return to_decimal(units)


def to_json(r: Report) -> dict[str, Any]:
    memo = _Memo()
    return {
        "base": r.base, "head": r.head, "merge_base": r.merge_base, "project": r.project,
        "rules": r.config_source, "ledger": r.ledger, "total": _amt(r.total),
        "agents": {a: {"commits": t.commits, "amount": _amt(t.amount), "paid": _amt(t.paid), "due": _amt(t.due)}
                   for a, t in r.agents.items()},
        "contracts": [{"name": c.name, "multiplier": c.multiplier, "budget": _amt(c.budget),
                       "paid_before": _amt(c.paid_before), "this_pr": _amt(c.this_pr), "left": _amt(c.left)}
                      for c in r.contracts],
        "unmatched": [{"email": e, "commits": n, "hint": HINT} for e, n in sorted(r.unmatched.items())],
        "commits": [_commit_json(c, memo) for c in r.commits],
        "rule_changes": r.rules,
        "notes": r.notes,
    }


def _commit_json(c: CommitLine, memo: _Memo | None = None) -> dict[str, Any]:
    m = memo or _Memo()
    d: dict[str, Any] = {"sha": c.sha, "parents": c.parents, "author_email": c.email, "author_name": c.name,
                         "subject": c.subject[:500], "agents": c.agents, "amount": m.amount(c.amount),
                         "shares": {a: m.amount(v) for a, v in c.shares.items()}}
    if c.reward_id is not None:
        d["reward_id"] = c.reward_id
    if c.reward is None:
        d["unmatched"] = True
        d["reason"] = "author maps to no agent"
    else:
        d["reason"] = m.reason(c.reward)
        d["breakdown"] = m.breakdown(c.reward)
        d["excluded"] = c.reward.excluded
    if c.status is not None:
        d["status"] = c.status
        d["paid"] = m.amount(c.paid)
        if c.overpaid:
            d["overpaid"] = True
    return d


class _Memo:
    """Formatting shared by many commits, done once: thousands of commits carry a handful of distinct
    rewards (``compute`` reuses one CommitReward per pricing), amounts and authors."""

    def __init__(self) -> None:
        self._amounts: dict[Units, Any] = {}
        self._texts: dict[Units, str] = {}
        self._reasons: dict[int, tuple[CommitReward, str]] = {}
        self._breakdowns: dict[int, tuple[CommitReward, dict[str, Any]]] = {}
        self._plain: dict[tuple[str, int], str] = {}

    def amount(self, units: Units) -> Any:
        v = self._amounts.get(units)
        if v is None:
            v = self._amounts[units] = to_decimal(units)
        return v

    def fmt(self, units: Units) -> str:
        v = self._texts.get(units)
        if v is None:
            v = self._texts[units] = fmt(units)
        return v

    def reason(self, reward: CommitReward) -> str:
        hit = self._reasons.get(id(reward))  # keyed by identity, holding the object so the id stays unique
        if hit is None or hit[0] is not reward:
            hit = self._reasons[id(reward)] = (reward, reward.reason)
        return hit[1]

    def breakdown(self, reward: CommitReward) -> dict[str, Any]:
        hit = self._breakdowns.get(id(reward))
        if hit is None or hit[0] is not reward:
            hit = self._breakdowns[id(reward)] = (reward, reward.breakdown())
        return hit[1]

    def plain(self, text: str, limit: int) -> str:
        v = self._plain.get((text, limit))
        if v is None:
            v = _plain(text, limit)
            if len(self._plain) < 4096:  # authors and reasons repeat; subjects do not
                self._plain[(text, limit)] = v
        return v


# --- escaping untrusted text -----------------------------------------------------------
_PUNCT = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_BAD = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
ZWJ = "\u200d"


def md_escape(text: str, limit: int = MAX_SUBJECT) -> str:
    """Untrusted text as inert inline markdown: every ASCII punctuation backslash-escaped (no
    links, emphasis, HTML, tables or code), no control or bidi characters, and a zero-width
    joiner after ``@``, ``#`` and inside ``://`` / ``www.`` so nothing pings, links or autolinks."""
    text = clean_text(text, limit=100_000)
    text = _BAD.sub("\ufffd", text)
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    out: list[str] = []
    low = text.lower()
    for i, ch in enumerate(text):
        if ch in _PUNCT:
            out.append("\\" + ch)
            if ch in "@#":
                out.append(ZWJ)
            elif ch == ":" and low.startswith("//", i + 1):
                out.append(ZWJ)
            elif ch == "." and low.endswith("www", 0, i):
                out.append(ZWJ)
        else:
            out.append(ch)
    return "".join(out)


def _fence(text: str) -> str:
    """A fenced code block that the text cannot close."""
    longest = max((len(m) for m in re.findall(r"`+|~+", text)), default=0)
    f = "`" * max(3, longest + 1)
    body = _BAD.sub(lambda m: m.group(0) if m.group(0) == "\n" else "\ufffd", text)
    return f"{f}diff\n{body.rstrip()}\n{f}"


def _code(text: str) -> str:
    """Trusted short text (shas, amounts, our own words) as a code span."""
    return f"`{text}`"


# --- markdown --------------------------------------------------------------------------
def _why(c: CommitLine) -> str:
    if c.reward is None:
        return "author is not an agent"
    r = c.reward
    if r.excluded:
        return f"{r.excluded}: earns nothing"
    parts = [f"{r.base_rate} base", f"x{r.multiplier} {md_escape(r.contract, 40)}",
             f"x{r.bonus} {md_escape(r.keyword, 40) if r.keyword else '(no keyword)'}"]
    why = " ".join(parts)
    if r.capped and c.status != "paid":
        why += (", budget exhausted" if r.amount == 0 else f", capped from {fmt(r.gross)} by the budget")
    if len(c.agents) > 1:
        why += f", split {len(c.agents)} ways"
    return why


def _commit_row(c: CommitLine, with_status: bool) -> str:
    who = ", ".join(c.agents) if c.agents else "**unmatched**"
    cells = [_code(c.sha[:10]), md_escape(c.subject, MAX_SUBJECT) or "\\(no message\\)",
             md_escape(c.email, MAX_NAME), who, fmt(c.amount), _why(c)]
    if with_status:
        st = c.status or ""
        if c.overpaid:
            st += " \\!"
        cells.append(st)
    return "| " + " | ".join(cells) + " |"


def render_markdown(r: Report, limit: int = MAX_MARKDOWN) -> str:
    with_status = r.ledger is not None
    head: list[str] = [MARKER, "## Token earnings for this pull request", ""]
    n = len(r.commits)
    head.append(f"{n} commit{'s' if n != 1 else ''} in {_code(r.merge_base[:10] + '..' + r.head[:10])} "
                f"(base {_code(r.base[:10])}), project {_code(md_code_safe(r.project))}. "
                f"Rules from {md_escape(r.config_source, 200)}; this pull request's own rule changes do not apply.")
    if r.ledger:
        head.append(f"Ledger: {md_escape(r.ledger, 100)} (paid = already in the ledger).")
    head.append("")
    earners = sum(1 for t in r.agents.values() if t.amount)
    head.append(f"**Total: {fmt(r.total)} tokens** to {earners} agent{'s' if earners != 1 else ''}.")
    excluded = sum(1 for c in r.commits if c.excluded)
    unmatched = sum(r.unmatched.values())
    facts = [f for f in (f"{excluded} excluded" if excluded else "",
                         f"{unmatched} by unmatched authors" if unmatched else "") if f]
    if facts:
        head[-1] += " " + ", ".join(facts).capitalize() + "."
    for note in r.notes:
        head.append(f"> {md_escape(note, 300)}")
    head.append("")

    sections: list[str] = []
    if r.agents:
        rows = ["### Per agent", ""]
        if with_status:
            rows += ["| Agent | Commits | Earns | Paid | Due |", "|---|--:|--:|--:|--:|"]
            rows += [f"| {a} | {t.commits} | {fmt(t.amount)} | {fmt(t.paid)} | {fmt(t.due)} |"
                     for a, t in r.agents.items()]
        else:
            rows += ["| Agent | Commits | Earns |", "|---|--:|--:|"]
            rows += [f"| {a} | {t.commits} | {fmt(t.amount)} |" for a, t in r.agents.items()]
        sections.append("\n".join(rows) + "\n")
    rows = ["### Contract budget", "", "| Contract | Multiplier | Budget | Paid before | This PR | Left |",
            "|---|--:|--:|--:|--:|--:|"]
    rows += [f"| {md_escape(c.name, 60)} | x{c.multiplier} | {fmt(c.budget)} | {fmt(c.paid_before)} | "
             f"{fmt(c.this_pr)} | {fmt(c.left)} |" for c in r.contracts]
    sections.append("\n".join(rows) + "\n")
    if r.unmatched:
        rows = ["### Unmatched authors", "",
                f"Their commits earn nothing{' (this config rejects them in hooks)' if r.unknown_author == 'error' else ''}. "
                f"To pay one, {md_escape(HINT, 200)}.", ""]
        items = sorted(r.unmatched.items())
        for email, cnt in items[:MAX_UNMATCHED_SHOWN]:
            rows.append(f"- {md_escape(email, MAX_NAME)} ({cnt} commit{'s' if cnt != 1 else ''})")
        if len(items) > MAX_UNMATCHED_SHOWN:
            rows.append(f"- \u2026 and {len(items) - MAX_UNMATCHED_SHOWN} more")
        sections.append("\n".join(rows) + "\n")
    rc = r.rules
    if rc["changed"]:
        rows = ["### Rule changes in this PR", "",
                "This pull request edits the reward rules. They are **not** applied to this report "
                "(rules always come from the base branch); they take effect for later work once merged. "
                "Review them like code.", ""]
        for ch in rc["changes"][:60]:
            rows.append(f"- {md_escape(ch, 300)}")
        if len(rc["changes"]) > 60:
            rows.append(f"- \u2026 and {len(rc['changes']) - 60} more")
        if rc["head_error"]:
            rows.append(f"- the head config is invalid: {md_escape(rc['head_error'], 300)}")
        rows += ["", "<details><summary>Config diff</summary>", "", _fence(rc["diff"]), ""]
        if rc["diff_truncated"]:
            rows.append(f"(diff truncated to {MAX_DIFF} characters)")
            rows.append("")
        rows.append("</details>")
        sections.append("\n".join(rows) + "\n")

    header = ["| Commit | Subject | Author | Agent | Tokens | Why |" + (" Status |" if with_status else ""),
              "|---|---|---|---|--:|---|" + ("---|" if with_status else "")]
    fixed = "\n".join(head) + "\n" + "\n".join(sections)
    collapse = n > COLLAPSE_OVER
    open_ = ["### Commits", ""]
    if collapse:
        open_ += [f"<details><summary>{n} commits</summary>", ""]
    close = ["", "</details>"] if collapse else []
    room = limit - len(fixed.encode()) - len("\n".join(open_ + header + close).encode()) - 400
    body: list[str] = []
    used = 0
    for c in r.commits:
        row = _commit_row(c, with_status)
        size = len(row.encode()) + 1
        if used + size > room:
            break
        body.append(row)
        used += size
    shown = len(body)
    table = open_ + (header + body if r.commits else ["No commits in this range."]) + close
    if shown < n:
        table += ["", f"Showing {shown} of {n} commits (comment size limit); run "
                      f"`tx report --format json` or see the job artifact for all of them."]
    text = "\n".join(head) + "\n" + "\n".join(table) + "\n\n" + "\n".join(sections)
    return text.rstrip("\n") + "\n"


def md_code_safe(text: str) -> str:
    """Text for inside a single-backtick code span: no backticks, pipes or control characters."""
    text = _BAD.sub("\ufffd", clean_text(text, limit=200))
    return text.replace("`", "'").replace("|", "/") or "?"


# --- text ------------------------------------------------------------------------------
def _plain(text: str, limit: int) -> str:
    text = clean_text(text, limit=100_000)
    if not text.isprintable():  # every _BAD character is unprintable: printable text has none (fast path)
        text = _BAD.sub("\ufffd", text)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def render_text(r: Report) -> str:
    out = [f"token-exchange report {r.merge_base[:10]}..{r.head[:10]} (base {r.base[:10]}), project {_plain(r.project, 80)}",
           f"rules: {_plain(r.config_source, 200)}" + (f"; ledger: {r.ledger}" if r.ledger else ""),
           f"total: {fmt(r.total)} tokens", ""]
    for a, t in r.agents.items():
        extra = f"  paid {fmt(t.paid)}  due {fmt(t.due)}" if r.ledger else ""
        out.append(f"  {a:<16} {t.commits:>6} commits  {fmt(t.amount):>12}{extra}")
    for c in r.contracts:
        out.append(f"contract {_plain(c.name, 60)} x{c.multiplier}: budget {fmt(c.budget)}, paid before "
                   f"{fmt(c.paid_before)}, this PR {fmt(c.this_pr)}, left {fmt(c.left)}")
    out.append("")
    m = _Memo()
    middles: dict[tuple[Units, str], str] = {}  # " amount who " columns, shared by many commits
    seconds: dict[tuple[str, int], str] = {}  # the second line: email and reason
    for c in r.commits:
        solo = (c.amount, c.agents[0] if c.agents else "")
        mid = middles.get(solo) if len(c.agents) <= 1 else None
        if mid is None:
            who = ",".join(c.agents) or "unmatched"
            mid = f" {m.fmt(c.amount):>10} {who:<12} "
            if len(c.agents) <= 1:
                middles[solo] = mid
        key = (c.email, id(c.reward))  # rewards live as long as the report: ids stay unique
        second = seconds.get(key)
        if second is None:
            why = m.plain(m.reason(c.reward), 200) if c.reward else "author is not an agent"
            second = seconds[key] = f"{'':>11}{m.plain(c.email, 80)}: {why}"
        out.append(f"{c.sha[:10]}{mid}{_plain(c.subject, 60)}{f' [{c.status}]' if c.status else ''}")
        out.append(second)
    if r.unmatched:
        out.append("")
        out.append("unmatched authors (" + HINT + "):")
        out += [f"  {_plain(e, 80)} ({n})" for e, n in sorted(r.unmatched.items())[:MAX_UNMATCHED_SHOWN]]
    if r.rules["changed"]:
        out.append("")
        out.append("rule changes in this PR (not applied):")
        out += [f"  - {_plain(ch, 300)}" for ch in r.rules["changes"]]
        if r.rules["head_error"]:
            out.append(f"  - head config invalid: {_plain(r.rules['head_error'], 300)}")
    for note in r.notes:
        out.append(f"note: {note}")
    return "\n".join(out) + "\n"
