"""What a Claude Code hook prints and exits with: blocking or allowing a prompt, and metering quietly.

Protocol, from code.claude.com/docs/en/hooks ("Exit code output", "UserPromptSubmit decision
control", "Stop decision control"):

- Exit 2 is a blocking error: on ``UserPromptSubmit`` it "blocks the prompt, so it never reaches
  Claude", and the block message shown to the user is the stderr text.  It blocks "whether or not
  you print JSON" and even when stdout is unparsable, which is why it is the default here.
- Alternatively exit 0 with only ``{"decision": "block", "reason": ...}`` on stdout; ``reason`` is
  "shown to the user", "not added to context".  ``hookSpecificOutput.suppressOriginalPrompt``
  leaves the prompt text out of the block message (both ways of blocking honour it).
- Exit 1 (or any code but 0 and 2) does not block: "a non-blocking error".
- To let a prompt through: exit 0 and print nothing.  Plain stdout on ``UserPromptSubmit`` is
  added to Claude's context, so an allowing guard must stay silent unless it means to add
  context (``hookSpecificOutput.additionalContext``, capped by Claude Code at 10,000 characters).
- A meter hook on ``Stop`` / ``SubagentStop`` must never exit 2: that "prevents Claude from
  stopping" and continues the conversation.  It exits 0 silently, or 1 with one line on failure.
"""

# No ``from __future__ import annotations``: NamedTuple fields are real types here (docs/DEVELOPING.md, Hot paths).

import json
from typing import Literal, NamedTuple

from token_exchange.errors import clean_text

MAX_REASON = 2000
MAX_CONTEXT = 10_000
DEFAULT_REASON = "blocked by token-exchange"


class HookReply(NamedTuple):
    """Exactly what the hook process writes and how it exits."""

    exit_code: int
    stdout: str = ""
    stderr: str = ""


def _reason(text: str) -> str:
    cleaned = clean_text(text if isinstance(text, str) else str(text), limit=MAX_REASON).strip()
    return cleaned or DEFAULT_REASON


def block(reason: str, *, mode: Literal["exit2", "json"] = "exit2",
          suppress_prompt: bool = False) -> HookReply:
    """Refuse the prompt with ``reason`` (shown to the user, not to Claude)."""
    text = _reason(reason)
    extra = ({"hookSpecificOutput": {"hookEventName": "UserPromptSubmit", "suppressOriginalPrompt": True}}
             if suppress_prompt else {})
    if mode == "json":
        return HookReply(0, json.dumps({"decision": "block", "reason": text, **extra}) + "\n", "")
    if mode != "exit2":
        raise ValueError(f"unknown block mode {mode!r}")
    return HookReply(2, json.dumps(extra) + "\n" if extra else "", text + "\n")


def allow(context: str | None = None) -> HookReply:
    """Let the prompt through; with ``context``, add it to Claude's context alongside the prompt."""
    if not context:
        return HookReply(0)
    text = clean_text(context, limit=MAX_CONTEXT)
    payload = {"hookSpecificOutput": {"hookEventName": "UserPromptSubmit", "additionalContext": text}}
    return HookReply(0, json.dumps(payload) + "\n")


METERED = HookReply(0)
"""A meter hook that charged (or found nothing new): silent, exit 0."""


def meter_failed(message: str) -> HookReply:
    """A meter hook that could not charge: one line on stderr, exit 1 (never 2, see above)."""
    line = " ".join(clean_text(message, limit=MAX_REASON).split()) or "token-exchange meter failed"
    return HookReply(1, "", line + "\n")
