"""The ledger under bad input, a moved clock, edits and a broken index (issue 13, items 2, 3 and 5).

Real homes, real ledger.toml files, real SQLite indexes; `tx` runs in-process with an injected clock.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Clock, make_ex, tx_at, tx_inproc
from token_exchange import clock as clock_mod
from token_exchange.amounts import MAX_TOKENS, MAX_TOTAL, MAX_UNITS, SCALE, to_units
from token_exchange.errors import UserError
from token_exchange.ledger.doctor import check
from token_exchange.ledger.timestamps import check_ts, ts_text
from token_exchange.ledger.txn import LLM, REWARDS, make_txn
from token_exchange.services.exchange import Exchange

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)


def ledger_bytes(home: Path) -> bytes:
    return (home / "ledger.toml").read_bytes()


# --- item 2: validate before writing ------------------------------------------------------------------
def test_one_maximum_for_amounts() -> None:
    assert MAX_UNITS == MAX_TOKENS * SCALE == 10**15 and MAX_TOTAL == 2**53 - 1
    assert to_units(str(MAX_TOKENS)) == MAX_UNITS
    with pytest.raises(UserError, match="larger than the maximum"):
        to_units(str(MAX_TOKENS + 1))
    with pytest.raises(UserError, match="larger than the maximum"):
        to_units("1000000000000000")  # the 10^15 tokens: refused, never written
    with pytest.raises(UserError):
        make_txn("x", "award", REWARDS, "zero", MAX_UNITS + 1)


def test_award_past_the_maximum_is_refused_before_the_journal(tmp_path: Path) -> None:
    ex = make_ex(tmp_path / "h", Clock())
    before = ledger_bytes(ex.home)
    with clock_mod.injected(Clock()):
        r = tx_inproc("--home", str(ex.home), "award", "claude", "1000000000000000", "s", "d")
    assert r.code == 1 and "maximum" in r.err and len(r.err.strip().splitlines()) == 1
    assert ledger_bytes(ex.home) == before
    assert check(Exchange(ex.home).ledger).ok


def test_sums_never_leave_the_exact_range(tmp_path: Path) -> None:
    """Ten maximal awards would push a balance past 2^53-1: the tenth is refused, nothing written."""
    ex = make_ex(tmp_path / "h", Clock())
    for i in range(10):
        t = make_txn(f"big-{i}", "award", REWARDS, "zero", MAX_UNITS, agent="zero")
        if (i + 1) * MAX_UNITS + 10000 * SCALE <= MAX_TOTAL:
            ex.ledger.append(t)
            continue
        before = ledger_bytes(ex.home)
        with pytest.raises(UserError, match="beyond the ledger's maximum"):
            ex.ledger.append(t)
        assert ledger_bytes(ex.home) == before
        break
    else:
        raise AssertionError("the maximum was never reached")
    bal = Exchange(ex.home).balance("zero")
    assert isinstance(bal.balance, int) and bal.balance <= MAX_TOTAL
    row = sqlite3.connect(ex.home / "index.sqlite").execute(
        "SELECT typeof(balance) FROM accounts WHERE account='zero'").fetchone()
    assert row == ("integer",)  # never a float in SQLite


def test_timestamps_are_four_digit_year_utc() -> None:
    assert ts_text(datetime(1999, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == "1999-01-02T03:04:05.000006Z"
    for bad in ("1-01-01T00:00:00.000000Z", "0001-01-01T00:00:00.000000Z", "2026-01-01T00:00:00Z",
                "2026-13-01T00:00:00.000000Z", "2026-01-01 00:00:00.000000Z", ""):
        with pytest.raises(UserError):
            check_ts(bad)
    with pytest.raises(UserError):
        ts_text(datetime(1, 1, 1, tzinfo=UTC))
    with pytest.raises(UserError):
        make_txn("x", "award", REWARDS, "zero", 1, ts="1-01-01T00:00:00.000000Z")


def test_a_clock_at_year_one_bricks_nothing(tmp_path: Path) -> None:
    ex = make_ex(tmp_path / "h", Clock())
    before = ledger_bytes(ex.home)
    r = tx_at("0001-01-01T00:00:00Z", "--home", str(ex.home), "award", "zero", "5", "s", "d")
    assert r.code == 1 and "1970" in r.err and len(r.err.strip().splitlines()) == 1
    assert ledger_bytes(ex.home) == before
    r = tx_inproc("--home", str(ex.home), "balance", "zero", "--json")
    assert r.code == 0 and json.loads(r.out)["balance"] == 10000


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=60), st.text(max_size=60), st.integers(-10, 10**15), st.text(max_size=20))
def test_whatever_is_written_reads_back_exactly(tmp_path_factory: pytest.TempPathFactory, desc: str,
                                                project: str, value: int, key: str) -> None:
    """A transaction either is refused before the journal or round-trips through journal and index."""
    home = tmp_path_factory.mktemp("rt")
    ex = make_ex(home, Clock())
    before = ledger_bytes(home)
    try:
        t = make_txn("rt-1", "award", REWARDS, "zero", 5, agent="zero", description=desc, project=project,
                     source={"type": "t", **({key: value} if key else {})})
        written = ex.ledger.append(t).txn
    except UserError:
        assert ledger_bytes(home) == before
        return
    fresh = Exchange(home)
    (home / "index.sqlite").unlink()
    got = fresh.ledger.get("rt-1")
    assert got == written
    assert check(fresh.ledger).ok


# --- item 3: the clock ----------------------------------------------------------------------------------
def test_no_production_path_reads_now_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ex = make_ex(tmp_path / "h", Clock(T0))
    monkeypatch.setenv("TOKEN_EXCHANGE_NOW", "2099-01-01T00:00:00Z")
    assert tx_inproc("--home", str(ex.home), "award", "zero", "5", "s", "d", "--id", "e1").code == 0
    t = Exchange(ex.home).ledger.get("e1")
    assert t is not None and t.ts < "2099" and t.ts[:4] == str(datetime.now(UTC).year)
    src = Path(clock_mod.__file__).parent
    assert not any("TOKEN_EXCHANGE_NOW" in p.read_text() for p in src.rglob("*.py"))


def test_dates_never_go_back_on_the_system_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "h"
    assert tx_inproc("--home", str(home), "init").code == 0
    assert tx_inproc("--home", str(home), "award", "zero", "1", "s", "d", "--id", "a1").code == 0
    last = Exchange(home).ledger.get("a1")
    assert last is not None
    earlier = datetime.fromisoformat(last.ts.replace("Z", "+00:00")) - timedelta(hours=1)
    monkeypatch.setattr(clock_mod, "system", lambda: earlier)  # the machine's clock steps back an hour
    before = ledger_bytes(home)
    r = tx_inproc("--home", str(home), "award", "zero", "1", "s", "d", "--id", "a2")
    assert r.code == 1 and "never dated before the last one" in r.err
    assert ledger_bytes(home) == before


def test_a_transaction_dated_in_the_future_is_refused(tmp_path: Path) -> None:
    ex = make_ex(tmp_path / "h", Clock(T0))
    ahead = make_txn("f1", "spend", "zero", LLM, SCALE, agent="zero", ts=ts_text(T0 + timedelta(hours=2)))
    before = ledger_bytes(ex.home)
    with pytest.raises(UserError, match="after now"):
        ex.ledger.append(ahead)
    assert ledger_bytes(ex.home) == before


def test_spends_dated_ahead_cannot_free_the_window(tmp_path: Path) -> None:
    """Windows are (now - w, now]: an entry dated after now (however it got there) still cannot help."""
    from token_exchange.rules import limits

    clock = Clock(T0)
    ex = make_ex(tmp_path / "h", clock)
    idx = ex.ledger.fresh()
    future = make_txn("fut", "spend", "zero", LLM, 900 * SCALE, agent="zero", ts=ts_text(T0 + timedelta(hours=3)))
    idx.add([future], idx.meta("position") or "", None)  # planted straight into the index: no write path allows it
    now = limits.micros(T0)
    assert idx.window_sum("zero", limits.WINDOW_KINDS, now - limits.HOUR_US + 1, now) == 0
    assert limits.usage(idx, "zero", now).hourly == 0
    later = limits.micros(T0 + timedelta(hours=3))
    assert limits.usage(idx, "zero", later).hourly == 900 * SCALE


# --- item 5: reads never write; repairs never discard ---------------------------------------------------
def _home_with(tmp_path: Path, n: int) -> Exchange:
    ex = make_ex(tmp_path / "h", Clock(T0))
    for i in range(n):
        ex.award("zero", (i + 1) * SCALE, "s", f"award {i}", id=f"a-{i}")
    ex.close()
    return ex


def test_an_edit_that_lengthens_an_early_block_stops_readers_and_chops_nothing(tmp_path: Path) -> None:
    ex = _home_with(tmp_path, 3)
    path = ex.home / "ledger.toml"
    path.write_text(path.read_text().replace('description = "award 0"', 'description = "award 0, now longer"'))
    edited = path.read_bytes()
    r = tx_inproc("--home", str(ex.home), "balance", "zero")
    assert r.code == 1 and "run `tx doctor`" in r.err and len(r.err.strip().splitlines()) == 1
    assert tx_inproc("--home", str(ex.home), "award", "zero", "1", "s", "d").code == 1  # writers refuse too
    assert path.read_bytes() == edited  # the genuine last block is still there
    assert not (ex.home / "ledger.torn").exists()


def test_doctor_names_the_first_bad_block_and_repair_quarantines_it(tmp_path: Path) -> None:
    ex = _home_with(tmp_path, 3)
    path = ex.home / "ledger.toml"
    original = path.read_bytes()
    path.write_text(path.read_text().replace('amount = "2"', 'amount = "2000"'))
    bad_at = path.read_bytes().index(b'amount = "2000"')
    r = tx_inproc("--home", str(ex.home), "doctor", "--json")
    assert r.code == 1
    rep = json.loads(r.out)
    first = rep["problems"][0]
    assert "first bad block at byte" in first and "a-1" in first and "does not match its hash" in first
    offset = int(first.split("at byte ")[1].split()[0])
    assert offset < bad_at
    r = tx_inproc("--home", str(ex.home), "doctor", "--repair", "--json")
    rep = json.loads(r.out)
    q = Path(rep["quarantined"])
    assert q.is_file() and q.parent == ex.home
    assert path.read_bytes() + q.read_bytes() == original.replace(b'amount = "2"', b'amount = "2000"')
    assert any(f"cat '{q}' >>" in line for line in rep["repaired"])
    assert tx_inproc("--home", str(ex.home), "doctor").code == 0
    assert json.loads(tx_inproc("--home", str(ex.home), "balance", "zero", "--json").out)["balance"] == 10001
    # restoring the quarantine as printed gives back the (tampered) file, detected again
    with open(path, "ab") as f:
        f.write(q.read_bytes())
    assert tx_inproc("--home", str(ex.home), "doctor").code == 1


def test_a_truncated_acknowledged_block_is_never_called_torn(tmp_path: Path) -> None:
    ex = _home_with(tmp_path, 2)
    path = ex.home / "ledger.toml"
    data = path.read_bytes()
    path.write_bytes(data[:-20])  # the last acknowledged block loses its end
    r = tx_inproc("--home", str(ex.home), "balance", "zero")
    assert r.code == 1 and "missing" in r.err  # the index knows it was acknowledged
    assert tx_inproc("--home", str(ex.home), "award", "zero", "1", "s", "d").code == 1
    assert path.read_bytes() == data[:-20]
    rep = json.loads(tx_inproc("--home", str(ex.home), "doctor", "--json").out)
    assert not rep["ok"] and any("acknowledged transactions were cut off" in p for p in rep["problems"])
    rep = json.loads(tx_inproc("--home", str(ex.home), "doctor", "--repair", "--json").out)
    q = Path(rep["quarantined"])
    assert q.name.startswith("ledger.quarantine-") and not (ex.home / "ledger.torn").exists()  # never "torn"
    assert path.read_bytes() + q.read_bytes() == data[:-20]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "foreign", "page"])
def test_a_broken_index_is_rebuilt_in_one_line(tmp_path: Path, damage: str) -> None:
    ex = _home_with(tmp_path, 2)
    idx = ex.home / "index.sqlite"
    for extra in ("index.sqlite-wal", "index.sqlite-shm"):
        (ex.home / extra).unlink(missing_ok=True)
    if damage == "garbage":
        idx.write_bytes(b"this is not a database" * 100)
    elif damage == "truncated":
        idx.write_bytes(idx.read_bytes()[:1500])
    elif damage == "empty":
        idx.write_bytes(b"")
    elif damage == "page":  # every page after the header page damaged
        data = bytearray(idx.read_bytes())
        for at in range(4096, len(data), 4096):
            data[at:at + 64] = b"\xff" * 64
        idx.write_bytes(bytes(data))
    else:
        db = sqlite3.connect(idx)
        db.execute("DROP TABLE txns")
        db.execute("CREATE TABLE txns(x)")
        db.commit()
        db.close()
    r = tx_inproc("--home", str(ex.home), "balance", "zero", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["balance"] == 10003
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) <= 1
    assert tx_inproc("--home", str(ex.home), "doctor").code == 0


def test_report_output_never_overwrites_the_ledger(repo: Path) -> None:
    home = repo / ".exchange"
    assert tx_inproc("--home", str(home), "init").code == 0
    for target in ("ledger.toml", "index.sqlite", "config.toml"):
        before = (home / target).read_bytes()
        r = tx_inproc("--home", str(home), "report", "--base", "HEAD", "--repo", str(repo),
                      "--output", str(home / target))
        assert r.code == 1 and "inside the exchange home" in r.err and len(r.err.strip().splitlines()) == 1
        assert (home / target).read_bytes() == before
    out = repo / "report.txt"
    assert tx_inproc("--home", str(home), "report", "--base", "HEAD", "--repo", str(repo), "--output",
                     str(out)).code == 0
    assert out.is_file()


def test_a_lock_file_that_is_a_symlink_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    """The lock is opened without following symlinks: a planted link cannot make the exchange create
    or truncate a file elsewhere."""
    from token_exchange.storage import file_lock

    target = tmp_path / "elsewhere"
    (tmp_path / "ledger.lock").symlink_to(target)
    with pytest.raises(UserError, match="cannot open"), file_lock(tmp_path / "ledger.lock", timeout=0.1):
        pass
    assert not target.exists()
