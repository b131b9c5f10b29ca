"""The .claude/settings.json merge (code.claude.com/docs/en/hooks "Configuration") and the hook
replies of the UserPromptSubmit guard and the meter ("Exit code output", "Decision control")."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from token_exchange.meter import claude_settings as cs
from token_exchange.meter import guard

METER = "tx meter claude-code"
GUARD = "tx guard claude-code"

EXISTING = {
    "$schema": "https://json.schemastore.org/claude-code-settings.json",
    "permissions": {"allow": ["Bash(npm run lint)"], "deny": ["Read(./.env)"]},
    "env": {"CLAUDE_CODE_ENABLE_TELEMETRY": "1"},
    "hooks": {
        "PostToolUse": [{"matcher": "Edit|Write", "hooks": [{"type": "command", "command": "npx prettier --write"}]}],
        "Stop": [{"hooks": [{"type": "command", "command": "notify-send done", "timeout": 5}]}],
        "UserPromptSubmit": [{"hooks": [{"type": "command", "command": "./inject-context.sh"},
                                        {"type": "http", "url": "http://localhost:8080/h"}]}],
    },
    "statusLine": {"type": "command", "command": "~/.claude/statusline.sh"},
}


def commands(doc: dict[str, object], event: str) -> list[str]:
    hooks = doc.get("hooks", {})
    assert isinstance(hooks, dict)
    return [h.get("command", h.get("url")) for g in hooks.get(event, []) for h in g["hooks"]]


def test_install_into_an_empty_or_missing_file() -> None:
    for text in ("", "  \n", "{}"):
        m = cs.install(text, METER, GUARD)
        doc = json.loads(m.text)
        assert m.changed and m.events == ("Stop", "SubagentStop", "SessionEnd", "UserPromptSubmit")
        assert doc == {"hooks": {
            "Stop": [{"hooks": [{"type": "command", "command": METER}]}],
            "SubagentStop": [{"hooks": [{"type": "command", "command": METER}]}],
            "SessionEnd": [{"hooks": [{"type": "command", "command": METER}]}],
            "UserPromptSubmit": [{"hooks": [{"type": "command", "command": GUARD}]}]}}
        assert m.text.endswith("}\n")


def test_install_keeps_everything_and_is_idempotent() -> None:
    text = json.dumps(EXISTING, indent=4)
    m = cs.install(text, METER, GUARD)
    doc = json.loads(m.text)
    assert {k: v for k, v in doc.items() if k != "hooks"} == {k: v for k, v in EXISTING.items() if k != "hooks"}
    assert list(doc) == list(EXISTING)  # key order kept
    assert doc["hooks"]["PostToolUse"] == EXISTING["hooks"]["PostToolUse"]  # type: ignore[index]
    assert commands(doc, "Stop") == ["notify-send done", METER]
    assert commands(doc, "UserPromptSubmit") == ["./inject-context.sh", "http://localhost:8080/h", GUARD]
    again = cs.install(m.text, METER, GUARD)
    assert not again.changed and again.text == m.text and again.events == ()


def test_install_without_a_guard_and_a_partial_install_is_completed() -> None:
    m = cs.install("", METER)
    assert "UserPromptSubmit" not in json.loads(m.text)["hooks"]
    doc = json.loads(m.text)
    del doc["hooks"]["SessionEnd"]
    m2 = cs.install(json.dumps(doc), METER, GUARD)
    assert m2.events == ("SessionEnd", "UserPromptSubmit")


def test_remove_takes_out_only_ours_and_restores_the_original() -> None:
    text = json.dumps(EXISTING, indent=2)
    installed = cs.install(text, METER, GUARD).text
    # A user handler that shares a group with ours must survive.
    doc = json.loads(installed)
    doc["hooks"]["SessionEnd"][0]["hooks"].append({"type": "command", "command": "./cleanup.sh"})
    m = cs.remove(json.dumps(doc), [METER, GUARD])
    out = json.loads(m.text)
    assert m.changed and set(m.events) == {"Stop", "SubagentStop", "SessionEnd", "UserPromptSubmit"}
    assert out["hooks"]["SessionEnd"] == [{"hooks": [{"type": "command", "command": "./cleanup.sh"}]}]
    del out["hooks"]["SessionEnd"]
    assert out == EXISTING
    assert json.loads(cs.remove(installed, [METER, GUARD]).text) == EXISTING
    untouched = cs.remove(text, [METER, GUARD])
    assert not untouched.changed and untouched.text == text


def test_install_then_remove_on_a_file_without_hooks_round_trips() -> None:
    original = json.dumps({"model": "opus", "env": {"A": "1"}})
    back = cs.remove(cs.install(original, METER, GUARD).text, (METER, GUARD))
    assert json.loads(back.text) == json.loads(original)


def test_similar_commands_are_not_ours() -> None:
    doc = {"hooks": {"Stop": [{"hooks": [{"type": "command", "command": METER + " --verbose"},
                                         {"type": "http", "url": METER}]}]}}
    assert not cs.remove(json.dumps(doc), [METER]).changed
    m = cs.install(json.dumps(doc), METER)
    assert commands(json.loads(m.text), "Stop") == [METER + " --verbose", METER, METER]


@pytest.mark.parametrize("text, fragment", [
    ("{", "not valid JSON"),
    ("[]", "must contain a JSON object"),
    ('{"hooks": []}', '"hooks" must be an object'),
    ('{"hooks": {"Stop": {}}}', "hooks.Stop must be a list"),
    ('{"hooks": {"Stop": [1]}}', "hooks.Stop[0] must be an object"),
    ('{"hooks": {"Stop": [{"hooks": {}}]}}', "hooks.Stop[0] must be an object"),
    ('{"a": 1, "a": 2}', "duplicate key"),
    ("[" * 100000 + "]" * 100000, "not valid JSON"),
])
def test_invalid_settings_are_one_line_errors(text: str, fragment: str) -> None:
    with pytest.raises(cs.SettingsError) as e:
        cs.install(text, METER, GUARD)
    assert fragment in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(cs.SettingsError) as e:
        cs.remove(text, [METER])
    assert fragment in str(e.value)


def test_bad_commands_and_disabled_hooks() -> None:
    with pytest.raises(cs.SettingsError, match="meter command"):
        cs.install("", "  ")
    m = cs.install('{"disableAllHooks": true}', METER)
    assert m.warnings and "disableAllHooks" in m.warnings[0]


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10))
json_values = st.recursive(json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                           max_leaves=10)
handler_like = st.one_of(json_values, st.fixed_dictionaries({"type": st.just("command"),
                                                            "command": st.sampled_from([METER, "x"])}))
group_like = st.one_of(json_values, st.fixed_dictionaries({"hooks": st.one_of(json_values, st.lists(handler_like))}))
events_like = st.dictionaries(st.sampled_from(["Stop", "SessionEnd", "PreToolUse"]),
                              st.one_of(json_values, st.lists(group_like)))
settings_like = st.dictionaries(st.sampled_from(["hooks", "env", "model"]), st.one_of(json_values, events_like))


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=200), settings_like.map(json.dumps)))
def test_hostile_settings_raise_only_settings_error_and_install_is_idempotent(text: str) -> None:
    try:
        m = cs.install(text, METER, GUARD)
    except cs.SettingsError as e:
        assert "\n" not in str(e)
        return
    assert cs.install(m.text, METER, GUARD).changed is False
    removed = json.loads(cs.remove(m.text, [METER, GUARD]).text)
    left = [h for groups in removed.get("hooks", {}).values() for g in groups for h in g.get("hooks", [])
            if isinstance(h, dict) and h.get("type") == "command" and h.get("command") in (METER, GUARD)]
    assert left == []


# --- guard replies -----------------------------------------------------------------------------
def test_block_by_exit_code_2_with_the_reason_on_stderr() -> None:
    r = guard.block("claude is over its hourly limit (1,000 tokens); capacity frees up at 14:05")
    assert r == guard.HookReply(2, "", "claude is over its hourly limit (1,000 tokens); capacity frees up at 14:05\n")


def test_block_by_json_decision() -> None:
    r = guard.block("insufficient funds", mode="json", suppress_prompt=True)
    assert r.exit_code == 0 and r.stderr == ""
    assert json.loads(r.stdout) == {"decision": "block", "reason": "insufficient funds",
                                    "hookSpecificOutput": {"hookEventName": "UserPromptSubmit",
                                                           "suppressOriginalPrompt": True}}
    with pytest.raises(ValueError):
        guard.block("x", mode="maybe")  # type: ignore[arg-type]


def test_reasons_are_bounded_and_cleaned() -> None:
    r = guard.block("a\x00b" + "x" * 5000)
    assert r.exit_code == 2 and "\x00" not in r.stderr and len(r.stderr) <= guard.MAX_REASON + 1
    assert guard.block("   ").stderr == guard.DEFAULT_REASON + "\n"


def test_allow_is_silent_unless_it_adds_context() -> None:
    assert guard.allow() == guard.HookReply(0, "", "")
    r = guard.allow("Balance: 1,250 tokens")
    assert r.exit_code == 0 and json.loads(r.stdout) == {
        "hookSpecificOutput": {"hookEventName": "UserPromptSubmit", "additionalContext": "Balance: 1,250 tokens"}}
    assert len(json.loads(guard.allow("y" * 50000).stdout)["hookSpecificOutput"]["additionalContext"]) <= 10_000


def test_meter_replies_never_block() -> None:
    assert guard.METERED == guard.HookReply(0, "", "")
    failed = guard.meter_failed("unknown agent 'x'\nset TOKEN_EXCHANGE_AGENT")
    assert failed.exit_code == 1 and failed.stderr == "unknown agent 'x' set TOKEN_EXCHANGE_AGENT\n"


@pytest.mark.parametrize("reply", [guard.block("over the daily limit"), guard.allow("ctx"), guard.allow()])
def test_a_hook_process_emits_the_reply_exactly(tmp_path: Path, reply: guard.HookReply) -> None:
    """The reply is what a real hook process writes: run one that reads stdin and replies."""
    script = tmp_path / "hook.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        from token_exchange.meter import claude_code, guard
        hook = claude_code.parse_hook_input(sys.stdin.buffer.read())
        assert hook.event == "UserPromptSubmit"
        reply = {reply!r}
        sys.stdout.write(reply.stdout)
        sys.stderr.write(reply.stderr)
        sys.exit(reply.exit_code)
    """).replace("HookReply(", "guard.HookReply("))
    stdin = json.dumps({"session_id": "abc123", "transcript_path": "/t/abc123.jsonl", "cwd": "/w",
                        "permission_mode": "default", "hook_event_name": "UserPromptSubmit", "prompt": "hi"})
    proc = subprocess.run([sys.executable, str(script)], input=stdin, capture_output=True, text=True, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (reply.exit_code, reply.stdout, reply.stderr)
