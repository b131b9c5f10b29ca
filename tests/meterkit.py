"""What the meter parsers' tests share: a log written piece by piece, read by the hook's own offsets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from hypothesis import strategies as st

from token_exchange.meter import offsets
from token_exchange.meter.offsets import Reader
from token_exchange.meter.records import ReadResult, Usage, totals


def piecewise_records(path: Path, lines: Sequence[str], data: st.DataObject,
                      reader_for: Callable[[Path], Reader], state_path: Path) -> list[Usage]:
    """Append ``lines`` to ``path`` in random cuts (mid-line too), reading what is new after each cut
    with the saved offsets, as one hook run per cut would."""
    path.write_text("")
    text = "".join(x + "\n" for x in lines)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(text)), max_size=8))))
    got: list[Usage] = []
    start = 0
    for cut in [*cuts, len(text)]:
        with path.open("a") as f:
            f.write(text[start:cut])
        start = cut
        state = offsets.load(state_path)
        adv = offsets.advance(path, state.get(path), reader_for(path))
        offsets.save(state_path, state.with_mark(path, adv.mark))
        got += adv.result.records
    return got


def assert_same_records(got: list[Usage], full: ReadResult) -> None:
    """Each record once, and the same records and totals as one full read."""
    ids = [u.record_id for u in got]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(u.record_id for u in full.records)
    assert totals(got) == totals(full.records)
