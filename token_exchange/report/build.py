"""The per-pull-request earnings report: what the base's rules pay for a range, and what was paid.

CI is the authority (client hooks can be skipped or gamed), so the headline is recomputed from
history with the engine (``rules.engine.plan_commit``), exactly as the hooks would have paid the
range commit by commit, oldest first:

* the rules, the ``.mailmap`` and the project come from the **base** revision, never from the
  pull request (its rule changes are listed for reviewers, not applied);
* the ledger (when one exists) gives what was paid **before** the range: the range's own
  payments (for its commits, or for earlier versions of them) are left out of "paid before" and
  shown beside the rules' figure instead, and every difference is flagged (overpaid, underpaid,
  paid outside the rules);
* a change counts once: a reward id copied from a commit in the range's own history, or repeated
  in the range, is priced under the commit's own identity, as the hooks price it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from token_exchange import git
from token_exchange.amounts import Units
from token_exchange.errors import clean_text
from token_exchange.report.range import read_range
from token_exchange.report.rule_diff import rule_changes
from token_exchange.rules.config import Config
from token_exchange.rules.engine import CommitFacts, CommitPlan, LedgerView, NothingPaid, Overlay, Payment, plan_commit
from token_exchange.rules.reward_ids import identity, needs_patch_id, trailer_ids
from token_exchange.rules.rewards import CommitReward, match_contract
from token_exchange.services.revision import config_texts_at, rules_from

MARKER = "<!-- token-exchange-report -->"
DEFAULT_CONFIG_PATH = ".exchange/config.toml"
HINT = "add it to [agents.NAME] emails in .exchange/config.toml"
FLAGS = ("overpaid", "underpaid", "outside the rules")


class CommitLine:
    """One commit of the range: what the base rules pay for it and, with a ledger, what was paid."""

    __slots__ = ("sha", "parents", "email", "name", "subject", "plan", "paid", "status", "flag")

    def __init__(self, commit: git.Commit, plan: CommitPlan) -> None:
        self.sha, self.parents = commit.sha, len(commit.parents)
        self.email, self.name = commit.email, commit.name
        message = plan.facts.message
        self.subject = message.split("\n", 1)[0]
        self.plan = plan
        self.paid: Units = 0  # what the ledger paid for this change within the range
        self.status: str | None = None  # without a ledger None; else "paid" / "unpaid"
        self.flag: str | None = None  # overpaid, underpaid, outside the rules

    @property
    def agents(self) -> list[str]:
        return list(self.plan.agents)

    @property
    def reward(self) -> CommitReward | None:
        return self.plan.reward

    @property
    def amount(self) -> Units:
        """What the base rules pay for this commit in this range (0 when already paid before it)."""
        return self.plan.amount if self.plan.reward is not None else 0

    @property
    def shares(self) -> dict[str, Units]:
        return {s.agent: s.amount for s in self.plan.shares}

    @property
    def reward_id(self) -> str:
        return self.plan.facts.reward_id

    @property
    def excluded(self) -> str | None:
        return self.plan.reward.excluded if self.plan.reward else None

    @property
    def overpaid(self) -> bool:
        return self.flag in ("overpaid", "outside the rules")


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

    @property
    def paid_total(self) -> Units:
        return sum(a.paid for a in self.agents.values())


# --- the ledger as it stood before the range -------------------------------------------------------
class BeforeRange:
    """A ledger view without the range's own payments (those made for its commits or for earlier
    versions of them): what the hooks saw when the range's first commit was made."""

    def __init__(self, ledger: LedgerView, own: dict[str, list[Payment]]) -> None:
        self.ledger = ledger
        self.own_refs = {p.ref for found in own.values() for p in found}
        self.own_by_contract: dict[str, Units] = {}
        # each own share once (several commits of the range can be one change)
        self.own_shares = list({(p.ref, p.agent): p for found in own.values() for p in found}.values())

    def payments(self, ids: Sequence[str]) -> list[Payment]:
        found = self.ledger.payments(ids)
        return [] if any(p.ref in self.own_refs for p in found) else found

    def contract_paid(self, contract: str) -> Units:
        return self.ledger.contract_paid(contract) - self.own_by_contract.get(contract, 0)

    def earned(self, agent: str, source: str, since_us: int) -> Units:
        own = sum(p.amount for p in self.own_shares if p.agent == agent and p.ts_us >= since_us) \
            if source == "commits" else 0
        return max(self.ledger.earned(agent, source, since_us) - own, 0)


