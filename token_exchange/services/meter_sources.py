"""Metering a source: read what is new in a transcript, a rollout or a log, charge it, save the offsets.

``tx meter claude-code`` (a Stop / SubagentStop / SessionEnd hook, or transcripts by hand) and
``tx meter codex | aider`` (rollouts and analytics logs), as ``tx`` commands and as the lean
``tx-meter`` program (``token_exchange.hooks.meter``).  Each run locks the source's state
(``services.meter_state``), reads from the saved offsets (``token_exchange.meter``), charges the new
records (``services.meter_charge``) and saves the offsets only after the charge: a crash re-reads,
never loses.
"""

# No ``from __future__ import annotations``: NamedTuple fields are real types here (docs/DEVELOPING.md, Hot paths).

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from token_exchange.errors import UserError
from token_exchange.meter.claude_code import HookInput, SessionRead
from token_exchange.meter.guard import HookReply
from token_exchange.meter.records import Source, short_path
from token_exchange.services.meter_charge import Charged, Meter, UnknownAgent
from token_exchange.services.meter_state import Busy, find_home, load_state, locked, state_dir, state_file_for

PROG = "token-exchange"


# --- Claude Code: the meter hook -----------------------------------------------------------------
class HookRun(NamedTuple):
    """What a hook run replies (exit code, stdout, stderr), and what it charged (for callers and tests)."""

    reply: HookReply
    charged: Charged | None = None
    read: SessionRead | None = None
    agent: str | None = None


def note(text: str) -> str:
    return f"{PROG}: {' '.join(text.split())[:600]}\n"


def meter_session(m: Meter, hook: HookInput, agent: str) -> tuple[Charged | None, SessionRead | None, list[str]]:
    """Charge what is new in the session's transcripts: lock the session's state, read, charge, save."""
    from token_exchange.meter import claude_code as cc
    from token_exchange.meter import offsets

    notes: list[str] = []
    main = hook.transcript()
    if not os.path.isfile(main):
        return None, None, [f"no transcript at {short_path(main)} yet; nothing to charge"]
    d = state_dir(m.home, "claude-code")
    state_path = d / f"{hook.session_id}.json"
    with locked(d / f"{hook.session_id}.lock"):
        state, damaged = load_state(state_path)
        if damaged:
            notes.append(damaged)
        files = cc.files_for_hook(hook)
        read = cc.read_session(files, state, session_id=hook.session_id, final_files=cc.final_files_for(hook, files))
        charged = m.charge(agent, read.records) if read.records else None
        offsets.save(state_path, read.state, sync=False)  # only after the charge: a crash re-reads, never loses
    if read.skipped:
        notes.append(f"{read.skipped} transcript line{'s' if read.skipped != 1 else ''} skipped"
                     + (f" ({read.reasons[0]})" if read.reasons else ""))
    elif read.reasons:
        notes.append(read.reasons[0])
    return charged, read, notes


def open_meter(home: str | Path | None, hook: HookInput, meter: Meter | None, env: Mapping[str, str]) -> Meter:
    return meter if meter is not None else Meter(find_home(home, hook.cwd, env), env=env)


def claude_code_hook(stdin: bytes, *, home: str | Path | None = None, agent: str | None = None,
                     meter: Meter | None = None, env: Mapping[str, str] | None = None) -> HookRun:
    """``tx meter claude-code``: a Stop / SubagentStop / SessionEnd hook.  Never exits 2 (that would
    keep Claude running): 0 when charged, when nothing is new and when the session has no agent
    (one line on stderr), 1 with one line when the exchange or the transcript cannot be used."""
    from token_exchange.meter import claude_code as cc
    from token_exchange.meter import guard

    env = os.environ if env is None else env
    m: Meter | None = None
    try:
        hook = cc.parse_hook_input(stdin)
        m = open_meter(home, hook, meter, env)
        who = m.agent_for("claude-code", option=agent, cwd=hook.cwd,
                          path=str(hook.transcript_path) if hook.transcript_path else None, session=hook.session_id)
        charged, read, notes = meter_session(m, hook, who)
    except (UnknownAgent, Busy) as e:
        return HookRun(guard.HookReply(0, "", note(str(e))))
    except UserError as e:
        if "locked by another process" in str(e):
            return HookRun(guard.HookReply(0, "", note(f"{e}; the next run charges what is new")))
        return HookRun(guard.meter_failed(f"{PROG}: {e}"))
    finally:
        if m is not None and meter is None:
            m.close()
    lines = ([charged.line()] if charged is not None else []) + notes
    return HookRun(guard.HookReply(0, "", "".join(note(t) for t in lines)), charged, read, who)


