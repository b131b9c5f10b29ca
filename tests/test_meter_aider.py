"""aider ``--analytics-log`` files in the real line format (Aider-AI/aider aider/analytics.py
``Analytics.event``; ``message_send`` from ``Coder.show_usage_report`` in aider/coders/base_coder.py,
as in aider's own aider/website/assets/sample-analytics.jsonl)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.meterkit import assert_same_records, piecewise_records
from token_exchange.meter import aider

USER = "c42c4e6b-f054-44d7-ae1f-6726cc41da88"


def send(prompt: Any, completion: Any, *, time: int = 1755100406, model: str = "gemini/gemini-2.5-pro",
         cost: float = 0.0133175, total_cost: float = 0.0133175) -> dict[str, Any]:
    total = prompt + completion if type(prompt) is type(completion) is int else 0
    return {"event": "message_send",
            "properties": {"main_model": model, "weak_model": "gemini/gemini-2.5-flash-lite",
                           "editor_model": model, "edit_format": "ask", "prompt_tokens": prompt,
                           "completion_tokens": completion, "total_tokens": total,
                           "cost": cost, "total_cost": total_cost},
            "user_id": USER, "time": time}


def starting(time: int = 1755100352) -> dict[str, Any]:
    return {"event": "message_send_starting", "properties": {}, "user_id": USER, "time": time}


def launched() -> dict[str, Any]:
    return {"event": "launched", "properties": {"python_version": "3.12.4", "os_platform": "Linux",
                                                 "aider_version": "0.86.1"}, "user_id": USER, "time": 1755100300}


def write(path: Path, *objs: object, end: str = "\n") -> Path:
    path.write_text("\n".join(o if isinstance(o, str) else json.dumps(o) for o in objs) + end)
    return path


def test_message_send_events_are_charged_with_exact_figures(tmp_path: Path) -> None:
    p = write(tmp_path / "analytics.jsonl", launched(), starting(), send(10006, 81), starting(1755100791),
              send(10829, 591, time=1755100863, cost=0.01944625, total_cost=0.03276375),
              {"event": "command_run", "properties": {"command": "/add"}, "user_id": USER, "time": 1755100900})
    r = aider.read_log(p)
    assert [(u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens) for u in r.records] == \
           [(10006, 81, 0, 0), (10829, 591, 0, 0)]
    first = r.records[0]
    assert first.model == "gemini/gemini-2.5-pro" and first.session_id == USER
    assert first.timestamp == "2025-08-13T15:53:26Z" and first.where == f"{p}:3"
    assert first.record_id.startswith("ai:1755100406:") and len({u.record_id for u in r.records}) == 2
    assert [u.record_id for u in aider.read_log(p).records] == [u.record_id for u in r.records]
    assert r.skipped == 0


def test_redacted_and_unknown_models_are_kept_verbatim(tmp_path: Path) -> None:
    p = write(tmp_path / "a.jsonl", send(5, 6, model="None"), send(7, 8, model="openrouter/REDACTED", time=1755100407))
    assert [u.model for u in aider.read_log(p).records] == ["None", "openrouter/REDACTED"]


def test_identical_consecutive_events_get_distinct_ids(tmp_path: Path) -> None:
    e = send(100, 10, cost=0.0, total_cost=0.0)
    p = write(tmp_path / "a.jsonl", e, starting(), e, e, send(100, 11, cost=0.0, total_cost=0.0))
    r = aider.read_log(p)
    ids = [u.record_id for u in r.records]
    assert len(ids) == 4 == len(set(ids))
    assert ids[1] == ids[0] + ":2" and ids[2] == ids[0] + ":3"
    # Reading in two parts gives the same ids (the repeat count travels in the carry).
    half = aider.read_log(p, 0, 0, None)
    lines = p.read_text().splitlines(keepends=True)
    first_two = len("".join(lines[:2]).encode())
    part = aider.scan_log(p.open("rb"), 0, 0, {}, name=str(p), max_bytes=first_two)
    rest = aider.read_log(p, part.offset, part.line, part.carry)
    assert [u.record_id for u in part.records + rest.records] == [u.record_id for u in half.records]


def test_hostile_events_are_skipped_and_counted(tmp_path: Path) -> None:
    no_props = send(1, 1)
    no_props["properties"] = "x"
    p = write(tmp_path / "a.jsonl", "{nope", "17", no_props, send(-5, 1), send(5, 10**40), send("5", 1),
              send(True, 1), send(0, 0), {**send(3, 4), "time": "yesterday", "user_id": ["x"]})
    r = aider.read_log(p)
    assert [(u.input_tokens, u.output_tokens, u.timestamp, u.session_id) for u in r.records] == [(3, 4, "", "")]
    assert r.records[0].record_id.startswith("ai:t:")
    assert r.skipped == 7
    assert r.reasons[:3] == ("line 1: invalid JSON", "line 2: not a JSON object (int)",
                             "line 3: message_send without a properties object")
    assert r.reasons[3].startswith("line 4: prompt_tokens is not a valid token count")


@st.composite
def logs(draw: st.DrawFn) -> list[str]:
    lines = [json.dumps(launched())]
    total = 0.0
    for k in range(draw(st.integers(0, 15))):
        kind = draw(st.sampled_from(["send", "send", "same", "start", "junk"]))
        if kind == "send" or (kind == "same" and not any('"message_send"' in x for x in lines)):
            p, c = draw(st.integers(0, 90000)), draw(st.integers(0, 9000))
            cost = draw(st.sampled_from([0.0, 0.01, 0.5]))
            total += cost
            lines.append(json.dumps(send(p, c, time=1755100000 + draw(st.integers(0, 3)), cost=cost, total_cost=total)))
        elif kind == "same":
            lines.append(next(x for x in reversed(lines) if '"message_send"' in x))
        elif kind == "start":
            lines.append(json.dumps(starting(1755100000 + k)))
        else:
            lines.append(draw(st.sampled_from(["{", "[]", '{"event": "message_send"}'])))
    return lines


@settings(settings.get_profile("fuzz"), suppress_health_check=[HealthCheck.too_slow])
@given(lines=logs(), data=st.data())
def test_chunked_reads_equal_one_full_read(lines: list[str], data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as d:
        full = aider.read_log(write(Path(d) / "full.jsonl", *lines))
        path = Path(d) / "a.jsonl"
        got = piecewise_records(path, lines, data, aider.reader_for, Path(d) / "state.json")
        assert_same_records(got, full)


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=12)
event_like = st.fixed_dictionaries({
    "event": st.one_of(st.just("message_send"), json_values), "time": json_values, "user_id": json_values,
    "properties": st.one_of(json_values, st.dictionaries(
        st.sampled_from(["prompt_tokens", "completion_tokens", "main_model", "total_cost"]), json_values))})


@settings(settings.get_profile("fuzz"), suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(st.one_of(st.binary(max_size=200), event_like.map(lambda o: json.dumps(o).encode())), max_size=12))
def test_hostile_log_bytes_never_raise(chunks: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "a.jsonl"
        path.write_bytes(b"\n".join(chunks))
        r = aider.read_log(path)
        for u in r.records:
            assert u.total_tokens > 0 and u.record_id.startswith("ai:")
        assert all("\n" not in x for x in r.reasons)
