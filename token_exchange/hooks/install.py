"""Plain git hooks without the pre-commit framework: install, uninstall, status.

The scripts are rendered from ``git-hook.sh`` (package data) with the absolute path of the
``tx-hook`` console script of this installation.  An existing hook that is not ours is kept:
renamed to ``NAME.local`` and run first by our script; ``uninstall`` puts it back.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

from token_exchange.errors import UserError

MARKER = "# token-exchange-hook v"
HOOK_TYPES = ("commit-msg", "post-commit", "post-rewrite")
HOOKS: dict[str, dict[str, str]] = {
    "commit-msg": {"purpose": "adds a Reward-Id trailer and previews what the commit earns.",
                   "chain": '"$0.local" "$@" || exit $?',  # a chained commit-msg hook may still refuse
                   "args": 'commit-msg "$1"'},
    "post-commit": {"purpose": "pays the commit at HEAD once per change.",
                    "chain": '"$0.local" "$@"',  # post-commit cannot refuse anything
                    "args": "post-commit"},
    "post-rewrite": {"purpose": "links rewritten commits (amend, rebase) to what was paid for them.",
                     "chain": '"$0.local" "$@" <&0',
                     "args": 'post-rewrite "$1"'},
}


def default_hook_command() -> str:
    """The ``tx-hook`` script of this installation (next to the interpreter), else whatever is on PATH."""
    here = Path(sys.executable).parent / "tx-hook"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("tx-hook") or "tx-hook"


def render(hook: str, command: str | None = None) -> str:
    command = command or default_hook_command()
    if any(c in command for c in "'\"$`\\\n"):
        raise UserError(f"hook command {command[:80]!r} cannot be used in a hook script")
    template = (Path(__file__).parent / "git-hook.sh").read_text("utf-8")
    spec = HOOKS[hook]
    return (template.replace("@HOOK@", hook).replace("@PURPOSE@", spec["purpose"]).replace("@TX_HOOK@", command)
            .replace("@CHAIN@", spec["chain"]).replace("@ARGS@", spec["args"]))


def is_ours(path: Path) -> bool:
    try:
        return MARKER in path.read_text("utf-8", "replace")
    except OSError:
        return False


def hooks_dir(cwd: Path | None = None) -> Path:
    """The hooks directory git uses here: ``core.hooksPath`` when set, else ``$GIT_DIR/hooks``."""
    from token_exchange.git import git

    where = Path(cwd or Path.cwd())
    if not git("rev-parse", "--git-dir", cwd=where, check=False).strip():
        raise UserError(f"{where} is not inside a git repository")
    return Path(git("rev-parse", "--path-format=absolute", "--git-path", "hooks", cwd=where).strip())


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tx-tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | stat.S_IRUSR)
    os.replace(tmp, path)


def install(cwd: Path | None = None, command: str | None = None,
            hook_types: tuple[str, ...] = HOOK_TYPES) -> list[dict[str, Any]]:
    directory = hooks_dir(cwd)
    directory.mkdir(parents=True, exist_ok=True)
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
        _write(path, render(hook, command))
        results.append({"hook": hook, "path": str(path), "action": action,
                        "chained": str(local) if local.exists() else None})
    _record_start(cwd)
    return results


def _record_start(cwd: Path | None) -> None:
    """Remember HEAD when the hooks were first installed: ``tx catch-up`` pays only what came after."""
    from token_exchange import git

    w = git.where(cwd)
    head = git.out("rev-parse", "-q", "--verify", "HEAD", repo=cwd or Path.cwd(), check=False)
    if w is None or not head:
        return
    path = w.common_dir / "token-exchange" / "start"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        _write(path, head + "\n")
        path.chmod(0o644)


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
    from token_exchange.git import toplevel

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
    via_pre_commit = sorted(h for h in ("token-exchange-commit-msg", "token-exchange-post-commit",
                                        "token-exchange-post-rewrite")
                            if config is not None and config.exists() and h in config.read_text("utf-8", "replace"))
    return {"hooks_dir": str(directory), "hooks": hooks, "pre_commit_config": via_pre_commit}