def transcript_hook_input(path: Path | str) -> bytes:
    """The hook input a ``SessionEnd`` for ``path`` would get (``tx meter claude-code FILE``: charge
    a transcript by hand, e.g. sessions from before the hooks were installed)."""
    import json

    p = Path(path).expanduser().absolute()
    return json.dumps({"hook_event_name": "SessionEnd", "session_id": p.stem, "transcript_path": str(p),
                       "reason": "other"}).encode()


# --- codex rollouts and aider analytics logs -----------------------------------------------------
class FileRun(NamedTuple):
    """One codex or aider file metered: its agent, what was charged, skipped lines and notes."""

    path: str
    agent: str | None
    charged: Charged | None
    records: int
    skipped: int
    notes: tuple[str, ...]
    error: str | None = None  # the file could not be metered (one line); nothing was charged

    @property
    def ok(self) -> bool:
        return self.agent is not None and self.error is None

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "agent": self.agent, "records": self.records, "skipped": self.skipped,
                "notes": list(self.notes), "charge": self.charged.to_json() if self.charged else None,
                "error": self.error}

    def line(self) -> str:
        head = f"{short_path(self.path, 80)}: "
        if self.error is not None:
            return head + self.error
        if self.charged is not None:
            head += self.charged.line()
        elif self.agent is None:
            head += "not charged"
        else:
            head += "nothing new"
        if self.skipped:
            head += f"; {self.skipped} line{'s' if self.skipped != 1 else ''} skipped"
        return head + "".join(f"; {n}" for n in self.notes[:2])


def expand(source: Source, paths: Sequence[str | Path]) -> list[Path]:
    """Files to meter: each file given, and in each directory given (codex: ``~/.codex/sessions``) its
    ``rollout-*.jsonl`` (codex) or ``*.jsonl`` (aider) files, recursively, never through symlinks."""
    pattern = "rollout-*.jsonl" if source == "codex" else "*.jsonl"
    out: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser().absolute()
        if p.is_dir():
            from fnmatch import fnmatchcase

            for root, dirs, files in os.walk(p):
                dirs.sort()
                out.extend(Path(root) / f for f in sorted(files) if fnmatchcase(f, pattern))
        else:
            out.append(p)
    return list(dict.fromkeys(out))


def meter_files(m: Meter, source: Source, paths: Sequence[str | Path], *, agent: str | None = None) -> list[FileRun]:
    """``meter_file`` for every file ``expand`` finds; a file that cannot be read or charged is its
    own one-line error, and the others still count."""
    runs = []
    for path in expand(source, paths):
        try:
            runs.append(meter_file(m, source, path, agent=agent))
        except UserError as e:
            runs.append(FileRun(str(path), None, None, 0, 0, (), str(e)))
    return runs


def meter_file(m: Meter, source: Source, path: Path, *, agent: str | None = None) -> FileRun:
    """Charge what is new in one codex rollout or aider analytics log (offsets in ``HOME/meter/<source>/``)."""
    from token_exchange.meter import aider, codex, offsets

    session = codex.session_from_name(path) if source == "codex" else ""
    try:
        who = m.agent_for(source, option=agent, cwd=os.getcwd(), path=str(path), session=session or None)
    except UnknownAgent as e:
        return FileRun(str(path), None, None, 0, 0, (str(e),))
    state_path = state_file_for(m.home, source, path)
    reader = codex.reader_for(path) if source == "codex" else aider.reader_for(path)
    notes: list[str] = []
    with locked(state_path.with_suffix(".lock")):
        state, damaged = load_state(state_path)
        if damaged:
            notes.append(damaged)
        adv = offsets.advance(path, state.get(path), reader)
        records = adv.result.records
        charged = m.charge(who, records) if records else None
        offsets.save(state_path, state.with_mark(path, adv.mark), sync=False)
    notes.extend(r for r in adv.result.reasons if not r.startswith("line "))
    if adv.result.reasons and adv.result.reasons[0].startswith("line "):
        notes.append(adv.result.reasons[0])
    return FileRun(str(path), who, charged, len(records), adv.result.skipped, tuple(notes))
