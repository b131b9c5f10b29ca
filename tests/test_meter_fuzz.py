"""Bounded fuzzing of the Claude Code hooks through the real programs' entry (``tx-meter`` /
``tx-guard`` run in-process: the process boundary is not what is tested here).

Hostile stdin never gets past one line and an exit status the hook protocol allows; hostile or
torn transcript bytes, appended piece by piece with a Stop hook after each (and state files
lost on the way), charge exactly what one read of the finished transcript charges: nothing
twice, nothing lost.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Clock
from tests.test_meter_claude_code import assistant, user
from tests.test_meter_wiring import SID, Session, exchange, spent
from token_exchange.hooks.meter import guard_main, meter_main

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_hook(main: Any, args: list[str], stdin: bytes) -> tuple[int, str, str]:
    """The program's ``main`` with ``stdin``: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(args)
            except SystemExit as e:
                code = e.code
    finally:
        sys.stdin = old
    assert isinstance(code, int)
    return code, out.getvalue(), err.getvalue()


def check_one_line(err: str) -> None:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) <= 3 and all(len(ln) < 800 for ln in lines), err


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=30)
                           | st.floats(allow_nan=False), lambda c: st.lists(c, max_size=3)
                           | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=8)
HOOK_KEYS = ["session_id", "transcript_path", "cwd", "hook_event_name", "stop_hook_active", "reason",
             "agent_id", "agent_transcript_path", "prompt", "permission_mode"]


@st.composite
def hook_inputs(draw: st.DrawFn, main: str, sub: str) -> bytes:
    kind = draw(st.sampled_from(["bytes", "object", "valid"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    doc: dict[str, Any] = {"session_id": SID, "transcript_path": main, "cwd": "/work/repo",
                           "hook_event_name": draw(st.sampled_from(["Stop", "SubagentStop", "SessionEnd",
                                                                     "UserPromptSubmit"]))}
    if kind == "object":
        for key in draw(st.lists(st.sampled_from(HOOK_KEYS), max_size=4)):
            doc[key] = draw(json_values)
    else:
        doc["transcript_path"] = draw(st.sampled_from([main, sub, "/nonexistent/x.jsonl", "relative.jsonl",
                                                       str(Path(main).parent), "~/x.jsonl"]))
        if draw(st.booleans()):
            doc["agent_transcript_path"] = draw(st.sampled_from([sub, main, "/dev/null", "/nonexistent"]))
    return json.dumps(doc).encode()


@FUZZ
@given(data=st.data())
def test_hostile_hook_input_is_one_line_and_an_allowed_exit_status(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ex = exchange(root / "ex", Clock())
        s = Session(root)
        s.main.parent.mkdir(parents=True)
        s.main.write_text(json.dumps(user()) + "\n" + json.dumps(assistant("msg_1", out=5, stop="end_turn")) + "\n")
        for _ in range(3):
            stdin = data.draw(hook_inputs(str(s.main), str(s.sub("a1"))))
            code, out, err = run_hook(meter_main, ["claude-code", "--home", str(root / "ex")], stdin)
            assert code in (0, 1) and out == ""  # never 2: on Stop that would keep Claude running
            check_one_line(err)
            code, out, err = run_hook(guard_main, ["claude-code", "--home", str(root / "ex")], stdin)
            assert code in (0, 2) and out == ""  # 2 only to block, with the reason on stderr
            check_one_line(err)
            assert code == 0 or err.startswith("token-exchange: claude: ")
        assert set(spent(ex)) <= {"meter:cc:msg_1"}
        ex.close()


# --- transcript bytes ------------------------------------------------------------------------------
IDS = [f"msg_{c}" for c in "abcdef"]
MODELS = ["claude-opus-4-5-20251101", "claude-sonnet-4-5-20250929", "<synthetic>", "claude-haiku-4-5", ""]


@st.composite
def pieces(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    """What gets appended, piece by piece: whole lines in the real format, garbage, torn writes,
    and events between the pieces (a Stop hook, a lost state file)."""
    out: list[tuple[str, bytes]] = []
    for _ in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["line", "line", "line", "side", "garbage", "torn", "stop", "lose-state"]))
        if kind in ("line", "side"):
            side = kind == "side"
            obj = assistant(draw(st.sampled_from(IDS)), out=draw(st.integers(0, 3000)), inp=draw(st.integers(0, 50)),
                            cw=draw(st.sampled_from([0, 0, 1200])), cr=draw(st.sampled_from([0, 5000])),
                            stop=draw(st.sampled_from([None, None, "end_turn", "tool_use"])),
                            model=draw(st.sampled_from(MODELS)), side=side, agent="a1" if side else None)
            out.append(("line", (json.dumps(obj) + "\n").encode()))
        elif kind == "garbage":
            out.append(("line", draw(st.binary(max_size=60)).replace(b"\n", b"") + b"\n"))
        elif kind == "torn":  # a line written in two parts, a hook running in between
            raw = (json.dumps(assistant(draw(st.sampled_from(IDS)), out=draw(st.integers(1, 500)),
                                        stop="end_turn")) + "\n").encode()
            cut = draw(st.integers(1, len(raw) - 1))
            out += [("line", raw[:cut]), ("stop", b""), ("line", raw[cut:])]
        else:
            out.append((kind, b""))
    return out


def meter_at(root: Path, s: Session, event: str = "Stop") -> None:
    code, out, err = run_hook(meter_main, ["claude-code", "--home", str(root / "ex")], s.hook(event))
    assert code == 0 and out == "", err
    check_one_line(err)


@FUZZ
@given(plan=pieces())
def test_transcript_bytes_piece_by_piece_charge_what_one_read_charges(plan: list[tuple[str, bytes]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ex = exchange(root / "ex", Clock())
        s = Session(root)
        s.main.parent.mkdir(parents=True)
        s.main.write_bytes(b"")
        state = root / "ex" / "meter" / "claude-code" / f"{SID}.json"
        for kind, raw in plan:
            if kind == "line":
                with s.main.open("ab") as f:
                    f.write(raw)
            elif kind == "stop":
                meter_at(root, s)
            elif state.exists():
                state.unlink()
        meter_at(root, s, "SessionEnd")
        meter_at(root, s, "SessionEnd")  # a second end charges nothing new
        pieces_charged = spent(ex)

        again = exchange(root / "ex2", Clock())  # one read of the finished transcript
        code, _, err = run_hook(meter_main, ["claude-code", "--home", str(root / "ex2")], s.hook("SessionEnd"))
        assert code == 0, err
        assert pieces_charged == spent(again)
        assert set(pieces_charged) <= {f"meter:cc:{i}" for i in IDS}
        assert all(v >= 0 for v in pieces_charged.values()) and sum(pieces_charged.values(), Decimal(0)) >= 0
        ex.close()
        again.close()
