"""Merging the exchange's hooks into a Claude Code ``settings.json`` text, and removing them again.

Schema, from code.claude.com/docs/en/hooks ("Configuration", "Hook handler fields"):
``{"hooks": {EVENT: [{"matcher": ..., "hooks": [{"type": "command", "command": CMD, ...}]}]}}``.
``Stop``, ``UserPromptSubmit`` have no matcher support (a matcher is ignored); for
``SubagentStop`` and ``SessionEnd`` an omitted matcher matches every agent type / end reason, so
our groups have no ``matcher``.  A handler has no field for a marker, so ours are recognised by
their exact ``command`` string (the caller passes the same strings to ``install`` and
``remove``).  "If you define the same handler in more than one settings file, it runs once."

- ``install`` adds, per event, one group ``{"hooks": [{"type": "command", "command": CMD}]}``
  unless a command handler with exactly that command is already anywhere under the event:
  installing twice changes nothing (the text is returned as it was).
- ``remove`` deletes only handlers of ours, then the groups and event lists that this left empty
  (and ``hooks`` itself if it ends up empty); everything else stays, in its order.
- Invalid JSON, duplicate keys or an unexpected shape is a one-line ``SettingsError``; the caller
  writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from token_exchange.errors import UserError
from token_exchange.meter.records import short

METER_EVENTS = ("Stop", "SubagentStop", "SessionEnd")
GUARD_EVENTS = ("UserPromptSubmit",)
MAX_SETTINGS = 16 * 1024 * 1024


class SettingsError(UserError):
    """The settings text cannot be merged safely; nothing was written."""


class Merge(NamedTuple):
    """The new settings text, whether it differs, what changed, and warnings for the user."""

    text: str
    changed: bool
    events: tuple[str, ...]  # events whose hooks were added or removed
    warnings: tuple[str, ...] = ()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise SettingsError(f"settings: duplicate key {short(k)}; fix the file by hand first")
        out[k] = v
    return out


def parse(text: str, *, name: str = "settings.json") -> dict[str, Any]:
    """The settings object (empty text is an empty object); SettingsError on anything odd."""
    if len(text) > MAX_SETTINGS:
        raise SettingsError(f"{name} is larger than {MAX_SETTINGS} characters")
    if not text.strip():
        return {}
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates)
    except SettingsError as e:
        raise SettingsError(f"{name}: {str(e).removeprefix('settings: ')}") from None
    except (ValueError, RecursionError) as e:
        where = f" (line {e.lineno})" if isinstance(e, json.JSONDecodeError) else ""
        raise SettingsError(f"{name} is not valid JSON{where}; nothing was changed") from None
    if not isinstance(doc, dict):
        raise SettingsError(f"{name} must contain a JSON object, not {type(doc).__name__}")
    hooks = doc.get("hooks")
    if hooks is not None and not isinstance(hooks, dict):
        raise SettingsError(f"{name}: \"hooks\" must be an object")
    for event, groups in (hooks or {}).items():
        if not isinstance(groups, list):
            raise SettingsError(f"{name}: hooks.{short(event)} must be a list")
        for i, group in enumerate(groups):
            if not isinstance(group, dict) or not isinstance(group.get("hooks", []), list):
                raise SettingsError(f"{name}: hooks.{short(event)}[{i}] must be an object with a \"hooks\" list")
    return doc


def dump(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _ours(handler: object, commands: set[str]) -> bool:
    return isinstance(handler, dict) and handler.get("type") == "command" and handler.get("command") in commands


def _check_command(command: str, what: str) -> None:
    if not isinstance(command, str) or not command.strip() or "\x00" in command or len(command) > 4096:
        raise SettingsError(f"{what} must be a non-empty command line")


def install(text: str, meter_command: str, guard_command: str | None = None, *,
            name: str = "settings.json") -> Merge:
    """``text`` with ``meter_command`` on Stop, SubagentStop and SessionEnd and ``guard_command``
    (if given) on UserPromptSubmit; unchanged (same text) when they are all there already."""
    _check_command(meter_command, "meter command")
    wanted = [(e, meter_command) for e in METER_EVENTS]
    if guard_command is not None:
        _check_command(guard_command, "guard command")
        wanted += [(e, guard_command) for e in GUARD_EVENTS]
    doc = parse(text, name=name)
    hooks: dict[str, Any] = doc.get("hooks") or {}
    added: list[str] = []
    for event, command in wanted:
        groups = hooks.get(event, [])
        if any(_ours(h, {command}) for g in groups for h in g.get("hooks", [])):
            continue
        hooks[event] = [*groups, {"hooks": [{"type": "command", "command": command}]}]
        added.append(event)
    warnings = []
    if doc.get("disableAllHooks") is True:
        warnings.append(f"{name} sets \"disableAllHooks\": true, so Claude Code runs none of these hooks")
    if not added:
        return Merge(text, False, (), tuple(warnings))
    doc["hooks"] = hooks
    return Merge(dump(doc), True, tuple(added), tuple(warnings))


def remove(text: str, commands: list[str] | tuple[str, ...], *, name: str = "settings.json") -> Merge:
    """``text`` without the command handlers whose command is one of ``commands``; unchanged
    (same text) when there are none."""
    ours = {c for c in commands if isinstance(c, str)}
    doc = parse(text, name=name)
    hooks = doc.get("hooks")
    if not hooks:
        return Merge(text, False, ())
    touched: list[str] = []
    for event in list(hooks):
        groups = hooks[event]
        new_groups = []
        for group in groups:
            handlers = group.get("hooks", [])
            kept = [h for h in handlers if not _ours(h, ours)]
            if len(kept) == len(handlers):
                new_groups.append(group)
            elif kept:
                new_groups.append({**group, "hooks": kept})
        if len(new_groups) != len(groups) or any(a is not b for a, b in zip(new_groups, groups, strict=True)):
            touched.append(event)
            if new_groups:
                hooks[event] = new_groups
            else:
                del hooks[event]
    if not touched:
        return Merge(text, False, ())
    if hooks:
        doc["hooks"] = hooks
    else:
        del doc["hooks"]
    return Merge(dump(doc), True, tuple(touched))
