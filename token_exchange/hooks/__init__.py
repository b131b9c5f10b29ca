"""Git hook entry points: ``tx-hook commit-msg [--msg-file] PATH`` and ``tx-hook post-commit``.

This runs on every commit, so it stays lean: the standard library plus the
exchange core (config, ledger, rewards), a handful of ``git`` calls, and never
typer, rich, tomlkit or gitpython (``python -X importtime -m token_exchange.hooks``).

commit-msg
    Adds a ``Reward-Id:`` trailer (with ``git interpret-trailers``) unless the
    message already carries one, and prints a one-line preview of what the
    commit will earn.  The author is not final yet: git exports the author it
    will use as ``GIT_AUTHOR_EMAIL`` (``--author`` included); else
    ``git var GIT_AUTHOR_IDENT``.
post-commit
    Reads the real commit at HEAD (author with ``.mailmap`` applied), resolves
    agents and project, and pays it once per reward id (see ``rewardid``).
    Rewrites pay nothing new: every trailer id in the message counts, and so do
    the ids of the commits this one rewrote (an amend chain from the reflog, the
    commits being picked/squashed by a rebase in progress, ``cherry-pick -x``
    origins).

Both hooks never block or break a commit: any problem is one line on stderr and
exit status 0.  Neither touches a tracked file (the ledger lives in the home).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

PREFIX = "token-exchange"
USAGE = "usage: tx-hook commit-msg [--msg-file] PATH | tx-hook post-commit"
CHERRY_PICKED = re.compile(r"^\(cherry picked from commit ([0-9a-f]{40,64})\)$", re.MULTILINE)
SQUASH_CMDS = ("squash", "s", "fixup", "f")
PICK_CMDS = ("pick", "p", "reword", "r", "edit", "e", "squash", "s", "fixup", "f")
AMEND_CHAIN_MAX = 200


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def warn(text: str) -> None:
    sys.stderr.write(" ".join(text.split())[:300] + "\n")


def run_git(*args: str, check: bool = True, input: bytes | None = None) -> str:
    proc = subprocess.run(["git", *args], capture_output=True, input=input)
    return _git_output(args, proc.returncode, proc.stdout, proc.stderr, check)


def _git_output(args: tuple[str, ...], code: int, out: bytes, err: bytes, check: bool) -> str:
    if check and code != 0:
        lines = err.decode("utf-8", "replace").strip().splitlines()
        raise HookError(f"git {args[0]} failed: {lines[-1] if lines else 'exit ' + str(code)}")
    return out.decode("utf-8", "surrogateescape")


_STARTED: dict[tuple[str, ...], subprocess.Popen[bytes]] = {}


def start_git(*args: str) -> None:
    """Start a git command now and collect it later (``run_git`` with the same args): the few git calls a
    hook needs then overlap with each other and with loading the exchange."""
    if args not in _STARTED:
        try:
            _STARTED[args] = subprocess.Popen(["git", *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE)
        except OSError:
            pass  # run_git will try again and report it


def started_git(*args: str, check: bool = True) -> str:
    proc = _STARTED.pop(args, None)
    if proc is None:
        return run_git(*args, check=check)
    out, err = proc.communicate()
    return _git_output(args, proc.returncode, out, err, check)


class HookError(Exception):
    """A problem worth one line (the commit itself is never affected)."""


# --- where we are ---------------------------------------------------------------------
def worktree() -> Path:
    """Git runs hooks at the top of the work tree; fall back to asking git."""
    cwd = Path.cwd()
    if (cwd / ".git").exists() and "GIT_WORK_TREE" not in os.environ:
        return cwd
    top = run_git("rev-parse", "--show-toplevel", check=False).strip()
    return Path(top) if top else cwd


def git_dir(top: Path) -> Path:
    env = os.environ.get("GIT_DIR")
    if env:
        return Path(env) if Path(env).is_absolute() else Path.cwd() / env
    dotgit = top / ".git"
    if dotgit.is_dir():
        return dotgit
    if dotgit.is_file():  # a linked worktree or submodule: "gitdir: PATH"
        text = dotgit.read_text("utf-8", "surrogateescape").strip()
        if text.startswith("gitdir:"):
            path = Path(text[7:].strip())
            return path if path.is_absolute() else top / path
    return Path(run_git("rev-parse", "--absolute-git-dir").strip())


def open_exchange(top: Path):  # type: ignore[no-untyped-def]
    """The exchange for this repo, or HookError (one line) when there is none or it is broken."""
    from token_exchange.services.exchange import Exchange
    from token_exchange.git import HOME_ENV

    env = os.environ.get(HOME_ENV)
    home = Path(env).expanduser().absolute() if env else top / ".exchange"
    if not (home / "config.toml").exists():
        raise HookError(f"no exchange at {home} (run `tx init`); nothing recorded")
    return Exchange(home)


_CONFIG: dict[str, str] | None = None
GIT_CONFIG_ARGS = ("config", "-z", "--get-regexp", r"^(core\.commentchar|mailmap\.(file|blob)|remote\.origin\.url)$")


def git_config(key: str) -> str:
    """The few git settings the hooks read, fetched with one ``git config`` process."""
    global _CONFIG
    if _CONFIG is None:
        out = started_git(*GIT_CONFIG_ARGS, check=False)
        _CONFIG = {}
        for item in out.split("\0"):
            name, _, value = item.partition("\n")
            if name:
                _CONFIG.setdefault(name.lower(), value)
    return _CONFIG.get(key, "")


def project_for(top: Path, configured: str) -> str:
    """Config, else the origin remote's repository name, else the directory (as ``gitutil.project_name``)."""
    if configured:
        return configured
    url = git_config("remote.origin.url").strip()
    name = url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    name = name[:-4] if name.endswith(".git") else name
    return name or top.resolve().name


