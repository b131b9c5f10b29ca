"""Metering real LLM usage from the files coding agents already write (issue 18, parts 3, 4 and 6).

Pure library code: parsers for Claude Code transcripts and hook input, Codex rollout files and
aider analytics logs, per-file read offsets, usage pricing, the Claude Code settings merge and the
UserPromptSubmit block protocol.  Nothing here touches the ledger, the config or the CLI.

Modules: ``records`` (the ``Usage`` record, ``ReadResult``, ``MeterError``), ``claude_code``,
``codex``, ``aider``, ``offsets``, ``pricing``, ``claude_settings``, ``guard``.

A Claude Code ``Stop`` / ``SubagentStop`` / ``SessionEnd`` hook, wired by a caller::

    hook = claude_code.parse_hook_input(sys.stdin.buffer.read())      # MeterError: one line
    files = claude_code.files_for_hook(hook)
    state = offsets.load(state_dir / f"{hook.session_id}.json")       # one small file per session
    read = claude_code.read_session(files, state, session_id=hook.session_id,
                                    final_files=claude_code.final_files_for(hook, files))
    for usage in read.records:                                         # charge, idempotently
        name = pricing.match_model(model_patterns, usage.model)
        charge(txn_id=f"meter:{usage.record_id}", units=pricing.cost(prices[name], usage))
    offsets.save(state_dir / f"{hook.session_id}.json", read.state)   # only after charging
    reply = guard.METERED                                              # exit 0, silent; never 2

Codex and aider files go through ``offsets.advance(path, state.get(path), codex.reader_for(path))``
(or ``aider.reader_for``) and ``state.with_mark(path, advance.mark)`` the same way.
"""
