"""Index rebuild (issue 11.7): the fast paths give exactly what the plain ones give.

The timing goal lives in benchmarks/bench_ledger.py (no timed assertions here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.conftest import Clock, make_ex, tx
from token_exchange.ledger.backends import toml as toml_mod
from token_exchange.ledger.backends import tomlruns
from token_exchange.ledger.backends.toml import HEADER, TomlJournal, render, render_batch
from token_exchange.ledger.doctor import check
from token_exchange.ledger.index import SqliteIndex
from token_exchange.ledger.memindex import MemoryIndex
from token_exchange.ledger.protocols import Chunk
from token_exchange.ledger.timestamps import TS_RE, ts_micros, ts_micros_column, ts_text
from token_exchange.ledger.txn import REWARDS, Txn, canonical, canonical_hashed, chain, make_txn
from token_exchange.services.exchange import Exchange

text = st.text(st.characters(codec="utf-8"), max_size=30)


meta_values = text | st.integers(-(2**53 - 1), 2**53 - 1)


@settings(max_examples=200, deadline=None)
@given(text, text, text, st.dictionaries(st.from_regex(r"[A-Za-z0-9_-]{1,10}", fullmatch=True), meta_values,
                                         max_size=4), st.integers(0, 10**15))
def test_the_direct_canonical_text_is_the_encoders(desc: str, project: str, ref: str, meta: dict, amount: int) -> None:
    t = make_txn("id-1", "award", REWARDS, "zero", amount, agent="zero", description=desc, project=project, ref=ref,
                 source=dict(meta), breakdown=dict(meta), ts="2026-01-01T00:00:00.000000Z", prev="p" * 64)
    assert canonical_hashed(t.hashed()) == canonical(t.hashed())


def _journal(tmp_path: Path, batches: int = 40) -> Path:
    home = tmp_path / "h"
    home.mkdir()
    last = ""
    with open(home / "ledger.toml", "wb") as f:
        f.write(HEADER)
        for b in range(batches):
            batch = chain([make_txn(f"t{b}-{i}", "award", REWARDS, ("zero", "claude")[i % 2], 100 + b * 7 + i,
                                    agent=("zero", "claude")[i % 2], description=f"d {b} {i} é",
                                    source={"type": "t", "n": i}, ts=f"2026-01-01T00:{b % 60:02d}:00.000000Z")
                           for i in range(1 + b % 4)], last)
            last = batch[-1].hash
            f.write(render_batch(batch))
    return home


@pytest.mark.parametrize("group", [1, 7, 1024])
def test_the_fast_parser_gives_what_the_exact_one_gives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        group: int) -> None:
    """Runs of blocks parsed as one JSON document (any run length) equal block-by-block parsing; a damaged
    block falls back to the exact parser, which names it."""
    home = _journal(tmp_path)
    monkeypatch.setattr(toml_mod, "PARSE_GROUP", group)
    fast = TomlJournal(home).read_all()
    monkeypatch.setattr(toml_mod, "parse_blocks", toml_mod.parse_slowly)
    exact = TomlJournal(home).read_all()
    assert fast == exact and fast.tail is None and len(fast.txns) == sum(1 + b % 4 for b in range(40))
    assert fast.hashed == [canonical(t.hashed()) for t in fast.txns]


def test_a_rebuild_gives_what_adding_one_by_one_gives(tmp_path: Path) -> None:
    home = _journal(tmp_path)
    txns = TomlJournal(home).read_all().txns
    for idx in (SqliteIndex(tmp_path / "bulk.sqlite"), MemoryIndex()):
        idx.rebuild(TomlJournal(home).chunks(""))
        one = SqliteIndex(tmp_path / f"one-{type(idx).__name__}.sqlite")
        for t in txns:
            one.add([t], "p", t.hash)
        assert idx.count() == one.count() and idx.accounts() == one.accounts()
        assert list(idx.iter_txns()) == list(one.iter_txns())
        for agent in ("zero", "claude"):
            assert idx.balance(agent) == one.balance(agent)
            assert idx.history(agent, 5) == one.history(agent, 5)
        assert idx.meta("last_hash") == txns[-1].hash and idx.last_ts() == one.last_ts()
        assert idx.volume() == one.volume() == sum(t.amount for t in txns)
        one.close()


def test_rebuilding_a_deleted_index_through_the_ledger(tmp_path: Path) -> None:
    clock = Clock()
    ex = make_ex(tmp_path / "h", clock)
    for b in range(20):
        ex.ledger.append_many([make_txn(f"b{b}-{i}", "award", REWARDS, "zero", 1 + i, agent="zero") for i in range(3)])
    before = ex.balance("zero")
    ex.close()
    shutil.copy(tmp_path / "h" / "ledger.toml", tmp_path / "copy.toml")
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (tmp_path / "h" / name).unlink(missing_ok=True)
    ex = Exchange(tmp_path / "h", clock=clock)
    assert ex.balance("zero") == before
    assert check(ex.ledger).ok
    assert (tmp_path / "h" / "ledger.toml").read_bytes() == (tmp_path / "copy.toml").read_bytes()
    assert not list((tmp_path / "h").glob(".index.sqlite.rebuild-*"))


# --- the fast lane (backends/tomlruns.py) against the exact reader ------------------------------------
def _exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """No runs: every byte goes through the exact reader (pieces, parse_blocks/parse_slowly)."""
    monkeypatch.setattr(tomlruns, "parse_runs", lambda text: [(0, len(text), None, None)])


def _read(home: Path, position: str = "") -> tuple[list[tuple], str, object]:
    """Everything a reader hands out, flattened over chunks (their sizes may differ)."""
    rows: list[tuple] = []
    pos, tail = "", None
    for c in TomlJournal(home).chunks(position):
        assert c.hashed is not None and len(c.hashed) == len(c.txns)
        rows.extend(zip(c.txns, c.hashed, strict=True))
        pos, tail = c.position, c.tail
    return rows, pos, tail


plain = st.text(st.characters(codec="utf-8", exclude_characters="\r"), max_size=12)
odd = st.sampled_from(['say "hi"', "back\\slash", "tab\there", "del\x7fete", "é ü 漢字", "", "a = \"b\"", "\x00",
                      'x","kind":"y', "line\u2028sep\x85", "\\u0041", "\n[[transaction]]\n", "\n# batch 1\n"])
value = plain | odd
meta = st.dictionaries(st.sampled_from(["type", "contract", "n", "ttl", "sha"]), value | st.integers(-5, 2**60),
                       max_size=3)


@st.composite
def journals(draw: st.DrawFn) -> list[list[Txn]]:
    """Batches of chained transactions with any text in any field the writer renders (escapes and all)."""
    batches, last, n = [], "", 0
    for _ in range(draw(st.integers(1, 6))):
        batch = []
        for _ in range(draw(st.integers(1, 4))):
            n += 1
            batch.append(Txn(f"t{n}", draw(st.sampled_from(["award", "spend", "hold", "release"])),
                             draw(st.sampled_from([REWARDS, "zero", "hold:h1"])), draw(st.sampled_from(["zero", "pool:p"])),
                             draw(st.integers(0, 10**15)), draw(value), draw(value), draw(value), draw(meta), draw(meta),
                             draw(value), draw(st.sampled_from(["2026-01-01T00:00:00.000000Z", "2026-13-01T00:00:00Z",
                                                                "x"]))))
        batch = chain(batch, last)
        last = batch[-1].hash
        batches.append(batch)
    return batches


@settings(max_examples=150, deadline=None)
@given(journals(), st.integers(0, 10**6), st.sampled_from(["", "flip", "cut", "insert", "dup", "quote", "v1"]),
       st.sampled_from([1 << 22, 97, 400]))
def test_the_fast_lane_reads_exactly_what_the_exact_reader_reads(tmp_path_factory: pytest.TempPathFactory,
                                                                  batches: list[list[Txn]], where: int, damage: str,
                                                                  read_size: int) -> None:
    """Any journal, damaged anywhere, read in any buffer size: the same transactions, texts, position and tail,
    also when reading from the middle."""
    home = tmp_path_factory.mktemp("lane")
    data = bytearray(HEADER + b"".join(render_batch(b) for b in batches))
    at = len(HEADER) + where % (len(data) - len(HEADER))
    if damage == "flip":
        data[at] ^= 0x20
    elif damage == "cut":
        del data[at:]
    elif damage == "insert":
        data[at:at] = b'\nkind = "award"\n'
    elif damage == "dup":  # a line given twice
        start = data.rfind(b"\n", 0, at) + 1
        data[start:start] = data[start:data.find(b"\n", at) + 1]
    elif damage == "quote":
        data[at:at] = b'"'
    elif damage == "v1":  # a block without its batch line
        data += toml_mod.render(chain([Txn("v1", "award", REWARDS, "zero", 1)], batches[-1][-1].hash)[0]).encode()
    (home / "ledger.toml").write_bytes(bytes(data))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(toml_mod, "READ_SIZE", read_size)
        fast = _read(home)
        middle = fast[1] if fast[1] not in ("", "0") else ""
        fast_mid = _read(home, middle)
        _exact(mp)
        assert _read(home) == fast
        assert _read(home, middle) == fast_mid


def test_the_fast_lane_hands_odd_batches_to_the_exact_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch with an escaped value in the middle of plain ones: runs before and after it, the exact reader for
    it, and the same result as reading everything exactly."""
    home = tmp_path / "h"
    home.mkdir()
    txns = chain([make_txn(f"p{i}", "award", REWARDS, "zero", 10 + i, agent="zero", source={"type": "t"},
                           description='a "quoted" word' if i == 5 else "plain", ts="2026-01-01T00:00:00.000000Z")
                  for i in range(10)], "")
    (home / "ledger.toml").write_bytes(HEADER + b"".join(render_batch(txns[i:i + 2]) for i in range(0, 10, 2)))
    seen: list[list[bool]] = []
    real = tomlruns.parse_runs

    def spy(text: str) -> list:
        segments = real(text)
        seen.append([s[2] is not None for s in segments])
        return segments

    monkeypatch.setattr(tomlruns, "parse_runs", spy)  # toml.py imports it when it reads
    fast = _read(home)
    # the header, 2 plain batches, the odd one, 1 plain one; then (the last read) the last batch
    assert seen == [[False, True, False, True], [True]]
    _exact(monkeypatch)
    assert _read(home) == fast and len(fast[0]) == 10 and fast[2] is None


