"""The guard: refusing a prompt before the work it asks for is done (``tx guard claude-code``).

Metered usage is never refused (it already happened, ``services.meter_charge``); what keeps an agent
within its funds and limits is refusing the next prompt.  A UserPromptSubmit hook first charges
what the session's transcripts hold that is not charged yet (``services.meter_sources``), then asks
the agent's limits for room for ``meter.guard_headroom``.  Run by ``tx guard claude-code`` and the
lean ``tx-guard`` program (``token_exchange.hooks.meter``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from token_exchange.errors import UserError
from token_exchange.services.meter_charge import Charged, Meter, micros
from token_exchange.services.meter_sources import PROG, HookRun, meter_session, note, open_meter

if TYPE_CHECKING:
    from token_exchange.meter.claude_code import SessionRead


def refusal(m: Meter, agent: str) -> str | None:
    """Why ``agent`` may not start more work now (the seed's reason and when capacity frees up),
    or None.  Funds, emergency reserve, hourly and daily limits must all leave room for
    ``meter.guard_headroom``; the burst limit is per request and does not apply to a prompt."""
    from token_exchange.amounts import MAX_UNITS
    from token_exchange.rules.limits import LimitRefused, enforce

    a = m.cfg.agent(agent)
    now_us = micros(m.clock())
    idx = m.ledger.fresh()
    if idx.get(f"open:{agent}") is None or idx.expired_holds(now_us):
        with m.ledger.locked() as idx:
            m.ensure_open(idx, agent)
            m.expire_due(idx, now_us)
    try:
        enforce(idx, a.limits._replace(burst=MAX_UNITS), agent, m.settings.guard_headroom, now_us)
    except LimitRefused as e:
        return f"{agent}: {e}"
    return None


def claude_code_guard(stdin: bytes, *, home: str | Path | None = None, agent: str | None = None,
                      meter: Meter | None = None, env: Mapping[str, str] | None = None,
                      meter_first: bool = True) -> HookRun:
    """``tx guard claude-code``: a UserPromptSubmit hook.  Charges what the session's transcripts
    hold that is not charged yet (so the decision sees all usage even if a Stop hook was missed),
    then blocks the prompt (exit 2, the reason on stderr: Claude Code's block protocol) when the
    agent is out of funds, at its emergency reserve or over its hourly or daily limit; otherwise
    exit 0 and nothing on stdout (stdout would be added to Claude's context).  A session without an
    agent, or an exchange that cannot be read, lets the prompt through with one line on stderr."""
    from token_exchange.meter import claude_code as cc
    from token_exchange.meter import guard

    env = os.environ if env is None else env
    m: Meter | None = None
    charged: Charged | None = None
    read: SessionRead | None = None
    notes: list[str] = []
    try:
        hook = cc.parse_hook_input(stdin)
        m = open_meter(home, hook, meter, env)
        who = m.agent_for("claude-code", option=agent, cwd=hook.cwd,
                          path=str(hook.transcript_path) if hook.transcript_path else None, session=hook.session_id)
        if meter_first and hook.transcript_path is not None:
            try:
                charged, read, notes = meter_session(m, hook, who)
            except UserError as e:  # metering is best effort here: the decision still counts
                notes.append(f"not metered now: {e}")
        reason = refusal(m, who)
    except UserError as e:
        return HookRun(guard.HookReply(0, "", note(f"{e}; prompt let through")))
    finally:
        if m is not None and meter is None:
            m.close()
    if reason is not None:
        return HookRun(guard.block(f"{PROG}: {reason}"), charged, read, who)
    return HookRun(guard.HookReply(0, "", "".join(note(t) for t in notes)), charged, read, who)