def own_payments(ledger: LedgerView, facts: Sequence[CommitFacts], base: str,
                 repo: Path) -> dict[str, list[Payment]]:
    """Range commit SHA -> the ledger's payment of its change, when that payment was made for a commit
    not in the base's history (so: for this commit, or an earlier version of it)."""
    found = {f.sha: ledger.payments([f.reward_id, *f.aliases]) for f in facts}
    shas = [p.sha for ps in found.values() for p in ps if p.sha]
    on_base = git.reachable(shas, base, repo) if shas else set()
    return {sha: ps for sha, ps in found.items() if ps and not any(p.sha in on_base for p in ps)}


def compute_facts(commits: Sequence[git.Commit], project: str, repo: Path, view: Overlay) -> list[CommitFacts]:
    """The facts of each commit as its post-commit hook derived them (``services.changes``): trailers a
    commit only copied from its own history (paid, or planned earlier in the range, for an ancestor)
    are not its identity."""
    messages = [clean_text(c.message, limit=65536) for c in commits]
    trailers = [trailer_ids(m) for m in messages]
    wanted = [c.sha for c, t in zip(commits, trailers, strict=True) if needs_patch_id(t, len(c.parents))]
    pids = git.patch_ids(wanted, repo)
    seen: dict[str, str] = {}  # trailer -> the first range commit that carries it
    facts = []
    project = clean_text(project, limit=200)
    for c, m, t in zip(commits, messages, trailers, strict=True):
        earlier = {x: seen[x] for x in t if x in seen}
        paid = {x: p.sha for x in t if x not in earlier for p in view.payments([x])[:1] if p.sha and p.sha != c.sha}
        candidates = {**paid, **earlier}
        copied = {x for x, s in candidates.items() if s in git.reachable([s], c.sha, repo)} if candidates else set()
        pid = pids.get(c.sha)
        if needs_patch_id(t, len(c.parents), copied) and pid is None:
            pid = git.patch_ids([c.sha], repo).get(c.sha)
        primary, aliases = identity(t, c.sha, pid, copied)
        for x in t:
            seen.setdefault(x, c.sha)
        facts.append(CommitFacts(c.email, m, project, len(c.parents), primary, aliases, (), c.sha, c.time * 1_000_000))
    return facts


# --- the whole report ------------------------------------------------------------------------------
def open_ledger(home: Path | None, cfg: Config, repo: Path) -> tuple[Any, str] | None:
    """An Exchange over ``home`` with the BASE rules, when a ledger actually exists there."""
    if home is None:
        return None
    from token_exchange.ledger.backends import open_journal
    from token_exchange.services.exchange import Exchange

    what = open_journal(cfg.backend, home, cfg).existing()
    if what is None:
        return None
    home.mkdir(parents=True, exist_ok=True)
    return Exchange(home, cfg=cfg), what


def build(repo: Path, base: str, head: str, *, config_path: str = DEFAULT_CONFIG_PATH,
          config_rev: str | None = None, project: str | None = None, home: Path | None = None,
          use_ledger: bool = True) -> Report:
    """Read the range, price it with the base's rules, compare with the ledger, return the report."""
    repo = Path(repo)
    rules_rev = git.resolve(config_rev, repo, "--config-rev") if config_rev else git.resolve(base, repo, "--base")
    rng = read_range(repo, base, head, mailmap_rev=rules_rev)
    rules_text, head_text = config_texts_at(repo, [rules_rev, rng.head], config_path)
    cfg, base_text = rules_from(rules_text, rules_rev, config_path)
    where = "base" if rules_rev == rng.base else "revision"
    source = (f"{where} {rules_rev[:12]}:{config_path}" if base_text is not None
              else f"built-in defaults ({config_path} is not in {where} {rules_rev[:12]})")
    changes = rule_changes(cfg, base_text, head_text, rng.head, config_path)
    proj = project or git.project_name(repo, cfg.project)
    ledger = open_ledger(home, cfg, repo) if use_ledger else None
    try:
        return _price(repo, rng, cfg, proj, source, changes, ledger)
    finally:
        if ledger is not None:
            ledger[0].close()


