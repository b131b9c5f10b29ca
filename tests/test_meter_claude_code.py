"""Claude Code metering: hook input, the session's files, transcripts in the real line format.

Fixture lines follow what Claude Code writes (code.claude.com/docs/en/hooks for the hook input;
anthropics/claude-code #84223 / #93620 / #27361 on GitHub and ryoppippi/ccusage src/data-loader.ts
for transcript lines): one ``assistant`` line per content block sharing ``message.id``, early
lines with a snapshot ``output_tokens`` and ``stop_reason: null``, the final one with the real
count; subagent files under ``<session>/subagents/``; ``<synthetic>`` lines for local messages.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from token_exchange.meter import claude_code as cc
from token_exchange.meter import offsets
from token_exchange.meter.records import MeterError, Usage, totals

SID = "0b5e3a52-8a8f-4d2c-9a51-3f0d3e1c2b7a"
MODEL = "claude-sonnet-4-5-20250929"


# --- writers for the real formats -------------------------------------------------------------
def assistant(mid: str, *, out: int, inp: int = 3, cw: int = 0, cr: int = 0, stop: str | None = None,
              model: str = MODEL, side: bool = False, agent: str | None = None, sid: str = SID,
              block: str = "text", ts: str = "2026-03-01T10:00:00.000Z", **extra: Any) -> dict[str, Any]:
    content: dict[str, Any] = ({"type": "text", "text": "Working on it."} if block == "text" else
                               {"type": "tool_use", "id": f"toolu_{mid[-6:]}", "name": "Bash",
                                "input": {"command": "ls"}} if block == "tool_use" else
                               {"type": "thinking", "thinking": "...", "signature": "sig"})
    line: dict[str, Any] = {
        "parentUuid": "6c1c4c1e-0000-4000-8000-000000000001", "isSidechain": side, "userType": "external",
        "cwd": "/work/repo", "sessionId": sid, "version": "2.1.233", "gitBranch": "main",
        "message": {"id": mid, "type": "message", "role": "assistant", "model": model, "content": [content],
                    "stop_reason": stop, "stop_sequence": None,
                    "usage": {"input_tokens": inp, "cache_creation_input_tokens": cw,
                              "cache_read_input_tokens": cr,
                              "cache_creation": {"ephemeral_5m_input_tokens": cw, "ephemeral_1h_input_tokens": 0},
                              "output_tokens": out, "service_tier": "standard"}},
        "requestId": f"req_{mid[-8:]}", "type": "assistant", "uuid": f"u-{mid}-{out}", "timestamp": ts,
    }
    if agent is not None:
        line["agentId"] = agent
    line.update(extra)
    return line


def user(text: str = "Fix the failing test", sid: str = SID) -> dict[str, Any]:
    return {"parentUuid": None, "isSidechain": False, "userType": "external", "cwd": "/work/repo",
            "sessionId": sid, "version": "2.1.233", "gitBranch": "main", "type": "user",
            "message": {"role": "user", "content": text}, "uuid": "u-user", "timestamp": "2026-03-01T09:59:59.000Z"}


def agent_result(sid: str = SID) -> dict[str, Any]:
    """A tool_result line of the Agent tool: it reports the subagent's total usage, which must
    not be charged again (the subagent's own file is)."""
    return {"type": "user", "sessionId": sid, "isSidechain": False,
            "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                                     "content": [{"type": "text", "text": "done"}]}]},
            "toolUseResult": {"status": "completed", "totalTokens": 99999, "totalToolUseCount": 3,
                              "usage": {"input_tokens": 5000, "output_tokens": 4000,
                                        "cache_read_input_tokens": 90000}},
            "uuid": "u-result", "timestamp": "2026-03-01T10:01:00.000Z"}


def line_of(obj: object) -> str:
    return obj if isinstance(obj, str) else json.dumps(obj)


def write(path: Path, *objs: object, end: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(line_of(o) for o in objs) + end)
    return path


def append(path: Path, *objs: object, end: str = "\n") -> None:
    with path.open("a") as f:
        f.write("\n".join(line_of(o) for o in objs) + end)


def one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text and 0 < len(text) < 300, text
    return text


# --- hook input -------------------------------------------------------------------------------
def test_stop_hook_input_from_the_docs() -> None:
    hook = cc.parse_hook_input(json.dumps({
        "session_id": "abc123", "transcript_path": "~/.claude/projects/p/abc123.jsonl", "cwd": "/Users/x",
        "permission_mode": "default", "hook_event_name": "Stop", "stop_hook_active": True,
        "last_assistant_message": "I've completed the refactoring.", "background_tasks": [],
        "session_crons": [{"id": "cron-001", "schedule": "0 9 * * 1-5"}], "effort": {"level": "high"},
        "some_future_field": {"nested": [1, 2]}}).encode())
    assert hook.event == "Stop" and hook.session_id == "abc123" and hook.stop_hook_active is True
    assert hook.transcript() == Path(os.path.expanduser("~/.claude/projects/p/abc123.jsonl"))
    assert hook.cwd == "/Users/x" and hook.permission_mode == "default"


def test_subagent_stop_and_session_end_inputs() -> None:
    sub = cc.parse_hook_input(json.dumps({
        "session_id": "abc123", "transcript_path": "/h/.claude/projects/p/abc123.jsonl", "cwd": "/w",
        "hook_event_name": "SubagentStop", "stop_hook_active": False, "agent_id": "def456",
        "agent_type": "Explore", "agent_transcript_path": "/h/.claude/projects/p/abc123/subagents/agent-def456.jsonl",
        "last_assistant_message": "Analysis complete."}))
    assert sub.agent_id == "def456" and sub.agent_type == "Explore"
    assert sub.agent_transcript_path == Path("/h/.claude/projects/p/abc123/subagents/agent-def456.jsonl")
    end = cc.parse_hook_input('{"session_id": "abc123", "transcript_path": "/t/abc123.jsonl", '
                              '"cwd": "/w", "hook_event_name": "SessionEnd", "reason": "prompt_input_exit"}')
    assert end.event == "SessionEnd" and end.reason == "prompt_input_exit"
    prompt = cc.parse_hook_input('{"session_id": "s1", "transcript_path": "/t/s1.jsonl", "cwd": "/w", '
                                 '"hook_event_name": "UserPromptSubmit", "prompt": "Write a function"}')
    assert prompt.prompt == "Write a function"


@pytest.mark.parametrize("data, fragment", [
    (b"", "empty"),
    (b"   \n", "empty"),
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'"Stop"', "JSON object"),
    (b'{"hook_event_name": "Stop"}', "session_id is missing"),
    (b'{"session_id": "s", "transcript_path": "/t.jsonl"}', "hook_event_name is missing"),
    (b'{"session_id": 12, "hook_event_name": "Stop"}', "session_id must be a string"),
    (b'{"session_id": "../../etc", "hook_event_name": "Stop"}', "not a session id"),
    (b'{"session_id": "s", "hook_event_name": "Stop; rm -rf /"}', "not an event name"),
    (b'{"session_id": "s", "hook_event_name": "Stop", "stop_hook_active": "yes"}', "true or false"),
    (b'{"session_id": "s", "hook_event_name": "Stop", "transcript_path": ["a"]}', "must be a string"),
    (b'{"session_id": "s", "hook_event_name": "Stop", "transcript_path": "relative/t.jsonl"}', "absolute"),
    (b'{"session_id": "s", "hook_event_name": "Stop", "cwd": "/a\\u0000b"}', "NUL"),
    (b'{"session_id": "' + b"a" * 5000 + b'", "hook_event_name": "Stop"}', "longer than"),
    (b'{"session_id": "s", "hook_event_name": "Stop", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "not valid JSON"),
])
def test_hostile_hook_input_is_one_line(data: bytes, fragment: str) -> None:
    with pytest.raises(MeterError) as e:
        cc.parse_hook_input(data)
    assert fragment in one_line(e.value)


def test_oversized_hook_input_is_refused_before_parsing() -> None:
    with pytest.raises(MeterError, match="larger than"):
        cc.parse_hook_input(b'{"a": "' + b"x" * 2000 + b'"}', max_bytes=1000)


def test_hook_without_transcript_path() -> None:
    hook = cc.parse_hook_input('{"session_id": "s", "hook_event_name": "Stop"}')
    with pytest.raises(MeterError, match="no transcript_path"):
        hook.transcript()


# --- the session's files ----------------------------------------------------------------------
def test_session_files_main_then_subagents_and_workflow_agents(tmp_path: Path) -> None:
    main = write(tmp_path / f"{SID}.jsonl", user())
    sub = tmp_path / SID / "subagents"
    a = write(sub / "agent-a1f.jsonl", user())
    b = write(sub / "workflows" / "wf_8ca2332b-21c" / "agent-ab84.jsonl", user())
    write(sub / "agent-a1f.meta.json", {"agentType": "Explore"})
    write(sub / "workflows" / "wf_8ca2332b-21c" / "journal.jsonl", {"started": 1})
    write(sub / "notes.jsonl", user())
    (sub / "agent-dir.jsonl").mkdir()
    elsewhere = write(tmp_path / "elsewhere" / "agent-zz.jsonl", user())
    (sub / "linked").symlink_to(elsewhere.parent, target_is_directory=True)
    (sub / "agent-link.jsonl").symlink_to(elsewhere)
    assert cc.session_files(main) == [main, a, b]
    assert cc.session_files(main, SID, extra=[a, elsewhere]) == [main, a, b, elsewhere]
    other = write(tmp_path / "other.jsonl", user())
    assert cc.session_files(other) == [other]


def test_files_for_hook_and_final_policy(tmp_path: Path) -> None:
    main = write(tmp_path / f"{SID}.jsonl", user())
    agent = write(tmp_path / SID / "subagents" / "agent-x.jsonl", user())
    base = {"session_id": SID, "transcript_path": str(main), "cwd": "/w"}
    stop = cc.parse_hook_input(json.dumps({**base, "hook_event_name": "Stop"}))
    files = cc.files_for_hook(stop)
    assert files == [main, agent]
    assert cc.final_files_for(stop, files) == frozenset()
    sub = cc.parse_hook_input(json.dumps({**base, "hook_event_name": "SubagentStop", "agent_transcript_path": str(agent)}))
    assert cc.final_files_for(sub, files) == {offsets.key(agent)}
    end = cc.parse_hook_input(json.dumps({**base, "hook_event_name": "SessionEnd", "reason": "other"}))
    assert cc.final_files_for(end, files) == {offsets.key(main), offsets.key(agent)}


# --- one transcript ---------------------------------------------------------------------------
def test_streaming_lines_of_one_message_are_charged_once_with_the_final_figures(tmp_path: Path) -> None:
    t = write(tmp_path / "t.jsonl", user(),
              assistant("msg_01A", out=1, inp=4, cw=2188, cr=13447, block="thinking"),
              assistant("msg_01A", out=1, inp=4, cw=2188, cr=13447, block="text"),
              assistant("msg_01A", out=312, inp=4, cw=2188, cr=13447, block="tool_use", stop="tool_use"),
              agent_result())
    r = cc.read_transcript(t)
    assert len(r.records) == 1
    u = r.records[0]
    assert (u.record_id, u.model, u.session_id) == ("cc:msg_01A", MODEL, SID)
    assert (u.input_tokens, u.output_tokens, u.cache_write_tokens, u.cache_read_tokens, u.reasoning_tokens) == \
           (4, 312, 2188, 13447, 0)
    assert u.where == f"{t}:4" and u.timestamp == "2026-03-01T10:00:00.000Z"
    assert (r.skipped, r.line, r.offset) == (0, 5, t.stat().st_size)


def test_backfilled_final_usage_on_every_line_is_charged_once(tmp_path: Path) -> None:
    t = write(tmp_path / "t.jsonl", *[assistant("msg_B", out=77, inp=9, stop="end_turn", block=b)
                                      for b in ("thinking", "text", "tool_use")])
    r = cc.read_transcript(t)
    assert [(u.record_id, u.output_tokens) for u in r.records] == [("cc:msg_B", 77)]


def test_a_message_without_stop_reason_waits_for_the_next_request(tmp_path: Path) -> None:
    t = write(tmp_path / "t.jsonl", assistant("msg_1", out=2), assistant("msg_1", out=140))
    first = cc.read_transcript(t)
    assert first.records == () and first.offset == t.stat().st_size
    pending = first.carry["pending"]
    assert isinstance(pending, list) and [p["usage"]["out"] for p in pending] == [140]
    append(t, user("next"), assistant("msg_2", out=5))
    second = cc.read_transcript(t, first.offset, first.line, first.carry)
    assert [(u.record_id, u.output_tokens, u.where) for u in second.records] == [("cc:msg_1", 140, f"{t}:2")]
    final = cc.read_transcript(t, second.offset, second.line, second.carry, final=True)
    assert [(u.record_id, u.output_tokens) for u in final.records] == [("cc:msg_2", 5)]
    again = cc.read_transcript(t, final.offset, final.line, final.carry, final=True)
    assert again.records == ()


def test_highest_output_line_wins_and_later_lines_of_a_settled_message_are_ignored(tmp_path: Path) -> None:
    t = write(tmp_path / "t.jsonl", assistant("msg_1", out=8), assistant("msg_1", out=260),
              assistant("msg_1", out=9), assistant("msg_2", out=1),
              assistant("msg_1", out=999, stop="end_turn"))  # a late line after the next request began
    r = cc.read_transcript(t, final=True)
    assert [(u.record_id, u.output_tokens) for u in r.records] == [("cc:msg_1", 260), ("cc:msg_2", 1)]


def test_synthetic_lines_user_lines_and_zero_usage_are_not_charged(tmp_path: Path) -> None:
    t = write(tmp_path / "t.jsonl", user(),
              assistant("msg_s", out=0, inp=0, model="<synthetic>", stop="stop_sequence", isApiErrorMessage=True),
              assistant("msg_z", out=0, inp=0, stop="end_turn"),
              agent_result(),
              {"type": "summary", "summary": "Fixing tests", "leafUuid": "x"},
              assistant("msg_r", out=10, stop="end_turn"))
    r = cc.read_transcript(t)
    assert [u.record_id for u in r.records] == ["cc:msg_r"] and r.skipped == 0


def test_truncated_final_line_is_left_for_the_next_read(tmp_path: Path) -> None:
    full = json.dumps(assistant("msg_T", out=50, stop="end_turn"))
    t = write(tmp_path / "t.jsonl", assistant("msg_1", out=5, stop="end_turn"), full[:40], end="")
    r = cc.read_transcript(t)
    assert [u.record_id for u in r.records] == ["cc:msg_1"] and r.skipped == 0
    assert r.offset == len(line_of(assistant("msg_1", out=5, stop="end_turn"))) + 1 and r.line == 1
    with t.open("a") as f:
        f.write(full[40:] + "\n")
    r2 = cc.read_transcript(t, r.offset, r.line, r.carry)
    assert [(u.record_id, u.output_tokens, u.where) for u in r2.records] == [("cc:msg_T", 50, f"{t}:2")]


def bad_usage(**usage: object) -> dict[str, Any]:
    line = assistant("msg_bad", out=1, stop="end_turn")
    line["message"]["usage"] = usage
    return line


def test_malformed_lines_are_skipped_and_counted_with_reasons(tmp_path: Path) -> None:
    no_message = assistant("msg_x", out=1)
    del no_message["message"]
    no_id = assistant("msg_x", out=1)
    del no_id["message"]["id"]
    t = write(tmp_path / "t.jsonl",
              "{not json",                                             # 1
              "[1, 2, 3]",                                             # 2
              "42",                                                    # 3
              '"a string"',                                            # 4
              "null",                                                  # 5
              no_message,                                              # 6
              no_id,                                                   # 7
              bad_usage(input_tokens="3", output_tokens=1),            # 8
              bad_usage(input_tokens=-3, output_tokens=1),             # 9
              bad_usage(input_tokens=3, output_tokens=1.5),            # 10
              bad_usage(input_tokens=True, output_tokens=1),           # 11
              bad_usage(input_tokens=10**30, output_tokens=1),         # 12
              bad_usage(input_tokens=3),                               # 13
              bad_usage(input_tokens=3, output_tokens=1, cache_read_input_tokens=-1),  # 14
              '{"type": "assistant", "message": {"id": "m", "usage": [1]}}',          # 15
              "\xff\xfe garbage",                                      # 16
              "",                                                      # blank: not counted
              assistant("msg_ok", out=20, inp=7, cw=1, cr=2, stop="end_turn", unknownField={"x": 1}))
    r = cc.read_transcript(t)
    assert [(u.record_id, u.input_tokens, u.output_tokens, u.cache_write_tokens, u.cache_read_tokens)
            for u in r.records] == [("cc:msg_ok", 7, 20, 1, 2)]
    assert r.skipped == 16
    assert r.reasons[0] == "line 1: invalid JSON"
    assert r.reasons[1] == "line 2: not a JSON object (list)"
    assert "line 6: assistant line without a message object" in r.reasons
    assert "line 7: assistant message without a usable id" in r.reasons
    assert any(x.startswith("line 8: usage.input_tokens is not a valid token count") for x in r.reasons)
    assert "line 13: usage.output_tokens is missing" in r.reasons
    assert "line 15: assistant message without a usage object" in r.reasons
    assert all(len(x) < 120 for x in r.reasons)


def test_null_optional_cache_fields_count_as_zero(tmp_path: Path) -> None:
    t = write(tmp_path / "t.jsonl", bad_usage(input_tokens=5, output_tokens=6, cache_creation_input_tokens=None))
    (u,) = cc.read_transcript(t).records
    assert (u.input_tokens, u.output_tokens, u.cache_write_tokens, u.cache_read_tokens) == (5, 6, 0, 0)


def test_a_line_longer_than_the_byte_budget_is_skipped_not_stalled(tmp_path: Path) -> None:
    big = assistant("msg_big", out=3, stop="end_turn")
    big["message"]["content"] = [{"type": "text", "text": "x" * 5000}]
    t = write(tmp_path / "t.jsonl", big, assistant("msg_after", out=4, stop="end_turn"))
    state = offsets.OffsetState()
    seen: list[str] = []
    reasons: list[str] = []
    for _ in range(3):
        r = cc.read_session([t], state, max_bytes=1024)
        seen += [u.record_id for u in r.records]
        reasons += r.reasons
        state = r.state
    assert seen == ["cc:msg_after"]
    assert any("line 1: longer than 1024 bytes" in x for x in reasons)


def test_unreadable_transcripts_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(MeterError) as e:
        cc.read_transcript(tmp_path / "missing.jsonl")
    assert "no such file" in one_line(e.value)
    with pytest.raises(MeterError) as e:
        cc.read_transcript(tmp_path)
    assert "not a regular file" in one_line(e.value)
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(MeterError, match="not a regular file"):
        cc.read_transcript(fifo)  # must not block waiting for a writer


# --- a whole session ---------------------------------------------------------------------------
def test_subagent_sharing_an_id_with_main_is_charged_once(tmp_path: Path) -> None:
    main = write(tmp_path / f"{SID}.jsonl", user(),
                 assistant("msg_P", out=1, inp=6, cr=500, block="tool_use"),
                 assistant("msg_P", out=88, inp=6, cr=500, block="tool_use", stop="tool_use"),
                 agent_result())
    agent = write(tmp_path / SID / "subagents" / "agent-a7c.jsonl",
                  assistant("msg_P", out=88, inp=6, cr=500, side=True, agent="a7c", stop="tool_use"),
                  assistant("msg_S1", out=3, inp=11, side=True, agent="a7c"),
                  assistant("msg_S1", out=640, inp=11, side=True, agent="a7c"),
                  assistant("msg_S2", out=2, inp=12, side=True, agent="a7c"),
                  assistant("msg_S2", out=75, inp=12, side=True, agent="a7c", stop="end_turn"))
    r = cc.read_session(cc.session_files(main), offsets.OffsetState(), session_id=SID)
    assert [(u.record_id, u.output_tokens, u.where) for u in r.records] == [
        ("cc:msg_P", 88, f"{main}:3"), ("cc:msg_S1", 640, f"{agent}:3"), ("cc:msg_S2", 75, f"{agent}:5")]
    t = totals(r.records)
    assert (t.input_tokens, t.output_tokens, t.cache_read_tokens) == (29, 803, 500)
    again = cc.read_session(cc.session_files(main), r.state, session_id=SID)
    assert again.records == () and again.skipped == 0


def test_an_id_charged_from_main_in_one_run_is_not_charged_from_a_subagent_later(tmp_path: Path) -> None:
    main = write(tmp_path / f"{SID}.jsonl", assistant("msg_P", out=40, stop="tool_use"))
    first = cc.read_session(cc.session_files(main), offsets.OffsetState(), session_id=SID)
    assert [u.record_id for u in first.records] == ["cc:msg_P"]
    write(tmp_path / SID / "subagents" / "agent-q.jsonl",
          assistant("msg_P", out=41, side=True, agent="q", stop="tool_use"),
          assistant("msg_Q", out=7, side=True, agent="q", stop="end_turn"))
    second = cc.read_session(cc.session_files(main), first.state, session_id=SID)
    assert [u.record_id for u in second.records] == ["cc:msg_Q"]


def test_a_vanished_subagent_file_does_not_stop_the_session_but_a_missing_main_does(tmp_path: Path) -> None:
    main = write(tmp_path / f"{SID}.jsonl", assistant("msg_1", out=3, stop="end_turn"))
    gone = tmp_path / SID / "subagents" / "agent-gone.jsonl"
    r = cc.read_session([main, gone], offsets.OffsetState(), session_id=SID)
    assert [u.record_id for u in r.records] == ["cc:msg_1"]
    assert any("agent-gone.jsonl: no such file" in x for x in r.reasons)
    assert r.state.get(gone) is None
    with pytest.raises(MeterError) as e:
        cc.read_session([tmp_path / "missing.jsonl", main], offsets.OffsetState())
    assert "no such file" in one_line(e.value)


def test_interleaved_sidechains_in_the_main_file_do_not_settle_each_other(tmp_path: Path) -> None:
    t = write(tmp_path / "t.jsonl",
              assistant("msg_A", out=2, side=True, agent="aaa"),
              assistant("msg_B", out=2, side=True, agent="bbb"),
              assistant("msg_A", out=90, side=True, agent="aaa"),
              assistant("msg_B", out=70, side=True, agent="bbb"),
              assistant("msg_A2", out=1, side=True, agent="aaa"))
    r = cc.read_transcript(t)
    assert [(u.record_id, u.output_tokens) for u in r.records] == [("cc:msg_A", 90)]
    r2 = cc.read_transcript(t, r.offset, r.line, r.carry, final=True)
    assert sorted((u.record_id, u.output_tokens) for u in r2.records) == [("cc:msg_A2", 1), ("cc:msg_B", 70)]


def test_session_state_survives_save_and_load_and_a_replay_charges_nothing(tmp_path: Path) -> None:
    main = write(tmp_path / f"{SID}.jsonl", user(), assistant("msg_1", out=3, stop="end_turn"),
                 assistant("msg_2", out=4))
    state_path = tmp_path / "state" / f"{SID}.json"
    r = cc.read_session(cc.session_files(main), offsets.load(state_path), session_id=SID)
    assert [u.record_id for u in r.records] == ["cc:msg_1"]
    offsets.save(state_path, r.state)
    append(main, assistant("msg_3", out=5, stop="end_turn"))
    r2 = cc.read_session(cc.session_files(main), offsets.load(state_path), session_id=SID)
    assert [(u.record_id, u.where) for u in r2.records] == [("cc:msg_2", f"{main}:3"), ("cc:msg_3", f"{main}:4")]
    # Replaying from scratch (state lost) yields the same ids: the ledger charges nothing new.
    replay = cc.read_session(cc.session_files(main), offsets.OffsetState(), session_id=SID,
                             final_files=[str(main)])
    assert {u.record_id for u in replay.records} == {"cc:msg_1", "cc:msg_2", "cc:msg_3"}


def test_session_end_charges_what_is_still_pending(tmp_path: Path) -> None:
    main = write(tmp_path / f"{SID}.jsonl", assistant("msg_1", out=3), assistant("msg_1", out=30))
    agent = write(tmp_path / SID / "subagents" / "agent-z.jsonl", assistant("msg_z", out=12, side=True, agent="z"))
    base = {"session_id": SID, "transcript_path": str(main), "cwd": "/w"}
    stop = cc.parse_hook_input(json.dumps({**base, "hook_event_name": "Stop"}))
    files = cc.files_for_hook(stop)
    assert files == [main, agent]
    r = cc.read_session(files, offsets.OffsetState(), session_id=SID, final_files=cc.final_files_for(stop, files))
    assert r.records == () and r.pending == 2
    end = cc.parse_hook_input(json.dumps({**base, "hook_event_name": "SessionEnd", "reason": "other"}))
    r2 = cc.read_session(files, r.state, session_id=SID, final_files=cc.final_files_for(end, files))
    assert [(u.record_id, u.output_tokens) for u in r2.records] == [("cc:msg_1", 30), ("cc:msg_z", 12)]


def test_a_replaced_transcript_is_read_again_from_the_start(tmp_path: Path) -> None:
    main = write(tmp_path / f"{SID}.jsonl", assistant("msg_1", out=3, stop="end_turn"))
    r = cc.read_session([main], offsets.OffsetState(), session_id=SID)
    new = write(tmp_path / "new.jsonl", assistant("msg_1", out=3, stop="end_turn"),
                assistant("msg_9", out=9, stop="end_turn"))
    os.replace(new, main)
    r2 = cc.read_session([main], r.state, session_id=SID)
    # The new file is read from 0; msg_1 was charged before the replacement and is not yielded again.
    assert [u.record_id for u in r2.records] == ["cc:msg_9"]
    assert any("replaced, read again from the start" in x for x in r2.reasons)


# --- properties -------------------------------------------------------------------------------
@st.composite
def transcripts(draw: st.DrawFn) -> list[str]:
    """A realistic transcript: messages streamed over 1..4 lines (rising output, optional final
    stop_reason), user lines, junk, synthetic lines, sidechain chains and late lines."""
    lines: list[str] = []
    n_messages = draw(st.integers(1, 12))
    made: list[str] = []
    for i in range(n_messages):
        chain = draw(st.sampled_from([None, "aaa", "bbb"]))
        mid = f"msg_{i:02d}"
        made.append(mid)
        outs = sorted(draw(st.lists(st.integers(0, 500), min_size=1, max_size=4)))
        stop = draw(st.booleans())
        inp, cw, cr = draw(st.integers(0, 50)), draw(st.integers(0, 3000)), draw(st.integers(0, 90000))
        for j, out in enumerate(outs):
            last = j == len(outs) - 1
            lines.append(json.dumps(assistant(mid, out=out, inp=inp, cw=cw, cr=cr,
                                              stop="tool_use" if stop and last else None,
                                              side=chain is not None, agent=chain)))
            extra = draw(st.sampled_from(["", "", "user", "junk", "synthetic", "late"]))
            if extra == "user":
                lines.append(json.dumps(user()))
            elif extra == "junk":
                lines.append(draw(st.sampled_from(['{"type": "assistant", "message": 5}', "{oops", "[]", "7"])))
            elif extra == "synthetic":
                lines.append(json.dumps(assistant(f"syn_{i}_{j}", out=0, inp=0, model="<synthetic>")))
            elif extra == "late" and made:
                lines.append(json.dumps(assistant(draw(st.sampled_from(made)), out=draw(st.integers(0, 900)))))
    return lines


@settings(settings.get_profile("fuzz"), suppress_health_check=[HealthCheck.too_slow])
@given(lines=transcripts(), data=st.data())
def test_chunked_incremental_reads_equal_one_full_read(lines: list[str], data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as d:
        full_path = write(Path(d) / "full.jsonl", *lines)
        full = cc.read_session([full_path], offsets.OffsetState(), session_id=SID, final_files=[str(full_path)])

        path = Path(d) / f"{SID}.jsonl"
        path.write_text("")
        state_path = Path(d) / "state.json"
        text = "".join(x + "\n" for x in lines)
        cuts = sorted(set(data.draw(st.lists(st.integers(0, len(text)), max_size=8))))
        got: list[Usage] = []
        start = 0
        for cut in [*cuts, len(text)]:
            with path.open("a") as f:
                f.write(text[start:cut])  # may end in the middle of a line
            start = cut
            r = cc.read_session([path], offsets.load(state_path), session_id=SID)
            offsets.save(state_path, r.state)
            got += r.records
        r = cc.read_session([path], offsets.load(state_path), session_id=SID, final_files=[str(path)])
        got += r.records

        ids = [u.record_id for u in got]
        assert len(ids) == len(set(ids)), "a record was yielded twice"
        strip = [(u.record_id, u.input_tokens, u.output_tokens, u.cache_write_tokens, u.cache_read_tokens)
                 for u in got]
        expected = [(u.record_id, u.input_tokens, u.output_tokens, u.cache_write_tokens, u.cache_read_tokens)
                    for u in full.records]
        assert sorted(strip) == sorted(expected)
        assert totals(got) == totals(full.records)
        assert sum(1 for _ in full.records) == len({u.record_id for u in full.records})


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=12)
usage_like = st.dictionaries(st.sampled_from(["input_tokens", "output_tokens", "cache_creation_input_tokens",
                                              "cache_read_input_tokens", "service_tier"]), json_values)
assistant_like = st.fixed_dictionaries({
    "type": st.sampled_from(["assistant", "user", 3]),
    "isSidechain": json_values, "agentId": json_values, "sessionId": json_values, "timestamp": json_values,
    "message": st.one_of(json_values, st.fixed_dictionaries({
        "id": st.one_of(json_values, st.text(min_size=1, max_size=300)), "model": st.one_of(json_values, st.just("<synthetic>")),
        "stop_reason": json_values, "usage": st.one_of(json_values, usage_like)}))})
hostile_line = st.one_of(st.binary(max_size=200), assistant_like.map(lambda o: json.dumps(o).encode()),
                         json_values.map(lambda o: json.dumps(o).encode()))


@settings(settings.get_profile("fuzz"), suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(hostile_line, max_size=12), final=st.booleans())
def test_hostile_transcript_bytes_never_raise(chunks: list[bytes], final: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.jsonl"
        path.write_bytes(b"\n".join(chunks))
        r = cc.read_session([path], offsets.OffsetState(), final_files=[str(path)] if final else ())
        for u in r.records:
            assert u.total_tokens > 0 and u.record_id.startswith("cc:")
        assert r.skipped >= 0 and all("\n" not in x for x in r.reasons)


@settings(settings.get_profile("fuzz"))
@given(data=st.one_of(st.binary(max_size=300), json_values.map(lambda o: json.dumps(o).encode()),
                      st.dictionaries(st.sampled_from(["session_id", "hook_event_name", "transcript_path",
                                                       "stop_hook_active", "cwd", "reason", "agent_transcript_path",
                                                       "prompt"]), json_values).map(lambda o: json.dumps(o).encode())))
def test_hostile_hook_input_raises_only_the_one_line_error(data: bytes) -> None:
    try:
        cc.parse_hook_input(data)
    except MeterError as e:
        one_line(e)
