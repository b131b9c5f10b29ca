"""Codex rollout files in the real line format (openai/codex codex-rs/protocol/src/protocol.rs:
``RolloutLine`` = timestamp + ``type``/``payload``; ``TokenCountEvent`` with ``TokenUsageInfo``)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.meterkit import assert_same_records, piecewise_records
from token_exchange.meter import codex, offsets

SID = "019a2b3c-4d5e-7f60-8a9b-0c1d2e3f4a5b"
NAME = f"rollout-2026-03-01T10-00-00-{SID}.jsonl"


def meta(sid: str = SID) -> dict[str, Any]:
    return {"timestamp": "2026-03-01T10:00:00.000Z", "type": "session_meta",
            "payload": {"id": sid, "timestamp": "2026-03-01T10:00:00.000Z", "cwd": "/work/repo",
                        "originator": "codex_cli_rs", "cli_version": "0.128.0", "source": "cli",
                        "model_provider": "openai", "base_instructions": {"text": "You are Codex."}},
            "git": {"commit_hash": "abc", "branch": "main"}}


def turn(model: str = "gpt-5.1-codex") -> dict[str, Any]:
    return {"timestamp": "2026-03-01T10:00:01.000Z", "type": "turn_context",
            "payload": {"turn_id": "t1", "cwd": "/work/repo", "approval_policy": "on-request",
                        "sandbox_policy": {"type": "workspace-write", "network_access": False},
                        "model": model, "effort": "medium", "summary": "auto"}}


def usage(i: int, c: int, o: int, r: int) -> dict[str, int]:
    return {"input_tokens": i, "cached_input_tokens": c, "output_tokens": o,
            "reasoning_output_tokens": r, "total_tokens": i + o}


def count(total: dict[str, int], last: dict[str, int], ts: str = "2026-03-01T10:00:05.000Z") -> dict[str, Any]:
    return {"timestamp": ts, "type": "event_msg",
            "payload": {"type": "token_count",
                        "info": {"total_token_usage": total, "last_token_usage": last, "model_context_window": 272000},
                        "rate_limits": {"primary": {"used_percent": 3.0, "window_minutes": 300, "resets_at": 1772400000},
                                        "secondary": None}}}


def rate_only() -> dict[str, Any]:
    return {"timestamp": "2026-03-01T10:00:06.000Z", "type": "event_msg",
            "payload": {"type": "token_count", "info": None,
                        "rate_limits": {"primary": {"used_percent": 4.0, "window_minutes": 300, "resets_at": None}}}}


def message() -> dict[str, Any]:
    return {"timestamp": "2026-03-01T10:00:04.000Z", "type": "response_item",
            "payload": {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Done."}]}}


def write(path: Path, *objs: object, end: str = "\n") -> Path:
    path.write_text("\n".join(o if isinstance(o, str) else json.dumps(o) for o in objs) + end)
    return path


def test_token_counts_are_charged_with_cached_input_and_reasoning_accounted(tmp_path: Path) -> None:
    t1, t2 = usage(12000, 10000, 900, 600), usage(30000, 27000, 1500, 1000)
    p = write(tmp_path / NAME, meta(), turn(), message(), count(t1, t1),
              count(usage(42000, 37000, 2400, 1600), t2), rate_only())
    r = codex.read_rollout(p)
    assert [(u.input_tokens, u.cache_read_tokens, u.cache_write_tokens, u.output_tokens, u.reasoning_tokens)
            for u in r.records] == [(2000, 10000, 0, 900, 600), (3000, 27000, 0, 1500, 1000)]
    assert {u.model for u in r.records} == {"gpt-5.1-codex"} and {u.session_id for u in r.records} == {SID}
    assert r.records[0].record_id.startswith(f"cx:{SID}:12900:") and r.records[1].record_id.startswith(f"cx:{SID}:44400:")
    assert r.records[0].where == f"{p}:4" and r.records[0].timestamp == "2026-03-01T10:00:05.000Z"
    assert r.skipped == 0
    assert r.records[0].total_tokens == 12900  # non-cached + cached + output: nothing counted twice


def test_repeated_token_count_events_are_charged_once(tmp_path: Path) -> None:
    t1 = usage(1000, 0, 100, 0)
    p = write(tmp_path / NAME, meta(), turn(), count(t1, t1), count(t1, t1), rate_only(), count(t1, t1),
              count(usage(2500, 800, 300, 50), usage(1500, 800, 200, 50)))
    r = codex.read_rollout(p)
    assert [(u.input_tokens, u.cache_read_tokens, u.output_tokens) for u in r.records] == [(1000, 0, 100), (700, 800, 200)]
    # Replaying gives the same ids.
    assert [u.record_id for u in codex.read_rollout(p).records] == [u.record_id for u in r.records]


def test_model_follows_turn_context_and_session_falls_back_to_the_file_name(tmp_path: Path) -> None:
    a, b = usage(100, 0, 10, 0), usage(200, 0, 20, 0)
    p = write(tmp_path / NAME, turn("gpt-5.1-codex"), count(a, a), turn("gpt-5.1-codex-mini"),
              count(usage(300, 0, 30, 0), b))
    r = codex.read_rollout(p)
    assert [u.model for u in r.records] == ["gpt-5.1-codex", "gpt-5.1-codex-mini"]
    assert {u.session_id for u in r.records} == {SID}
    nameless = write(tmp_path / "rollout.jsonl", count(a, a), meta("11111111-1111-1111-1111-111111111111"), count(b, b))
    r2 = codex.read_rollout(nameless)
    assert r2.skipped == 1 and r2.reasons == ("line 1: token_count before any session id is known",)
    assert [u.session_id for u in r2.records] == ["11111111-1111-1111-1111-111111111111"]
    assert codex.session_from_name(NAME) == SID and codex.session_from_name("x.jsonl") == ""


def test_hostile_token_counts_are_skipped_and_counted(tmp_path: Path) -> None:
    ok = usage(100, 10, 10, 5)

    def bad(**last: Any) -> dict[str, Any]:
        return count(usage(999, 0, 9, 0), {**ok, **last})

    bad_info = count(ok, ok)
    bad_info["payload"]["info"] = [1]
    p = write(tmp_path / NAME, meta(),
              "{not json", "[]", bad_info,
              bad(input_tokens="100"), bad(input_tokens=-1), bad(output_tokens=1.5), bad(output_tokens=True),
              bad(input_tokens=10**40), bad(cached_input_tokens=101), bad(reasoning_output_tokens=11),
              count(usage(1, 0, 1, 0), "nope"),  # type: ignore[arg-type]
              {"type": "session_meta", "payload": {"id": "../../x"}},
              count(usage(5000, 0, 50, 0), ok))
    r = codex.read_rollout(p)
    assert [(u.input_tokens, u.cache_read_tokens, u.output_tokens, u.reasoning_tokens) for u in r.records] == [(90, 10, 10, 5)]
    assert r.skipped == 12
    assert r.reasons[:3] == ("line 2: invalid JSON", "line 3: not a JSON object (list)",
                             "line 4: token_count info is not an object")
    assert "line 10: last_token_usage: cached_input_tokens exceeds input_tokens" in r.reasons
    assert "line 13: session_meta without a usable id" in r.reasons


def test_incremental_reads_through_offsets_and_a_truncated_last_line(tmp_path: Path) -> None:
    a = usage(100, 0, 10, 0)
    full = json.dumps(count(usage(300, 0, 30, 0), usage(200, 0, 20, 0)))
    p = write(tmp_path / NAME, meta(), turn(), count(a, a), full[:30], end="")
    state = offsets.OffsetState()
    adv = offsets.advance(p, state.get(p), codex.reader_for(p))
    assert [u.output_tokens for u in adv.result.records] == [10] and adv.result.line == 3
    with p.open("a") as f:
        f.write(full[30:] + "\n")
    adv2 = offsets.advance(p, adv.mark, codex.reader_for(p))
    assert [(u.output_tokens, u.where) for u in adv2.result.records] == [(20, f"{p}:4")]
    assert offsets.advance(p, adv2.mark, codex.reader_for(p)).unchanged


@st.composite
def rollouts(draw: st.DrawFn) -> list[str]:
    lines = [json.dumps(meta()), json.dumps(turn())]
    total = [0, 0, 0, 0]
    for _ in range(draw(st.integers(0, 15))):
        kind = draw(st.sampled_from(["count", "count", "repeat", "rate", "turn", "junk", "item"]))
        if kind == "count" or (kind == "repeat" and total[0] == 0):
            i = draw(st.integers(1, 50000))
            c = draw(st.integers(0, i))
            o = draw(st.integers(1, 5000))
            r = draw(st.integers(0, o))
            total = [total[0] + i, total[1] + c, total[2] + o, total[3] + r]
            lines.append(json.dumps(count(usage(*total), usage(i, c, o, r))))
        elif kind == "repeat":
            lines.append(lines[-1] if '"token_count"' in lines[-1] else json.dumps(rate_only()))
        elif kind == "rate":
            lines.append(json.dumps(rate_only()))
        elif kind == "turn":
            lines.append(json.dumps(turn(draw(st.sampled_from(["gpt-5.1-codex", "o4-mini"])))))
        elif kind == "junk":
            lines.append(draw(st.sampled_from(["{x", "[]", '{"type": "event_msg", "payload": 3}'])))
        else:
            lines.append(json.dumps(message()))
    return lines


@settings(settings.get_profile("fuzz"), suppress_health_check=[HealthCheck.too_slow])
@given(lines=rollouts(), data=st.data())
def test_chunked_reads_equal_one_full_read(lines: list[str], data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as d:
        full = codex.read_rollout(write(Path(d) / f"full-{SID}.jsonl", *lines))
        path = Path(d) / NAME
        got = piecewise_records(path, lines, data, codex.reader_for, Path(d) / "state.json")
        assert_same_records(got, full)


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=12)
usage_like = st.dictionaries(st.sampled_from(["input_tokens", "cached_input_tokens", "output_tokens",
                                              "reasoning_output_tokens", "total_tokens"]), json_values)
count_like = st.fixed_dictionaries({
    "type": st.sampled_from(["event_msg", "session_meta", "turn_context"]),
    "timestamp": json_values,
    "payload": st.one_of(json_values, st.fixed_dictionaries({
        "type": st.just("token_count"), "id": json_values, "model": json_values,
        "info": st.one_of(json_values, st.fixed_dictionaries({"total_token_usage": st.one_of(usage_like, json_values),
                                                              "last_token_usage": st.one_of(usage_like, json_values)}))}))})


@settings(settings.get_profile("fuzz"), suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(st.one_of(st.binary(max_size=200), count_like.map(lambda o: json.dumps(o).encode())), max_size=12))
def test_hostile_rollout_bytes_never_raise(chunks: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / NAME
        path.write_bytes(b"\n".join(chunks))
        r = codex.read_rollout(path)
        for u in r.records:
            assert u.total_tokens > 0 and u.record_id.startswith("cx:")
        assert all("\n" not in x for x in r.reasons)
