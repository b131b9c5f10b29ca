"""``tx hooks install|uninstall|status``: the plain git hooks, without the pre-commit framework.

The hook scripts are rendered from ``HOOK_TEMPLATE`` (``hooks/`` in the
repository holds the same scripts with ``python3`` as the interpreter; a test
keeps them equal).  An existing hook that is not ours is kept: renamed to
``NAME.local`` and run first by our script; ``uninstall`` puts it back.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from token_exchange import output as out
from token_exchange.errors import UserError

MARKER = "# token-exchange-hook v1"
HOOK_TYPES = ("commit-msg", "post-commit")
DEFAULT_PYTHON = "python3"

HOOK_TEMPLATE = """#!/bin/sh
# token-exchange {hook} hook: {purpose}
# Installed by `tx hooks install`; `tx hooks uninstall` removes it and restores a hook it chained.
# The hook never blocks or breaks a commit. Set TOKEN_EXCHANGE_SKIP=1 to skip it once.
# -P: never import from the repository being committed to (python >= 3.11); -S: see hookclient.BOOTSTRAP.
{marker}
PYTHON="${{TOKEN_EXCHANGE_PYTHON:-{python}}}"
if [ -x "$0.local" ]; then
    {chain}
fi
if command -v "$PYTHON" >/dev/null 2>&1; then
    exec "$PYTHON" -S -P -c '{bootstrap}' {args}
