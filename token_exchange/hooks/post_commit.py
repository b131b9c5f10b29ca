"""post-commit: pay the commit at HEAD once per change.

The commit's own ids come from ``services.changes`` (trailer, else patch id, else SHA).  What makes a
rewrite pay nothing new is knowing which commits it replaces (its *origins*), whose ids are looked up
too:

- an amend: HEAD before the commit (recorded by commit-msg) has the same parents as the new commit;
  without commit-msg (``--no-verify``), the reflog's ``commit (amend)`` entry says so, and where there
  is no reflog either, post-rewrite links the two afterwards;
- a commit the rebase machinery writes (no commit-msg ran): the commits being picked or squashed,
  from ``rebase-merge/done`` or ``rebase-apply/original-commit``.  A commit a user makes at an
  ``edit`` stop or an ``exec`` line went through commit-msg: it is new work unless it amends;
- ``merge --squash``: the squashed commits (``SQUASH_MSG``, recorded by commit-msg);
- a concluded cherry-pick (``CHERRY_PICK_HEAD``) or a ``-x`` line ``(cherry picked from commit X)``;
- ``reset --soft`` then commit: the commits between the new parent and ``ORIG_HEAD`` whose changes
  the new commit still contains.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from token_exchange import git
from token_exchange.hooks import PREFIX, HookError, say, warn
from token_exchange.hooks.context import Repo, locate, open_exchange, pending_config, project, take_pending

# Compiled (and cached by ``re``) only when a commit has origins or a ``-x`` line: most have neither.
CHERRY_PICKED = r"(?m)^\(cherry picked from commit ([0-9a-f]{40,64})\)$"
SHA = r"[0-9a-f]{40,64}"
SQUASH_CMDS = ("squash", "s", "fixup", "f")
PICK_CMDS = ("pick", "p", "reword", "r", "edit", "e", "squash", "s", "fixup", "f")
MAX_UNWOUND = 50


def run(args: list[str]) -> None:
    from token_exchange.errors import UserError
    from token_exchange.services.changes import copied_from_history, facts_for, ids_of
    from token_exchange.services.exchange import IndexView

    repo = locate()
    if not repo.head:
        raise HookError("no commit at HEAD")
    pending = take_pending(repo)
    ex = open_exchange(repo)
    try:
        head = git.commits("HEAD", no_walk=True)[0]
        found = origins(repo, head, pending)
        proj = project(repo, ex.cfg, pending_config(pending, head))
        view = IndexView(ex.ledger.fresh(), provisional=ex.cfg.on_merge)
        facts = facts_for([head], proj, copied=copied_from_history(view, None),
                          origins={head.sha: ids_of(found)})[0]
        try:
            result = ex.pay_commit(facts)
        except UserError as e:
            if "locked" not in str(e):
                raise
            from token_exchange.services.catchup import queue_unpaid

            queue_unpaid(repo.common_dir, head.sha)
            warn(f"{PREFIX}: the ledger is busy; {head.sha[:12]} is queued and paid by the next commit "
                 "or `tx catch-up`")
            return
        say(result.describe())
        catch_up_queue(repo, ex, proj)
    finally:
        ex.close()


def catch_up_queue(repo: Repo, ex: Any, proj: str) -> None:
    """Pay what earlier hooks queued (still reachable from HEAD), once."""
    from token_exchange.services.catchup import clear_unpaid, pay_commits, unpaid

    queued = [s for s in unpaid(repo.common_dir) if s != repo.head]
    if not queued:
        return

    live = git.reachable(queued, "HEAD")
    results = pay_commits(ex, [c for c in git.commits(*live, no_walk=True)] if live else [], proj, None)
    for r in results:
        if r.plan.status == "pay":
            say(f"{r.describe()} (caught up {r.plan.facts.sha[:12]})")
    clear_unpaid(repo.common_dir, set(queued))


def origins(repo: Repo, head: git.Commit, pending: dict[str, Any] | None) -> list[str]:
    """The commits HEAD replaces (see the module docstring), newest first, never HEAD itself."""
    found: list[str] = []
    before = str(pending.get("head", "")) if pending else ""
    if pending is not None:
        if before and before != head.sha and tuple(pending.get("head_parents", ())) == head.parents:
            found.append(before)  # an amend
        found += [s for s in pending.get("squash", ()) if isinstance(s, str)]
        pick = pending.get("cherry_pick")
        if isinstance(pick, str):
            found.append(pick)
        if not found and before and head.parents[:1] == (before,):
            found += reset_origins(repo, head, before)
    else:
        found += rebase_origins(repo.git_dir)
        if not found:
            found += reflog_amend(head)
    if "(cherry picked from commit " in head.message:
        found += re.findall(CHERRY_PICKED, head.message)
    return [s for s in dict.fromkeys(found) if s != head.sha and re.fullmatch(SHA, s)]


def reflog_amend(head: git.Commit) -> list[str]:
    """The commit an amend replaced, from HEAD's reflog (when commit-msg did not run)."""
    out = git.out("log", "-g", "-2", "--format=%H%x00%gs", "HEAD", check=False)
    rows = [line.split("\0", 1) for line in out.splitlines() if "\0" in line]
    if len(rows) == 2 and rows[0][0] == head.sha and rows[0][1].startswith("commit (amend)"):
        return [rows[1][0]]
    return []


def rebase_origins(gdir: Path) -> list[str]:
    """The original commits behind the commit a rebase just wrote (a squash chain: all of them)."""
    shas: list[str] = []
    done = gdir / "rebase-merge" / "done"
    if done.is_file():
        lines = [ln.split() for ln in done.read_text("utf-8", "replace").splitlines()
                 if ln.strip() and not ln.startswith("#")]
        for cmd in reversed(lines):
            if len(cmd) < 2 or cmd[0] not in PICK_CMDS:
                if shas:
                    break
                continue
            sha = cmd[1] if not cmd[1].startswith("-") else (cmd[2] if len(cmd) > 2 else "")
            if sha:
                shas.append(sha)
            if cmd[0] not in SQUASH_CMDS:
                break
    original = gdir / "rebase-apply" / "original-commit"
    if original.is_file():
        shas.append(original.read_text("utf-8", "replace").strip())
    short = [s for s in shas if re.fullmatch(r"[0-9a-f]{4,64}", s)]
    if not short:
        return []
    full = git.out("rev-parse", *(f"{s}^{{commit}}" for s in short), check=False).split()
    return [s for s in full if re.fullmatch(SHA, s)]


def reset_origins(repo: Repo, head: git.Commit, before: str) -> list[str]:
    """After ``reset --soft``: the commits between HEAD's parent and ``ORIG_HEAD`` whose changes HEAD keeps."""
    try:
        orig = (repo.git_dir / "ORIG_HEAD").read_text("ascii", "replace").strip()
    except OSError:
        return []
    if not re.fullmatch(SHA, orig) or orig == before or not git.is_ancestor(before, orig):
        return []
    unwound = git.out("rev-list", f"-n{MAX_UNWOUND}", f"{before}..{orig}", check=False).split()
    if not unwound:
        return []
    paths = git.out("diff", "--name-only", "-z", before, orig, check=False).split("\0")
    paths = [p for p in paths if p]
    if paths and not git.ok("diff", "--quiet", orig, head.sha, "--", *paths):
        return []  # HEAD does not keep what the unwound commits changed: new work (reset --hard, then commit)
    return unwound