def _tables(idx: SqliteIndex) -> dict[str, list]:
    """Every row of every table (txns in order; the others as sets; meta but the position, a byte offset here
    and a placeholder in the one-by-one index)."""
    out = {t: sorted(idx.db.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
           for t in ("accounts", "stats", "projects", "contracts", "holds", "pool_stats")}
    out["txns"] = idx.db.execute("SELECT * FROM txns ORDER BY seq").fetchall()
    out["meta"] = idx.db.execute("SELECT * FROM meta WHERE key != 'position' ORDER BY key").fetchall()
    return out


kinds = st.sampled_from(["award", "earn", "spend", "hold", "release", "settle", "contribute", "refund", "transfer"])
accounts = st.sampled_from([REWARDS, "zero", "claude", "hold:h1", "hold:h2", "pool:p"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(kinds, accounts, accounts, st.integers(0, 10**6), st.sampled_from(["", "zero", "claude"]),
                          st.sampled_from(["", "proj"]), st.sampled_from(["", "pool:p", "x"]),
                          st.sampled_from([{}, {"contract": "c1"}, {"contract": 7}, {"ttl": 30}, {"ttl": "x"}]),
                          st.integers(0, 3)), min_size=1, max_size=40))
def test_a_rebuilt_index_equals_one_built_transaction_by_transaction(tmp_path_factory: pytest.TempPathFactory,
                                                                      rows: list[tuple]) -> None:
    """Every table (holds, pools, contracts and projects included) is the same after a rebuild as after
    adding the same transactions one at a time."""
    tmp = tmp_path_factory.mktemp("eq")
    txns = []
    for n, (kind, payer, payee, amount, agent, project, ref, breakdown, sec) in enumerate(rows):
        if payer == payee:
            continue
        txns.append(Txn(f"t{n}", kind, payer, payee, amount, agent, project, "", {}, dict(breakdown), ref,
                        f"2026-01-01T00:00:0{sec}.000000Z"))
    assume(txns)
    txns = chain(txns, "")
    home = tmp / "h"
    home.mkdir()
    (home / "ledger.toml").write_bytes(HEADER + b"".join(render_batch(txns[i:i + 3]) for i in range(0, len(txns), 3)))
    bulk = SqliteIndex(tmp / "bulk.sqlite")
    bulk.rebuild(TomlJournal(home).chunks(""))
    one = SqliteIndex(tmp / "one.sqlite")
    for t in txns:
        one.add([t], "p", t.hash)
    assert _tables(bulk) == _tables(one)
    bulk.close()
    one.close()


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)),
       st.lists(st.tuples(st.integers(0, 26), st.sampled_from("0123456789:.TZ-+ a\u0663\u00b2")), max_size=3))
