"""``tx settle``: pay what landed on the default branch, once, under the default branch's rules.

(Long mostly because this docstring states the settlement contract in full.)

In on-merge mode (``[settlement] mode = "on-merge"``) the hooks only record *provisional* awards
(visible at once, counted apart).  Settlement is what pays, the way TigerBeetle's two-phase transfers
work (pending -> post | void):

* **What landed.**  The default branch's first-parent history from where the last settlement stopped
  (a ``marker`` record holding the tip it settled) to the tip.  A first-parent commit is one landed
  change (a direct commit, a squash merge, each commit of a rebase merge); a merge commit ``M`` lands
  the commits of ``M^1..M`` it brings in, then itself.  Without a marker the walk starts where the
  tracked config switched ``mode`` to ``on-merge`` (``git log --first-parent -- CONFIG``).
* **Under which rules.**  The rules (and ``.mailmap``) of the default branch where the last settlement
  stopped: for one push, the parent on the default branch of everything it brought.  A branch's own
  config edits never price it, not even through an earlier commit of a rebase merge.  (Settling
  several pushes in one run prices them all with the older rules: a config change takes effect from
  the next run, never earlier.)
* **Once per change.**  Each landed commit is priced by the engine (``plan_commit``) against the
  settled ledger: a change already settled (under any of its ids, squashed trailers included) pays
  nothing new.  Settled awards are ``earn`` records with the hooks' ids (``commit:<reward id>:<agent>``)
  and ``ts`` = the landing time (the first-parent commit's committer date, never later than now), so the
  same history settles to the same records in every clone: two clones that settle and sync hold each
  record once, however often each ran.
* **Provisional awards.**  Every provisional award of a landed change (found under its ids, its
  squashed trailers and the links the hooks recorded) is voided in full (``void``) and the difference
  to the settled award is reported: overpaid, underpaid, or never provisionally paid (a commit made
  without the hooks).  One whose commit has not landed ``provisional_ttl`` seconds after it was made
  expires (the same ``void`` record, at its expiry time).
* **Clawback.**  A landed revert (``This reverts commit X``, git's own message) reverses X's settled
  award exactly, once (``clawback``; X a merge: every commit it brought in).  The contract budget and
  the caps are not given back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from token_exchange import clock, git
from token_exchange.amounts import Units, fmt
from token_exchange.errors import UserError, clean_text
from token_exchange.ledger.protocols import Index
from token_exchange.ledger.timestamps import ts_micros, ts_text
from token_exchange.ledger.txn import REWARDS, Txn, make_txn
from token_exchange.rules import config as config_mod
from token_exchange.rules.config import BRANCH_RE, Config
from token_exchange.rules.engine import (
    COMMIT_REF,
    CommitFacts,
    CommitPlan,
    Payment,
    plan_commit,
)
from token_exchange.rules.reward_ids import trailer_ids
from token_exchange.services.changes import copied_from_history, facts_for, ids_of
from token_exchange.services.exchange import Exchange, IndexView, commit_txns
from token_exchange.services.revision import config_texts_at, rules_at

DEFAULT_CONFIG_PATH = ".exchange/config.toml"
SETTLED_ACCOUNT = "world:settlement"
MARKER_REF = "settlement:"
DEFAULT_MAX = 10_000
REVERTS = re.compile(r"^This reverts commit ([0-9a-f]{7,64})\b", re.MULTILINE)
# `git merge --squash` writes the squashed commits (indented messages, their trailers with them)
SQUASHED_HEADER = "Squashed commit of the following:"
SQUASHED_SHA = re.compile(r"^commit ([0-9a-f]{40,64})$", re.MULTILINE)
INDENTED_TRAILER = re.compile(r"^[ \t]+Reward-Id:[ \t]*(R[0-9a-f]{16,64})[ \t]*$", re.MULTILINE | re.IGNORECASE)


class Line(NamedTuple):
    """One landed commit: what the rules pay, what the provisional awards said, what changed."""

    sha: str
    landed: str  # the first-parent commit that landed it (itself, or the merge)
    subject: str
    author: str
    reward_id: str
    agents: tuple[str, ...]
    status: str  # pay, paid (already settled), excluded, unmatched
    settled: dict[str, Units]  # newly settled, per agent
    provisional: dict[str, Units]  # provisional awards voided now, per agent
    reason: str
    outside: bool = False  # already paid, by an award settlement did not write (hooks in immediate mode)

    @property
    def settled_total(self) -> Units:
        return sum(self.settled.values())

    @property
    def provisional_total(self) -> Units:
        return sum(self.provisional.values())

    @property
    def difference(self) -> Units:
        """What settlement changed for the agents: settled minus what they already had provisionally."""
        return self.settled_total - self.provisional_total

    @property
    def flag(self) -> str:
        if self.status == "paid":
            return "paid outside settlement" if self.outside else "already settled"
        if not self.provisional:
            return "never provisionally paid" if self.settled_total else "earns nothing"
        if self.difference > 0:
            return "underpaid"
        return "overpaid" if self.difference < 0 else "settled"


class Clawback(NamedTuple):
    revert: str  # the landed revert commit
    reverted: str  # the commit it reverts
    ref: str
    agent: str
    amount: Units


class Expired(NamedTuple):
    id: str
    ref: str
    agent: str
    amount: Units
    since: str


class Result(NamedTuple):
    branch: str
    tip: str
    base: str  # where the walk started (the last settled tip, or where on-merge began); "" = nothing to do
    rules: str  # where the rules came from
    mode: str
    lines: list[Line]
    clawbacks: list[Clawback]
    expired: list[Expired]
    marker: str
    written: int
    notes: list[str]

    def to_json(self) -> dict[str, Any]:
        from token_exchange.amounts import to_decimal

        def amounts(d: dict[str, Units]) -> dict[str, Any]:
            return {k: to_decimal(v) for k, v in d.items()}

        return {
            "branch": self.branch, "tip": self.tip, "base": self.base or None, "rules": self.rules,
            "mode": self.mode, "marker": self.marker or None, "written": self.written, "notes": self.notes,
            "commits": [{"sha": ln.sha, "landed": ln.landed, "subject": ln.subject, "author": ln.author,
                         "reward_id": ln.reward_id, "agents": list(ln.agents), "status": ln.status,
                         "flag": ln.flag, "settled": to_decimal(ln.settled_total),
                         "provisional": to_decimal(ln.provisional_total), "difference": to_decimal(ln.difference),
                         "settled_shares": amounts(ln.settled), "provisional_shares": amounts(ln.provisional),
                         "reason": ln.reason} for ln in self.lines],
            "clawbacks": [{"revert": c.revert, "reverted": c.reverted, "ref": c.ref, "agent": c.agent,
                           "amount": to_decimal(c.amount)} for c in self.clawbacks],
            "expired": [{"id": e.id, "ref": e.ref, "agent": e.agent, "amount": to_decimal(e.amount),
                         "since": e.since} for e in self.expired],
            "totals": {"settled": to_decimal(sum(ln.settled_total for ln in self.lines)),
                       "provisional_released": to_decimal(sum(ln.provisional_total for ln in self.lines)),
                       "clawed_back": to_decimal(sum(c.amount for c in self.clawbacks)),
                       "expired": to_decimal(sum(e.amount for e in self.expired))},
        }


# --- git -------------------------------------------------------------------------------------------
def resolve_tip(repo: Path, branch: str, rev: str | None) -> str:
    """The commit to settle up to: ``rev``, else the local branch, else ``origin/<branch>``."""
    if rev:
        return git.resolve(rev, repo, "--rev")
    for name in (f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"):
        proc = git.run("rev-parse", "--verify", "-q", f"{name}^{{commit}}", repo=repo, check=False)
        if proc.returncode == 0:
            return git.decode(proc.stdout).strip()
    raise UserError(f"no branch {branch!r} here (nor origin/{branch}); pass --rev or fetch it")


def on_merge_start(repo: Path, tip: str, path: str) -> str:
    """Where on-merge began, without a marker: the oldest commit of the newest run of first-parent config
    changes that all say ``mode = "on-merge"`` (what landed after it landed under on-merge, including a
    later change that switched it off: that one landed under the rules before it); "" when no tracked
    config ever said on-merge."""
    changed = git.out("log", "--first-parent", "--format=%H", tip, "--", path, repo=repo, check=False).split()
    if not changed:
        return ""
    start = ""
    for sha, text in zip(changed, config_texts_at(repo, changed, path), strict=True):  # newest first
        try:
            mode = config_mod.parse(text, None).settlement.mode if text is not None else "immediate"
        except UserError:
            mode = "immediate"
        if mode == "on-merge":
            start = sha
        elif start:
            break
    return start


# --- settling ----------------------------------------------------------------------------------------
def settle(ex: Exchange, repo: Path, *, branch: str | None = None, rev: str | None = None,
           config_path: str = DEFAULT_CONFIG_PATH, max_commits: int = DEFAULT_MAX) -> Result:
    """Settle ``branch`` up to ``rev`` (default: the branch's tip); see the module docstring."""
    branch = branch or ex.cfg.settlement.branch
    if not BRANCH_RE.fullmatch(branch) or ".." in branch:
        raise UserError(f"invalid branch name {branch[:60]!r}")
    if any(c in config_path for c in "\0\n\r"):
        raise UserError(f"invalid config path {config_path[:60]!r}")
    repo = Path(repo)
    tip = resolve_tip(repo, branch, rev)
    now_s = clock.micros(ex.clock()) // 1_000_000
    with ex.ledger.locked() as idx:
        settled_tips = {str(t.source.get("tip", "")) for t in idx.by_ref(MARKER_REF + branch) if t.kind == "marker"}
        base, walked = _walk(repo, tip, settled_tips, config_path, max_commits)
        if not base:
            cfg, where = rules_at(repo, tip, config_path)
            return Result(branch, tip, "", where, cfg.settlement.mode, [], [], [], "", 0,
                          [_nothing(cfg, bool(settled_tips))])
        cfg, where = rules_at(repo, base, config_path)
        if not cfg.on_merge:
            return Result(branch, tip, base, where, cfg.settlement.mode, [], [], [], "", 0,
                          [f"the rules at {base[:12]} settle nothing (mode = {cfg.settlement.mode!r})"])
        run = _Run(ex, idx, repo, cfg, branch, base, now_s)
        landed = git.commits(f"{base}..{tip}", repo=repo, first_parent=True, reverse=True,
                             mailmap_rev=base) if walked else []
        for first in landed:
            run.land(first)
        run.expire(int(ex.clock().timestamp() * 1_000_000))
        marker = run.mark(tip)
        return Result(branch, tip, base, where, cfg.settlement.mode, run.lines, run.clawbacks, run.expired, marker,
                      run.written, run.notes)


def _nothing(cfg: Config, had_marker: bool) -> str:
    if had_marker:
        return "nothing new landed since the last settlement"
    if not cfg.on_merge:
        return f"mode is {cfg.settlement.mode!r}: the hooks pay at commit time, nothing to settle"
    return "no settlement point found (is the config tracked in git?)"


def _walk(repo: Path, tip: str, settled_tips: set[str], config_path: str, max_commits: int) -> tuple[str, bool]:
    """(base, anything to walk): the newest settled tip on ``tip``'s first-parent history, else where
    on-merge began."""
    proc = git.run("rev-list", "--first-parent", f"-n{max_commits + 1}", tip, repo=repo)
    chain = git.decode(proc.stdout).split()
    for n, sha in enumerate(chain):
        if sha in settled_tips:
            return sha, n > 0
    start = on_merge_start(repo, tip, config_path)
    if not start:
        return "", False
    if start not in chain:
        raise UserError(f"more than {max_commits} commits to settle since {start[:12]}; raise --max-commits")
    return start, start != tip


class _Run:
    """One settlement run under the ledger lock: every write is appended at once, so a later commit of
    the run sees what the earlier ones settled (budgets, caps, already-paid)."""

    def __init__(self, ex: Exchange, idx: Index, repo: Path, cfg: Config, branch: str, base: str, now_s: int) -> None:
        self.ex, self.idx, self.repo, self.cfg, self.branch, self.base = ex, idx, repo, cfg, branch, base
        self.now_s = now_s
        self.view = IndexView(idx)
        self.project = git.project_name(repo, cfg.project)
        self.lines: list[Line] = []
        self.clawbacks: list[Clawback] = []
        self.expired: list[Expired] = []
        self.notes: list[str] = []
        self.written = 0

    def _append(self, txns: list[Txn]) -> None:
        """Settlement's records carry their own dates (the landing time, an expiry): deterministic, so
        every clone writes the same record; never after now (the ledger checks), older than the ledger's
        last transaction allowed as for a verified import."""
        if txns:
            self.written += sum(1 for a in self.ex.ledger.append_many(txns, keep_dates=True) if a.created)

    def land(self, first: git.Commit) -> None:
        """Settle one first-parent commit (for a merge: what it brings in, then itself)."""
        when = min(first.time, self.now_s) if first.time > 0 else self.now_s
        ts = ts_text(datetime.fromtimestamp(when, UTC))
        commits = [first]
        if len(first.parents) > 1:
            commits = git.commits(f"{first.parents[0]}..{first.sha}", repo=self.repo, topo=True, reverse=True,
                                  mailmap_rev=self.base)
        for c in commits:
            facts = facts_for([c], self.project, self.repo, copied=copied_from_history(self.view, self.repo))[0]
            facts = facts._replace(time_us=when * 1_000_000, origins=squashed_ids(c.message, self.repo))
            self._settle_one(c, first.sha, facts, ts)
            for reverted in REVERTS.findall(c.message):
                self._claw_back(c, reverted, ts)

    def _settle_one(self, c: git.Commit, landed: str, facts: CommitFacts, ts: str) -> None:
        plan = plan_commit(self.cfg, facts, self.view)
        txns: list[Txn] = []
        settled: dict[str, Units] = {}
        if plan.reward is not None and not plan.already:
            for share in plan.shares:
                self.ex.ensure_open(self.idx, share.agent)
            txns += commit_txns(plan, self.idx, settled={"settled": landed[:64], "branch": self.branch}, ts=ts)
            settled = {s.agent: s.amount for s in plan.shares}
        target = plan.already[0].ref if plan.already else plan.ref
        provisional: dict[str, Units] = {}
        for p in self.view.provisional([*plan.ids, *facts.origins]):
            if self.idx.get(void_id(p.id)) is None:
                txns.append(void_txn(p, ts))
                provisional[p.agent] = provisional.get(p.agent, 0) + p.amount
        if plan.agents:
            txns += self._links(plan, facts, target)
        self._append(txns)
        reason, outside = _reason(plan), False
        if plan.already and not any("settled" in t.source for t in self.idx.by_ref(target) if t.kind == "earn"):
            # paid by something other than settlement (a hook that ignored on-merge): say what the rules pay
            rules = plan_commit(self.cfg, facts, _Unpaid(self.view))
            reason, outside = f"{reason}, not by settlement (the rules pay {fmt(rules.amount)})", True
        self.lines.append(Line(c.sha, landed, facts.message.split("\n", 1)[0][:200], c.email, facts.reward_id,
                               plan.agents, plan.status, settled, provisional, reason, outside))

    def _links(self, plan: CommitPlan, facts: CommitFacts, target: str) -> list[Txn]:
        """Link the change's other trailer ids (squashed trailers, the provisional awards' ids) to its
        settled award, so a later landing of any of them finds it (the hooks' link records, same ids)."""
        out = []
        for i in dict.fromkeys([*plan.ids[1:], *facts.origins]):
            ref = COMMIT_REF + i
            if ref == target or i.startswith("sha-") or self.idx.get(f"link:{i[:190]}") is not None:
                continue
            if any(t.kind in ("earn", "link") for t in self.idx.by_ref(ref)):
                continue
            out.append(make_txn(f"link:{i[:190]}", "link", REWARDS, "world:links", 0, ref=ref,
                                description="an id of a settled change", project=facts.project,
                                source={"type": "link", "of": target[:200], "sha": facts.sha[:64]}))
        return out

    def _claw_back(self, revert: git.Commit, short: str, ts: str) -> None:
        proc = git.run("rev-parse", "--verify", "-q", f"{short}^{{commit}}", repo=self.repo, check=False)
        reverted = git.decode(proc.stdout).strip()
        if proc.returncode != 0 or not reverted:
            self.notes.append(f"{revert.sha[:12]} reverts {short[:12]}, which is not in this repository")
            return
        targets = [reverted]
        parents = git.out("rev-list", "--parents", "-n1", reverted, repo=self.repo).split()[1:]
        if len(parents) > 1:  # a merge: what it brought in
            targets = git.out("rev-list", f"{parents[0]}..{reverted}", repo=self.repo).split()
        txns: list[Txn] = []
        for t in targets:
            for p in self.view.payments(ids_of([t], self.repo)):
                cid = f"clawback:{p.ref[len(COMMIT_REF):]}:{p.agent}"[:200]
                if self.idx.get(cid) is not None or any(x.id == cid for x in txns):
                    continue
                txns.append(make_txn(cid, "clawback", p.agent, REWARDS, p.amount, agent=p.agent, ref=p.ref,
                                     project=self.project, description=clean_text(
                                         f"reverted by {revert.sha[:12]}: {revert.message.splitlines()[0]}"[:300]),
                                     source={"type": "clawback", "revert": revert.sha[:64], "reverted": t[:64]},
                                     ts=ts))
                self.clawbacks.append(Clawback(revert.sha, t, p.ref, p.agent, p.amount))
        self._append(txns)

    def expire(self, now_us: int) -> None:
        """Void every provisional award older than ``provisional_ttl`` whose change has not settled."""
        ttl_us = self.cfg.settlement.provisional_ttl * 1_000_000
        txns = []
        for p in self.idx.iter_txns(["provisional"]):
            start = ts_micros(p.ts)
            if start + ttl_us > now_us or self.idx.get(void_id(p.id)) is not None:
                continue
            when = datetime.fromtimestamp((start + ttl_us) / 1_000_000, UTC)
            txns.append(void_txn(p, ts_text(when)))
            self.expired.append(Expired(p.id, p.ref, p.agent, p.amount, p.ts))
        self._append(txns)

    def mark(self, tip: str) -> str:
        """Record how far the branch is settled (deterministic: the same tip gives the same record)."""
        mid = f"{MARKER_REF}{self.branch}:{tip}"[:200]
        if self.idx.get(mid) is not None:
            return mid
        found = git.commits(tip, repo=self.repo, no_walk=True)
        when = min(found[0].time, self.now_s) if found and found[0].time > 0 else self.now_s
        self._append([make_txn(mid, "marker", REWARDS, SETTLED_ACCOUNT, 0, ref=MARKER_REF + self.branch,
                               description=f"{self.branch} settled up to {tip[:12]}",
                               source={"type": "settlement", "branch": self.branch, "tip": tip[:64]},
                               ts=ts_text(datetime.fromtimestamp(when, UTC)))])
        return mid


class _Unpaid:
    """A view that knows no payment (what would the rules pay for a change already paid?)."""

    def __init__(self, base: IndexView) -> None:
        self.base = base

    def payments(self, ids: Sequence[str]) -> list[Payment]:
        return []

    def contract_paid(self, contract: str) -> Units:
        return self.base.contract_paid(contract)

    def earned(self, agent: str, source: str, since_us: int) -> Units:
        return self.base.earned(agent, source, since_us)


def void_id(provisional_id: str) -> str:
    return f"{provisional_id}:void"[:200]


def void_txn(p: Txn, ts: str) -> Txn:
    """Take a provisional award back in full.  The content depends on the award only (not on why or
    when), so a clone that saw it settle and one that saw it expire write the same record."""
    return make_txn(void_id(p.id), "void", p.agent, REWARDS, p.amount, agent=p.agent, project=p.project,
                    description="provisional award closed", source={"type": "provisional", "of": p.id},
                    ref=p.ref, ts=ts)


def squashed_ids(message: str, repo: Path) -> tuple[str, ...]:
    """Ids of the commits a squash commit carries: indented ``Reward-Id:`` lines and the ``commit <sha>``
    lines of ``git merge --squash`` (a GitHub squash keeps the trailers unindented: they are the commit's
    own ids already)."""
    ids = [t for t in INDENTED_TRAILER.findall(message) if t not in trailer_ids(message)]
    if SQUASHED_HEADER in message:
        shas = SQUASHED_SHA.findall(message)[:1000]
        known = [s for s in shas if git.ok("cat-file", "-e", f"{s}^{{commit}}", repo=repo)]
        ids += ids_of(known, repo) if known else []
    return tuple(dict.fromkeys("R" + i[1:].lower() if i[:1] in "Rr" else i for i in ids))


def _reason(plan: CommitPlan) -> str:
    if plan.status == "unmatched":
        return f"{plan.facts.author or 'the author'} is not an agent"
    if plan.already:
        return "already settled: " + ", ".join(f"{p.agent} {fmt(p.amount)}" for p in plan.already)
    assert plan.reward is not None
    return plan.reward.reason + plan.cuts



def earning_status(ex: Exchange, agent: str) -> dict[str, Any]:
    """For ``tx limits``: the unsettled provisional tokens the limits hold back, and each earning cap with
    what its window holds now."""
    from token_exchange.amounts import to_decimal
    from token_exchange.rules.engine import window_start
    from token_exchange.rules.limits import micros, open_provisional

    a = ex.cfg.agent(agent)
    idx = ex.ledger.fresh()
    now_us = micros(ex.clock())
    view = IndexView(idx, provisional=ex.cfg.on_merge)
    held = 0 if a.limits.spend_provisional else open_provisional(idx.kind_totals(agent))
    caps = []
    for c in a.caps:
        used = view.earned(agent, c.source, window_start(c, now_us))
        caps.append({"source": c.source, "window": c.window, "limit": to_decimal(c.amount),
                     "earned": to_decimal(used), "remaining": to_decimal(max(0, c.amount - used))})
    return {"provisional_held_back": to_decimal(held), "caps": caps}
