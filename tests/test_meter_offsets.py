"""Per-file offsets: atomic state file, symlink refusal, and restarts of replaced/truncated/rewritten files."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from token_exchange.meter import offsets
from token_exchange.meter._jsonl import read_lines
from token_exchange.meter.records import MeterError, ReadResult


def count_lines(f: BinaryIO, offset: int, line: int, carry: Mapping[str, object]) -> ReadResult:
    """A minimal reader: records nothing, counts lines in its carry."""
    chunk = read_lines(f, offset, line)
    n = carry.get("n", 0)
    assert isinstance(n, int)
    return ReadResult((), chunk.offset, chunk.line, carry={"n": n + len(chunk.lines)}, seen=chunk.seen)


def one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text and 0 < len(text) < 300, text
    return text


def test_advance_reads_only_new_complete_lines(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text("a\nb\nc")
    first = offsets.advance(f, None, count_lines)
    assert (first.result.offset, first.result.line, first.result.carry) == (4, 2, {"n": 2})
    assert first.restarted is None and not first.unchanged
    f.write_text("a\nb\nc\nd\n")
    second = offsets.advance(f, first.mark, count_lines)
    assert (second.result.offset, second.result.line, second.result.carry) == (8, 4, {"n": 4})


def test_an_unchanged_file_is_not_even_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text("a\n")
    mark = offsets.advance(f, None, count_lines).mark

    def boom(path: object) -> None:
        raise AssertionError("opened an unchanged file")

    monkeypatch.setattr(offsets, "open_regular", boom)
    adv = offsets.advance(f, mark, count_lines)
    assert adv.unchanged and adv.mark == mark and adv.result.carry == {"n": 1}
    with pytest.raises(AssertionError):
        offsets.advance(f, mark, count_lines, force=True)


@pytest.mark.parametrize("change, reason", [
    ("replace", "replaced"), ("truncate", "truncated"), ("rewrite", "rewritten")])
def test_a_replaced_truncated_or_rewritten_file_restarts_from_zero(tmp_path: Path, change: str, reason: str) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text("first line\nsecond line\n")
    mark = offsets.advance(f, None, count_lines).mark
    if change == "replace":
        new = tmp_path / "new.jsonl"
        new.write_text("first line\nsecond line\nthird\n")
        os.replace(new, f)
    elif change == "truncate":
        with f.open("r+") as h:
            h.truncate(5)
    else:
        with f.open("r+") as h:  # same inode, grown, but the head differs
            h.write("FIRST line\nsecond line\nthird\n")
    adv = offsets.advance(f, mark, count_lines)
    assert adv.restarted == reason
    assert adv.result.carry == ({"n": 0} if change == "truncate" else {"n": 3})
    assert adv.result.reasons[0].endswith(f"{reason}, read again from the start")


def test_state_round_trip_and_atomic_private_file(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text("x\n")
    adv = offsets.advance(f, None, count_lines)
    state = offsets.OffsetState().with_mark(f, adv.mark)
    path = tmp_path / "state" / "deep" / "s.json"
    offsets.save(path, state)
    assert offsets.load(path) == state
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["s.json"]  # no temp file left behind
    assert offsets.load(tmp_path / "absent.json") == offsets.OffsetState()
    assert state.get(str(f)) == adv.mark and state.without([f]).marks == {}


def test_forget_missing(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("1\n")
    b.write_text("2\n")
    state = offsets.OffsetState().with_mark(a, offsets.advance(a, None, count_lines).mark) \
        .with_mark(b, offsets.advance(b, None, count_lines).mark)
    b.unlink()
    assert list(state.forget_missing().marks) == [offsets.key(a)]


def test_symlinked_state_files_are_refused_and_their_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("do not overwrite")
    link = tmp_path / "state.json"
    link.symlink_to(target)
    with pytest.raises(MeterError) as e:
        offsets.save(link, offsets.OffsetState())
    assert "symlink" in one_line(e.value)
    with pytest.raises(MeterError, match="symlink"):
        offsets.load(link)
    assert target.read_text() == "do not overwrite" and link.is_symlink()
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(MeterError, match="not a regular file"):
        offsets.load(tmp_path / "dir.json")


@pytest.mark.parametrize("content, fragment", [
    (b"{oops", "invalid JSON"),
    (b"[]", "not a version 1 offsets file"),
    (b'{"version": 2, "files": {}}', "not a version 1 offsets file"),
    (b'{"version": 1, "files": {"relative.jsonl": {}}}', "not an absolute path"),
    (b'{"version": 1, "files": {"/a.jsonl": 5}}', "not an object"),
    (b'{"version": 1, "files": {"/a.jsonl": {"offset": -1}}}', "offset is not a valid number"),
    (json.dumps({"version": 1, "files": {"/a.jsonl": {"offset": 1, "line": 1, "dev": 1, "ino": 1, "size": 1,
                                                       "mtime_ns": 1, "head_len": 1, "head": "zz"}}}).encode(),
     "head is not a CRC-32"),
])
def test_damaged_state_files_are_one_line_errors(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(content)
    with pytest.raises(MeterError) as e:
        offsets.load(path)
    text = one_line(e.value)
    assert fragment in text and "remove it" in text
    assert path.read_bytes() == content


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=12))
json_values = st.recursive(json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                           max_leaves=10)
mark_like = st.dictionaries(st.sampled_from(["offset", "line", "dev", "ino", "size", "mtime_ns", "head_len", "head",
                                             "carry"]), json_values)
state_like = st.fixed_dictionaries({"version": st.sampled_from([1, 1, 2, "1"]),
                                    "files": st.one_of(json_values, st.dictionaries(st.sampled_from(["/a.jsonl", "b"]),
                                                                                    st.one_of(mark_like, json_values)))})


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=200), state_like.map(lambda o: json.dumps(o).encode())))
def test_hostile_state_bytes_raise_only_the_one_line_error(data: bytes) -> None:
    try:
        state = offsets.loads(data)
    except MeterError as e:
        one_line(e)
        return
    assert offsets.loads(offsets.dumps(state)) == state