def test_the_timestamp_fast_path_gives_what_datetime_gives(moment: datetime, edits: list[tuple[int, str]]) -> None:
    """``ts_micros`` (a minute cache and character checks) gives what it gave before on canonical timestamps and
    on any edit of one: the same micros, or the same error."""
    text = list(ts_text(moment))
    for i, c in edits:
        text[i] = c
    ts = "".join(text)

    def slow(t: str) -> object:  # ts_micros before the minute cache, verbatim
        try:
            if len(t) == 27 and t[26] == "Z" and t[13] == ":" and t[19] == "." and TS_RE.fullmatch(t):
                return (int(datetime.fromisoformat(t[:13] + ":00:00+00:00").timestamp()) * 1_000_000
                        + int(t[14:16]) * 60_000_000 + int(t[17:19]) * 1_000_000 + int(t[20:26]))
            m = datetime.fromisoformat(t.replace("Z", "+00:00"))
            m = m if m.tzinfo else m.replace(tzinfo=UTC)
            # exact (int(m.timestamp()) truncated toward zero: one second off before 1970, as an edit can make)
            return (m - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        except ValueError as e:
            return type(e)

    def fast(t: str) -> object:
        try:
            return ts_micros(t)
        except ValueError as e:
            return type(e)

    assert fast(ts) == slow(ts)
    exact = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)  # no float on the way
    assert ts_micros(ts_text(moment)) == exact


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30),
                                       timezones=st.just(UTC)),
                          st.lists(st.tuples(st.integers(0, 27), st.sampled_from("0123456789:.TZ-+ a\n\u0663\u00b2")),
                                   max_size=2)), max_size=6))