# --- commit-msg -----------------------------------------------------------------------
def comment_char() -> str:
    value = git_config("core.commentchar").strip()
    return value[:1] if value and value != "auto" else "#"


def author_email() -> str:
    email = os.environ.get("GIT_AUTHOR_EMAIL")
    if email is None:
        ident = run_git("var", "GIT_AUTHOR_IDENT", check=False)
        m = re.search(r"<([^<>]*)>", ident)
        email = m.group(1) if m else ""
    return email


def mailmapped(top: Path, email: str) -> str:
    """Apply .mailmap the way ``%aE`` will (only when a mailmap is configured: saves a process)."""
    if not email or not ((top / ".mailmap").exists() or git_config("mailmap.file") or git_config("mailmap.blob")):
        return email
    out = run_git("check-mailmap", f"<{email}>", check=False).strip()
    m = re.search(r"<([^<>]*)>\s*$", out)
    return m.group(1) if m else email


def trailer_args(path: Path, rid: str) -> tuple[str, ...]:
    from token_exchange.rules.reward_ids import TRAILER_KEY

    return ("interpret-trailers", "--in-place", "--if-exists", "doNothing", "--trailer", f"{TRAILER_KEY}: {rid}",
            str(path))


def commit_msg(args: list[str]) -> int:
    paths = [a for a in args if a != "--msg-file"]
    if not paths:
        warn(f"{PREFIX}: commit-msg: no message file given ({USAGE})")
        return 0
    path = Path(paths[-1])
    start_git(*GIT_CONFIG_ARGS)  # core.commentChar, and the project's origin for the preview
    top = worktree()
    try:
        raw = path.read_bytes().decode("utf-8", "surrogateescape")
    except OSError as e:
        raise HookError(f"cannot read {path}: {e.strerror}") from None

    from token_exchange.rules.reward_ids import trailer_ids
    from token_exchange.rules.rewards import clean_message

    message = clean_message(raw, comment_char())
    if not message:
        return 0  # git aborts an empty message; adding a trailer would make it commit
    ids = trailer_ids(message)
    adding: tuple[str, ...] = ()
    if not ids:
        rid = "R" + os.urandom(20).hex()
        adding = trailer_args(path, rid)
        start_git(*adding)  # git writes the trailer while the preview is computed
        ids = [rid]
    try:
        preview(top, message, ids)
    finally:
        if adding:
            started_git(*adding)  # raises HookError (one line) if git could not add it
    return 0


def preview(top: Path, message: str, ids: list[str]) -> None:
    from token_exchange.amounts import fmt, split
    from token_exchange.rules.identities import agent_for, co_author_emails

    ex = open_exchange(top)
    try:
        email = mailmapped(top, author_email())
        agents: list[str] = []
        for addr in (email, *co_author_emails(message)):
            name = agent_for(ex.cfg, addr)
            if name and name not in agents:
                agents.append(name)
        if not agents:
            say(f"{PREFIX}: {email or 'the author'} is not an agent; this commit will earn nothing")
            return
        idx = ex.ledger.fresh()
        for rid in ids:
            paid = idx.by_ref(f"commit:{rid}")
            if paid:
                who = ", ".join(f"{t.agent} {fmt(t.amount)}" for t in paid)
                say(f"{PREFIX}: this change ({rid[:12]}) is already paid ({who}); it earns nothing new")
                return
        from token_exchange.rules.rewards import commit_reward, match_contract

        project = project_for(top, ex.cfg.project)
        parents = 2 if (git_dir(top) / "MERGE_HEAD").exists() else 1
        contract = match_contract(ex.cfg.contracts, project).name
        reward = commit_reward(ex.cfg, agents[0], project, message, parents, idx.contract_paid(contract))
        if reward.excluded:
            say(f"{PREFIX}: {reward.excluded}: this commit will earn nothing")
            return
        shares = split(reward.amount, {a: 1 for a in agents})
        who = " + ".join(f"{a} {fmt(shares[a])}" for a in agents)
        say(f"{PREFIX}: will earn {who} tokens on {project}: {reward.reason}")
    finally:
        ex.close()


# --- post-commit ----------------------------------------------------------------------
HEAD_FORMAT = "%H%x00%P%x00%aE%x00%gs%x00%B"
HEAD_ARGS = ("log", "-g", "-1", f"--format={HEAD_FORMAT}", "HEAD")


