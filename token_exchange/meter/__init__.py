"""Metering real LLM usage from the files coding agents already write (issue 18, parts 3, 4 and 6).

Pure library code: parsers for Claude Code transcripts and hook input, Codex rollout files and
aider analytics logs, per-file read offsets, usage pricing, the Claude Code settings merge and the
UserPromptSubmit block protocol.  Nothing here touches the ledger, the config or the CLI; a caller
reads usage records, charges them by their ``record_id`` (stable across replays, so charging twice
is a no-op), and only then saves the new offsets.

Modules: ``records`` (the ``Usage`` record, ``ReadResult``, ``MeterError``), ``claude_code``,
``codex``, ``aider``, ``offsets``, ``pricing``, ``claude_settings``, ``guard``.
"""