def test_a_column_of_timestamps_gives_what_each_gives(column: list[tuple[datetime, list[tuple[int, str]]]]) -> None:
    """``ts_micros_column`` (a rebuild's chunk at a time) gives ``ts_micros`` of each, or the error the first
    one that fails gives: canonical columns, edited ones (minute 99, a line break, a digit of another script)."""
    texts = []
    for moment, edits in column:
        chars = list(ts_text(moment))
        for i, c in edits:
            chars[i:i + 1] = [c]
        texts.append("".join(chars))

    def each() -> object:
        try:
            return [ts_micros(t) for t in texts]
        except ValueError as e:
            return (type(e), str(e))

    def at_once() -> object:
        try:
            return ts_micros_column(texts)
        except ValueError as e:
            return (type(e), str(e))

    assert at_once() == each()


def _hand_written(lines: list[str]) -> bytes:
    """One block from ``lines`` (without prev and hash) with the hash its JSON-document reading gives."""
    body = "".join(f"{line}\n" for line in lines)
    fields = json.loads("{" + ",".join(f'"{k}":{v}' for k, _, v in (line.partition(" = ") for line in lines)) + "}")
    t = Txn(fields.get("id", ""), fields.get("kind", ""), fields.get("payer", ""), fields.get("payee", ""),
            toml_mod.units(fields.get("amount", "0"), 0), description=fields.get("description", ""),
            ts=fields.get("ts", ""))
    return f"# batch 1\n[[transaction]]\n{body}hash = \"{t.compute_hash()}\"\n".encode()