def read_head() -> tuple[str, int, str, str, str]:
    """(sha, parent count, author email with .mailmap, reflog subject, message) of HEAD."""
    out = started_git(*HEAD_ARGS, check=False)
    head = run_git("rev-parse", "--verify", "-q", "HEAD", check=False).strip() if not out else ""
    parts = out.split("\0", 4)
    if len(parts) < 5 or (head and parts[0] != head):
        out = run_git("log", "-1", f"--format={HEAD_FORMAT}", "HEAD")
        parts = out.split("\0", 4)
        parts[3] = ""
    sha, parents, email, subject, body = parts
    return sha, len(parents.split()), email, subject, body.rstrip("\n")


def amend_chain(subject: str) -> list[str]:
    """SHAs an amend (or a chain of amends) replaced, newest first, from HEAD's reflog."""
    if not subject.startswith("commit (amend)"):
        return []
    out = run_git("log", "-g", f"-n{AMEND_CHAIN_MAX}", "--format=%H%x00%gs", "HEAD", check=False)
    rows = [line.split("\0", 1) for line in out.splitlines() if "\0" in line]
    shas: list[str] = []
    for i in range(len(rows) - 1):
        if not rows[i][1].startswith("commit (amend)"):
            break
        shas.append(rows[i + 1][0])
    return shas


def rebase_origins(gdir: Path) -> list[str]:
    """Original commits behind the commit a rebase in progress just wrote (a squash chain: all of them)."""
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
    return [s for s in shas if re.fullmatch(r"[0-9a-f]{4,64}", s)]


def ids_of(top: Path, shas: list[str]) -> list[str]:
    """Every id the given commits could have been paid under (trailers, patch-id, SHA)."""
    from token_exchange.rules.reward_ids import patch_ids, trailer_ids

    if not shas:
        return []
    out = run_git("log", "--no-walk=unsorted", "--format=%H%x00%P%x00%B%x01", *shas, "--", check=False)
    ids: list[str] = []
    need_patch: list[str] = []
    for rec in out.split("\x01"):
        parts = rec.strip("\n").split("\0", 2)
        if len(parts) < 3:
            continue
        sha, parents, body = parts
        ids.extend(trailer_ids(body))
        ids.append(f"sha-{sha}")
        if len(parents.split()) <= 1:
            need_patch.append(sha)
    ids.extend(f"patch-{p}" for p in patch_ids(top, need_patch).values())
    return list(dict.fromkeys(ids))


def post_commit(args: list[str]) -> int:
    from token_exchange.services.exchange import describe_outcome
    from token_exchange.rules.identities import co_author_emails
    from token_exchange.rules.reward_ids import patch_ids, reward_id, trailer_ids

    start_git(*HEAD_ARGS)
    top = worktree()
    ex = open_exchange(top)
    if not ex.cfg.project:
        start_git(*GIT_CONFIG_ARGS)  # the origin remote names the project
    try:
        sha, parents, email, subject, body = read_head()
        ids = trailer_ids(body)
        own_patch = None
        if not ids and parents <= 1:
            own_patch = patch_ids(top, [sha]).get(sha)
        rid = reward_id(body, sha, own_patch)
        origins = [*amend_chain(subject), *rebase_origins(git_dir(top)), *CHERRY_PICKED.findall(body)]
        origins = [s for s in dict.fromkeys(origins) if s != sha]
        also = [*ids[1:], *ids_of(top, origins)]
        project = project_for(top, ex.cfg.project)
        out = ex.commit(email, project, body, reward_id=rid, sha=sha, parents=parents,
                        co_authors=co_author_emails(body), also_paid=also)
        say(describe_outcome(out))
    finally:
        ex.close()
    return 0


# --- entry point ----------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        sys.stderr.write(USAGE + "\n")
        raise SystemExit(0 if args else 2)
    if args[0] in ("-V", "--version"):
        from token_exchange import __version__

        sys.stdout.write(f"tx-hook {__version__}\n")
        raise SystemExit(0)
    cmd, rest = args[0], args[1:]
    handlers = {"commit-msg": commit_msg, "post-commit": post_commit}
    if cmd not in handlers:
        sys.stderr.write(f"tx-hook: unknown hook {cmd[:40]!r}\n{USAGE}\n")
        raise SystemExit(2)
    if os.environ.get("TOKEN_EXCHANGE_SKIP"):
        raise SystemExit(0)
    code = 0
    try:
        code = handlers[cmd](rest)
    except HookError as e:
        warn(f"{PREFIX}: {cmd}: {e}")
    except Exception as e:  # noqa: BLE001 - a hook must never break the commit
        if os.environ.get("TOKEN_EXCHANGE_DEBUG"):
            raise
        from token_exchange.errors import UserError  # noqa: PLC0415 - only on an error

        detail = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
        warn(f"{PREFIX}: {cmd}: {detail}; commit kept, nothing recorded")
    raise SystemExit(code)