def _price(repo: Path, rng: Any, cfg: Config, proj: str, source: str, changes: dict[str, Any],
           ledger: tuple[Any, str] | None) -> Report:
    from token_exchange.services.exchange import IndexView

    ledger_view: LedgerView = IndexView(ledger[0].ledger.fresh()) if ledger else NothingPaid()
    contract = match_contract(cfg.contracts, clean_text(proj, limit=200))
    # Facts first against the whole ledger (copied trailers), then the range's own payments apart.
    facts = compute_facts(rng.commits, proj, repo, Overlay(ledger_view))
    own = own_payments(ledger_view, facts, rng.base, repo) if ledger else {}
    before = BeforeRange(ledger_view, own)
    for found in own.values():
        for p in found:
            before.own_by_contract[contract.name] = before.own_by_contract.get(contract.name, 0) + p.amount
    view = Overlay(before)
    use = ContractUse(contract.name, str(contract.multiplier), contract.budget, before.contract_paid(contract.name))
    lines: list[CommitLine] = []
    agents: dict[str, AgentTotal] = {}
    unmatched: dict[str, int] = {}
    counted: set[str] = set()  # refs of own payments already shown (one change, several commits)
    for c, f in zip(rng.commits, facts, strict=True):
        plan = plan_commit(cfg, f, view)
        view.apply(plan)
        line = CommitLine(c, plan)
        if plan.status == "unmatched":
            unmatched[c.email] = unmatched.get(c.email, 0) + 1
        paid_shares: dict[str, Units] = {}
        if ledger is not None:
            for p in own.get(c.sha, []):
                if p.ref not in counted:
                    paid_shares[p.agent] = paid_shares.get(p.agent, 0) + p.amount
            counted.update(p.ref for p in own.get(c.sha, []))
            line.paid = sum(paid_shares.values())
            line.status = "paid" if own.get(c.sha) else "unpaid"
            line.flag = _flag(line.amount, line.paid, bool(own.get(c.sha)))
        use.this_pr += line.amount
        rule_shares = line.shares if plan.reward is not None else {}
        for a in dict.fromkeys([*rule_shares, *paid_shares]):
            tot = agents.setdefault(a, AgentTotal())
            tot.commits += 1
            tot.amount += rule_shares.get(a, 0)
            tot.paid += paid_shares.get(a, 0)
            tot.due += max(rule_shares.get(a, 0) - paid_shares.get(a, 0), 0)
        lines.append(line)
    notes: list[str] = []
    flagged = [ln for ln in lines if ln.flag]
    if flagged:
        kinds = ", ".join(f"{sum(1 for ln in flagged if ln.flag == k)} {k}" for k in FLAGS
                          if any(ln.flag == k for ln in flagged))
        notes.append(f"the ledger differs from the base rules for {len(flagged)} commit"
                     f"{'s' if len(flagged) != 1 else ''} ({kinds}; marked !)")
    return Report(rng.base, rng.head, rng.merge_base, proj, source, ledger[1] if ledger else None, lines,
                  dict(sorted(agents.items())), [use], unmatched, changes, cfg.unknown_author, notes)


def _flag(rules: Units, paid: Units, was_paid: bool) -> str | None:
    if not was_paid or paid == rules:
        return None
    if rules == 0:
        return "outside the rules"
    return "overpaid" if paid > rules else "underpaid"