@pytest.mark.parametrize("group", [1, 1024])
@pytest.mark.parametrize("lines", [
    ['id = "x","kind":"award"', 'ts = "2026-01-01T00:00:00.000000Z"', 'payer = "world:rewards"', 'payee = "zero"',
     'amount = "1"'],  # a value holding JSON for another key
    ['id = "x"', 'ts = "2026-01-01T00:00:00.000000Z"', 'kind = "award"', 'kind = "award"', 'payer = "world:rewards"',
     'payee = "zero"', 'amount = "1"'],  # a key given twice
    ['\\u0069d = "x"', 'ts = "2026-01-01T00:00:00.000000Z"', 'kind = "award"', 'payer = "world:rewards"',
     'payee = "zero"', 'amount = "1"'],  # an escaped key
    ['id = "x"', 'ts = "2026-01-01T00:00:00.000000Z"', 'kind = "award"', 'payer = "world:rewards"', 'payee = "zero"',
     'amount = "1"', 'description = "one\u2028two\x85three \\"quoted\\""'],  # raw line separators: a valid block
])
def test_every_reader_of_a_hand_written_block_agrees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, group: int,
                                                     lines: list[str]) -> None:
    """The JSON-document parser accepts a block only as the line-by-line parser reads it, so what a journal says
    never depends on how its blocks are grouped (nor on the fast lane)."""
    home = tmp_path / "h"
    home.mkdir()
    (home / "ledger.toml").write_bytes(HEADER + _hand_written(lines))
    monkeypatch.setattr(toml_mod, "PARSE_GROUP", group)
    fast = _read(home)
    _exact(monkeypatch)
    assert _read(home) == fast
    monkeypatch.setattr(toml_mod, "parse_blocks", toml_mod.parse_slowly)
    assert _read(home) == fast
    assert (fast[2] is None) == ("description" in lines[-1])


def test_a_rebuild_that_dies_halfway_leaves_the_old_index(tmp_path: Path) -> None:
    """A rebuild killed mid-stream (here: the journal read raising) leaves the old index as it was, readable and
    consistent, and no temporary file; one that crashed outright leaves a file the next rebuild removes."""
    clock = Clock()
    ex = make_ex(tmp_path / "h", clock)
    for b in range(5):
        ex.ledger.append_many([make_txn(f"b{b}-{i}", "award", REWARDS, "zero", 1 + i, agent="zero") for i in range(3)])
    before = ex.balance("zero")
    idx = ex.ledger.fresh()
    assert isinstance(idx, SqliteIndex)

    def dying() -> Iterator[Chunk]:
        yield from TomlJournal(tmp_path / "h").chunks("")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        idx.rebuild(dying())
    assert not list((tmp_path / "h").glob(".index.sqlite.rebuild-*"))
    assert ex.balance("zero") == before and check(ex.ledger).ok
    dead = subprocess.Popen(["true"])  # a pid that no longer runs
    dead.wait()
    stale = tmp_path / "h" / f".index.sqlite.rebuild-{dead.pid}"
    alive = tmp_path / "h" / f".index.sqlite.rebuild-{os.getppid()}"
    for f in (stale, alive):
        f.write_bytes(b"partial")
    idx.rebuild(TomlJournal(tmp_path / "h").chunks(""))
    assert not stale.exists() and alive.exists()
    assert ex.balance("zero") == before and check(ex.ledger).ok
    ex.close()


@pytest.mark.parametrize("ts", ["2026-13-45T99:99:99.000000Z", "2026-02-31T00:00:00.000000Z"])
@pytest.mark.parametrize("index", ["kept", "deleted"])
def test_a_verified_block_whose_time_is_no_time_is_one_line(tmp_path: Path, ts: str, index: str) -> None:
    """An edited journal whose blocks still verify but whose ts is no time: read one at a time (the index
    catching up) or all at once (a rebuild), it is one line and exit 1; the index is left as it was."""
    home = tmp_path / "h"
    assert tx("--home", str(home), "init").code == 0
    assert tx("--home", str(home), "balance", "zero").code == 0  # the index now holds the opening balances
    txns = TomlJournal(home).read_all().txns
    [bad] = chain([Txn("bad1", "award", REWARDS, "zero", 10, "zero", "", "x", {}, {}, "", ts)], txns[-1].hash)
    with open(home / "ledger.toml", "a", encoding="utf-8") as f:
        f.write(render(bad))
    if index == "deleted":
        for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
            (home / name).unlink(missing_ok=True)
    before = SqliteIndex(home / "index.sqlite")
    kept = (before.count(), before.meta("position"))
    before.close()
    r = tx("--home", str(home), "balance", "zero")
    assert r.code == 1 and "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1
    assert f"transaction bad1 in the journal has ts {ts!r}, which is not a time" in r.err
    after = SqliteIndex(home / "index.sqlite")
    assert (after.count(), after.meta("position")) == kept
    after.close()
    mem = MemoryIndex()
    with pytest.raises(ValueError):
        mem.add([bad], "1", bad.hash)
    assert mem.count() == 0 and mem.meta("position") is None