fi
echo "token-exchange: $PYTHON not found; {hook} hook skipped" >&2
exit 0
"""
HOOKS = {
    "commit-msg": dict(purpose="adds a Reward-Id trailer and previews what the commit earns.",
                       chain='"$0.local" "$@" || exit $?',  # a chained commit-msg hook may still refuse
                       args='commit-msg --msg-file "$1"'),
    "post-commit": dict(purpose="pays the commit at HEAD once per Reward-Id.",
                        chain='"$0.local" "$@"',  # post-commit cannot refuse anything
                        args="post-commit"),
}


def render(hook: str, python: str = DEFAULT_PYTHON) -> str:
    if "'" in python or '"' in python or "$" in python or "`" in python or "\n" in python:
        raise UserError(f"interpreter path {python[:80]!r} cannot be used in a hook script")
    from token_exchange.hookclient import BOOTSTRAP

    return HOOK_TEMPLATE.format(hook=hook, marker=MARKER, python=python, bootstrap=BOOTSTRAP, **HOOKS[hook])


def is_ours(path: Path) -> bool:
    try:
        return MARKER in path.read_text("utf-8", "replace")
    except OSError:
        return False


def hooks_dir(cwd: Path | None = None) -> Path:
    """The hooks directory git uses here: ``core.hooksPath`` when set, else ``$GIT_DIR/hooks``."""
    from token_exchange.gitutil import git

    where = Path(cwd or Path.cwd())
    if not git("rev-parse", "--git-dir", cwd=where, check=False).strip():
        raise UserError(f"{where} is not inside a git repository")
    text = git("rev-parse", "--path-format=absolute", "--git-path", "hooks", cwd=where).strip()
    return Path(text)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tx-tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | stat.S_IRUSR)
    os.replace(tmp, path)


def install(cwd: Path | None = None, python: str | None = None,
            hook_types: tuple[str, ...] = HOOK_TYPES) -> list[dict[str, Any]]:
    directory = hooks_dir(cwd)
    directory.mkdir(parents=True, exist_ok=True)
    python = python or sys.executable or DEFAULT_PYTHON
    results = []
    for hook in hook_types:
        path, local = directory / hook, directory / f"{hook}.local"
        action = "installed"
        if path.exists() or path.is_symlink():
            if is_ours(path):
                action = "updated"
            elif local.exists() or local.is_symlink():
                raise UserError(f"{path} is not ours and {local.name} already exists; move one of them away")
            else:
                os.replace(path, local)
                action = f"installed (existing hook kept as {local.name} and run first)"
        _write(path, render(hook, python))
        results.append({"hook": hook, "path": str(path), "action": action,
                        "chained": str(local) if local.exists() else None})
    return results


def uninstall(cwd: Path | None = None, hook_types: tuple[str, ...] = HOOK_TYPES) -> list[dict[str, Any]]:
    directory = hooks_dir(cwd)
    results = []
    for hook in hook_types:
        path, local = directory / hook, directory / f"{hook}.local"
        if not (path.exists() or path.is_symlink()):
            action = "not installed"
            if local.exists():
                os.replace(local, path)
                action = f"not installed; restored {hook} from {local.name}"
        elif not is_ours(path):
            action = "left alone (not a token-exchange hook)"
        else:
            path.unlink()
            action = "removed"
            if local.exists() or local.is_symlink():
                os.replace(local, path)
                action = f"removed; restored the previous hook from {local.name}"
        results.append({"hook": hook, "path": str(path), "action": action})
    return results


def status(cwd: Path | None = None) -> dict[str, Any]:
    from token_exchange.gitutil import toplevel

    directory = hooks_dir(cwd)
    hooks = []
    for hook in HOOK_TYPES:
        path, local = directory / hook, directory / f"{hook}.local"
        if not path.exists():
            state = "absent"
        elif is_ours(path):
            state = "installed"
        elif "pre-commit" in path.read_text("utf-8", "replace"):
            state = "pre-commit"
        else:
            state = "other"
        hooks.append({"hook": hook, "path": str(path), "state": state,
                      "chained": str(local) if local.exists() else None,
                      "executable": bool(path.exists() and os.access(path, os.X_OK))})
    top = toplevel(cwd)
    config = top / ".pre-commit-config.yaml" if top else None
    via_pre_commit = sorted(h for h in ("token-exchange-commit-msg", "token-exchange-post-commit")
                            if config is not None and config.exists() and h in config.read_text("utf-8", "replace"))
    return {"hooks_dir": str(directory), "hooks": hooks, "pre_commit_config": via_pre_commit}


Json = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
Types = Annotated[Optional[list[str]], typer.Option("--hook-type", help="commit-msg or post-commit "
                                                                         "(repeatable; default both).")]
Python = Annotated[Optional[str], typer.Option(help="Interpreter the hooks run (default: this one).")]


def register(app: typer.Typer) -> None:
    """Add `tx hooks install|uninstall|status`."""
    hooks_app = typer.Typer(help="Install the plain git hooks (commit-msg, post-commit) without pre-commit.",
                            no_args_is_help=True)
    app.add_typer(hooks_app, name="hooks")

    def types(values: list[str] | None) -> tuple[str, ...]:
        for v in values or ():
            if v not in HOOK_TYPES:
                raise UserError(f"--hook-type must be one of {', '.join(HOOK_TYPES)}, not {v[:30]!r}")
        return tuple(dict.fromkeys(values)) if values else HOOK_TYPES

    @hooks_app.command("install")
    def install_cmd(hook_type: Types = None,
                    python: Python = None,
                    as_json: Json = False) -> None:
        """Write the hooks into this repository's hooks directory (respects core.hooksPath)."""
        results = install(python=python, hook_types=types(hook_type))
        if as_json:
            out.emit_json(results)
            return
        for r in results:
            out.message(f"{r['hook']}: {r['action']} at {r['path']}")

    @hooks_app.command("uninstall")
    def uninstall_cmd(hook_type: Types = None, as_json: Json = False) -> None:
        """Remove our hooks and restore any hook they chained."""
        results = uninstall(hook_types=types(hook_type))
        if as_json:
            out.emit_json(results)
            return
        for r in results:
            out.message(f"{r['hook']}: {r['action']}")

    @hooks_app.command("status")
    def status_cmd(as_json: Json = False) -> None:
        """Which hooks are installed here (plain and via pre-commit)."""
        data = status()
        if as_json:
            out.emit_json(data)
            return
        for h in data["hooks"]:
            extra = f", chains {Path(h['chained']).name}" if h["chained"] else ""
            sys.stdout.write(f"{h['hook']}: {h['state']}{extra} ({h['path']})\n")
        if data["pre_commit_config"]:
            sys.stdout.write(f"pre-commit config uses: {', '.join(data['pre_commit_config'])}\n")

    server_app = typer.Typer(help="The warm hook server that keeps hooks fast (started by the hooks themselves).",
                             no_args_is_help=True)
    hooks_app.add_typer(server_app, name="server")

    @server_app.command("status")
    def server_status_cmd(as_json: Json = False) -> None:
        """This user's hook servers: socket, pid, running."""
        from token_exchange import hookd
        from token_exchange.hookclient import runtime_dir, server_disabled

        data = {"runtime_dir": runtime_dir(), "disabled_by_env": server_disabled(), "servers": hookd.servers()}
        if as_json:
            out.emit_json(data)
            return
        if not data["servers"]:
            sys.stdout.write(f"no hook server in {data['runtime_dir']}\n")
        for s in data["servers"]:
            sys.stdout.write(f"{'running' if s['running'] else 'stopped'}  pid {s['pid']}  {s['socket']}\n")

    @server_app.command("stop")
    def server_stop_cmd(as_json: Json = False) -> None:
        """Stop every hook server of this user now (the next hook starts a fresh one if allowed)."""
        from token_exchange import hookd

        stopped = hookd.stop_all()
        if as_json:
            out.emit_json({"stopped": stopped})
            return
        out.message(f"stopped {stopped} hook server{'s' if stopped != 1 else ''}")
