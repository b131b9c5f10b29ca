"""Who is paid for closing an issue: its assignee, else ``--agent``, else bd's actor.

bd records no ``closed_by`` on an issue; its "actor" is who runs bd, resolved by the binary
(v1.0.5, ``cmd/bd/main.go``) in this order:

1. ``--actor NAME``;
2. viper's ``actor`` key: ``$BD_ACTOR`` (env prefix ``BD_``), else ``actor:`` in config.yaml (the
   resolved beads dir's, then ``~/.config/bd/config.yaml``, then ``~/.beads/config.yaml``) --
   ``refreshBoundCommandConfig`` (l.422, l.710) sets it before ``getActorWithGit`` runs (l.925), so
   with both set, ``BD_ACTOR`` beats ``BEADS_ACTOR`` although the comment there says otherwise;
3. ``$BEADS_ACTOR``; 4. ``$BD_ACTOR`` (the deprecated alias, already taken in 2.);
5. ``git config user.name`` (the name, never the e-mail); 6. ``$USER``; 7. ``"unknown"``.

``.beads/.env`` is loaded first without overriding the environment (``loadBeadsEnvFile``), so an
actor set there counts too.  A bd hook inherits bd's environment and working directory, so the
hook sees the same actor -- except one given as ``bd --actor``, which bd passes to no hook.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from token_exchange.beads.issues import Issue
from token_exchange.rules.config import Config
from token_exchange.rules.engine import IssuePayee
from token_exchange.rules.identities import agent_for

ACTOR_VARS = ("BD_ACTOR", "BEADS_ACTOR")
MAX_CONFIG = 1024 * 1024


class Actor(NamedTuple):
    name: str
    source: str  # "--actor", "BD_ACTOR", "config.yaml (PATH)", "BEADS_ACTOR", "git user.name", "$USER", "default"


def _yaml_actor(path: Path) -> str:
    """The top-level ``actor:`` of a config.yaml (a plain scalar, quotes and comments allowed)."""
    try:
        if path.stat().st_size > MAX_CONFIG:
            return ""
        lines = path.read_text("utf-8", "replace").splitlines()
    except OSError:
        return ""
    for raw in lines:
        if not raw.startswith("actor:"):
            continue
        value = raw[len("actor:"):].strip()
        if value.startswith(("'", '"')):
            end = value.find(value[0], 1)
            return value[1:end].strip() if end > 0 else ""
        return value.split(" #", 1)[0].strip()
    return ""


def _env_file(beads_dir: Path | None) -> dict[str, str]:
    """The actor variables of ``<beads dir>/.env`` (main.go loadBeadsEnvFile: KEY=VALUE, ``export`` allowed)."""
    out: dict[str, str] = {}
    if beads_dir is None:
        return out
    try:
        path = beads_dir / ".env"
        if path.stat().st_size > MAX_CONFIG:
            return out
        lines = path.read_text("utf-8", "replace").splitlines()
    except OSError:
        return out
    for line in lines:
        line = line.strip().removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if sep and key.strip() in ACTOR_VARS and value:
            out.setdefault(key.strip(), value)
    return out


def _git_user_name(cwd: Path | None) -> str:
    from token_exchange import git
    from token_exchange.errors import UserError

    try:
        return git.out("config", "user.name", repo=cwd, check=False).strip()
    except (OSError, UserError):
        return ""


def bd_actor(beads_dir: Path | None, *, flag: str | None = None, cwd: Path | None = None) -> Actor:
    """The actor bd would record for a command run here (see the module docstring)."""
    if flag and flag.strip():
        return Actor(flag.strip(), "--actor")
    env = {**_env_file(beads_dir), **{k: os.environ[k] for k in ACTOR_VARS if os.environ.get(k)}}
    if env.get("BD_ACTOR", "").strip():
        return Actor(env["BD_ACTOR"].strip(), "BD_ACTOR")
    homes = [Path(os.environ["HOME"]) / ".config" / "bd", Path(os.environ["HOME"]) / ".beads"] \
        if os.environ.get("HOME") else []
    for directory in ([beads_dir] if beads_dir else []) + homes:
        name = _yaml_actor(directory / "config.yaml")
        if name:
            return Actor(name, f"config.yaml actor ({directory / 'config.yaml'})")
    if env.get("BEADS_ACTOR", "").strip():
        return Actor(env["BEADS_ACTOR"].strip(), "BEADS_ACTOR")
    name = _git_user_name(cwd)
    if name:
        return Actor(name, "git user.name")
    if os.environ.get("USER", "").strip():
        return Actor(os.environ["USER"].strip(), "$USER")
    return Actor("unknown", "bd's default")


def payee_for(cfg: Config, issue: Issue, agent: str | None, actor: Actor | None) -> IssuePayee:
    """The assignee when it is a known agent, else ``--agent``, else bd's actor when it is one.

    ``source`` is ``assignee``, ``--agent`` or ``actor``; ``detail`` says plainly what it came from
    (``spark (bd actor, from BD_ACTOR)``), or why nobody is paid.
    """
    if issue.assignee:
        name = agent_for(cfg, issue.assignee)
        if name:
            return IssuePayee(name, "assignee", issue.assignee)
    if agent:
        cfg.agent(agent)
        return IssuePayee(agent, "--agent", agent)
    if actor is not None:
        name = agent_for(cfg, actor.name)
        if name:
            return IssuePayee(name, "actor", f"{actor.name} (bd actor, from {actor.source})")
    why = [f"assignee {issue.assignee[:80]!r} is not an agent" if issue.assignee else "no assignee", "no --agent",
           f"bd actor {actor.name[:80]!r} (from {actor.source}) is not an agent" if actor is not None
           else "no bd actor"]
    return IssuePayee(None, "", "; ".join(why))
