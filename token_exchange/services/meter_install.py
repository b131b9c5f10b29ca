"""Installing the meter and guard hooks into Claude Code's settings (``tx meter install|uninstall``).

Which commands are ours, which settings file a scope means, and a merge that keeps everything else
in the file (``token_exchange.meter.claude_settings`` edits the JSON; this module reads and writes
the file).  Not on a hook's path: only the ``tx`` commands import it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import NamedTuple

from token_exchange.errors import UserError
from token_exchange.meter.records import short, short_path
from token_exchange.storage import atomic_write

HOOK_PROGRAMS = {"tx-meter": "claude-code", "tx-guard": "claude-code"}
TX_PROGRAMS = ("tx", "token-exchange")


def is_our_command(command: object) -> bool:
    """A hook command we install: ``[PATH/]tx-meter claude-code ...``, ``[PATH/]tx-guard claude-code ...``
    or ``[PATH/]tx meter|guard claude-code ...`` (options after it allowed)."""
    import shlex

    if not isinstance(command, str) or len(command) > 4096:
        return False
    try:
        argv = shlex.split(command)
    except ValueError:
        return False
    if len(argv) < 2:
        return False
    prog = os.path.basename(argv[0])
    if HOOK_PROGRAMS.get(prog) == argv[1]:
        return True
    return prog in TX_PROGRAMS and len(argv) >= 3 and argv[1] in ("meter", "guard") and argv[2] == "claude-code"


def our_commands(text: str, name: str = "settings.json") -> list[str]:
    """Every hook command in a settings text that ``is_our_command``."""
    from token_exchange.meter import claude_settings

    doc = claude_settings.parse(text, name=name)
    found: dict[str, None] = {}
    for groups in (doc.get("hooks") or {}).values():
        for group in groups:
            for handler in group.get("hooks", []):
                if isinstance(handler, dict) and is_our_command(handler.get("command")):
                    found[handler["command"]] = None
    return list(found)


SCOPES = ("project", "local", "user")


class Installed(NamedTuple):
    """What ``install`` / ``uninstall`` did to one settings file."""

    path: Path
    changed: bool
    events: tuple[str, ...]
    replaced: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"settings": str(self.path), "changed": self.changed, "events": list(self.events),
                "replaced": list(self.replaced), "warnings": list(self.warnings)}


def settings_file(scope: str = "project", explicit: str | Path | None = None, cwd: Path | None = None) -> Path:
    """``--settings PATH``, else the scope's file: ``project`` = ``<repository>/.claude/settings.json``
    (shared, usually committed), ``local`` = ``settings.local.json`` next to it (yours only),
    ``user`` = ``~/.claude/settings.json`` (every project)."""
    if explicit:
        return Path(explicit).expanduser().absolute()
    if scope not in SCOPES:
        raise UserError(f"--scope must be one of {', '.join(SCOPES)}, not {short(scope)}")
    if scope == "user":
        return Path.home() / ".claude" / "settings.json"
    from token_exchange import git

    here = Path(cwd or Path.cwd())
    top = git.toplevel(here) or here
    return top / ".claude" / ("settings.local.json" if scope == "local" else "settings.json")


def hook_program(name: str) -> str:
    """The ``tx-meter`` / ``tx-guard`` script of this installation (next to the interpreter), else the
    one on PATH, else the bare name."""
    import shutil
    import sys

    here = Path(sys.executable).parent / name
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which(name) or name


def hook_commands(*, home: str | Path | None = None, agent: str | None = None,
                  meter_program: str | None = None, guard_program: str | None = None) -> tuple[str, str]:
    """The command lines the settings get: ``tx-meter claude-code`` and ``tx-guard claude-code``, with
    ``--home`` / ``--agent`` when given."""
    import shlex

    extra = ""
    if home:
        extra += f" --home {shlex.quote(str(Path(home).expanduser().absolute()))}"
    if agent:
        extra += f" --agent {shlex.quote(agent)}"
    meter = f"{shlex.quote(meter_program or hook_program('tx-meter'))} claude-code{extra}"
    guard = f"{shlex.quote(guard_program or hook_program('tx-guard'))} claude-code{extra}"
    return meter, guard


def _read_settings(path: Path) -> str:
    from token_exchange.meter.claude_settings import MAX_SETTINGS, SettingsError

    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SETTINGS + 1)
    except FileNotFoundError:
        return ""
    except OSError as e:
        raise SettingsError(f"{short_path(path)}: cannot read ({e.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"{short_path(path)} is not UTF-8 text; nothing was changed") from None


def _write_settings(path: Path, text: str) -> None:
    """Replace the file atomically, keeping its mode; a symlinked settings file (dotfiles) is written
    where it points, so the link stays."""
    target = Path(os.path.realpath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = 0o644
    try:
        atomic_write(target, text.encode("utf-8"), mode=mode)
    except OSError as e:
        raise UserError(f"{short_path(path)}: cannot write ({e.strerror})") from None


def install_claude_code(path: Path, meter_command: str, guard_command: str | None) -> Installed:
    """Merge our hooks into a Claude Code settings file (everything else is kept); an older command
    of ours (another path, other options) is replaced, so hooks never run twice."""
    from token_exchange.meter import claude_settings

    text = _read_settings(path)
    stale = tuple(c for c in our_commands(text, path.name) if c not in (meter_command, guard_command))
    removed = claude_settings.remove(text, list(stale), name=path.name) if stale else None
    merged = claude_settings.install(removed.text if removed else text, meter_command, guard_command, name=path.name)
    changed = merged.changed or bool(removed and removed.changed)
    if changed:
        _write_settings(path, merged.text)
    events = tuple(dict.fromkeys([*(removed.events if removed else ()), *merged.events]))
    return Installed(path, changed, events, stale, merged.warnings)


def uninstall_claude_code(path: Path) -> Installed:
    """Remove only our hook commands from a settings file; the rest stays as it was."""
    from token_exchange.meter import claude_settings

    text = _read_settings(path)
    if not text:
        return Installed(path, False, ())
    result = claude_settings.remove(text, our_commands(text, path.name), name=path.name)
    if result.changed:
        _write_settings(path, result.text)
    return Installed(path, result.changed, result.events)
