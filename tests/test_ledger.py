"""The ledger: idempotent, append-only, hash-chained, derived balances, crash and race safety."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from token_exchange.amounts import SCALE
from token_exchange.errors import IdConflict, UserError
from token_exchange.ledger.backends.toml import TomlJournal
from token_exchange.ledger.doctor import check
from token_exchange.ledger.txn import REWARDS, make_txn
from token_exchange.services.exchange import Exchange
from token_exchange.services.setup import init_home

AGENTS = ["claude", "builder", "zero"]


def new_home(path: Path) -> Exchange:
    init_home(path, "toml")
    return Exchange(path)


def award(ex: Exchange, id: str, agent: str, units: int):
    return ex.ledger.append(make_txn(id, "award", REWARDS, agent, units, agent=agent, description="t"))


def test_same_id_same_content_is_a_noop(tmp_path: Path) -> None:
    ex = new_home(tmp_path / "h")
    first = award(ex, "a-1", "claude", 5 * SCALE)
    again = award(ex, "a-1", "claude", 5 * SCALE)
    assert first.created and not again.created
    assert again.txn.hash == first.txn.hash
    assert ex.balance("claude").balance == 10005 * SCALE


def test_same_id_different_content_is_refused(tmp_path: Path) -> None:
    ex = new_home(tmp_path / "h")
    award(ex, "a-1", "claude", 5 * SCALE)
    before = (tmp_path / "h" / "ledger.toml").read_bytes()
    with pytest.raises(IdConflict):
        award(ex, "a-1", "claude", 6 * SCALE)
    assert (tmp_path / "h" / "ledger.toml").read_bytes() == before


def test_ledger_file_is_valid_toml_and_chained(tmp_path: Path) -> None:
    ex = new_home(tmp_path / "h")
    award(ex, "x", "zero", 1)
    ex.commit("claude@aygp-dr.ai", "nexushive-setup", 'fix: "quoted" \\ \x7f \u2028 \U0001f600 tab\t')
    doc = tomllib.loads((tmp_path / "h" / "ledger.toml").read_text("utf-8"))
    txns = doc["transaction"]
    assert len(txns) == 6 + 2
    assert all(t["prev"] == p["hash"] for p, t in zip(txns, txns[1:], strict=False))  # pairs of neighbours
    assert txns[-1]["amount"] == "450" and txns[-1]["breakdown"]["keyword"] == "fix"
    fast = TomlJournal(tmp_path / "h").read_all().txns
    assert [t.to_json() for t in fast][-1]["description"] == txns[-1]["description"]


def test_balances_survive_losing_the_index(tmp_path: Path) -> None:
    ex = new_home(tmp_path / "h")
    award(ex, "x", "zero", 7 * SCALE)
    ex.close()
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (tmp_path / "h" / name).unlink(missing_ok=True)
    ex = Exchange(tmp_path / "h")
    assert ex.balance("zero").balance == 10007 * SCALE
    assert check(ex.ledger).ok


def test_an_index_volume_out_of_step_is_found_and_rebuilt(tmp_path: Path) -> None:
    """The write check trusts the index's volume to bound every total: doctor compares it with the journal."""
    ex = new_home(tmp_path / "h")
    award(ex, "x", "zero", 7 * SCALE)
    assert ex.ledger.index.volume() == sum(t.amount for t in TomlJournal(tmp_path / "h").read_all().txns)
    for hostile in ("²", "-1", "1e9", "9" * 40, ""):  # not a count the index wrote: not trusted, every total is read
        ex.ledger.index.set_meta("volume", hostile)
        assert ex.ledger.index.volume() is None and award(ex, f"y{len(hostile)}", "zero", 1).created
    ex.ledger.index.set_meta("volume", "1")
    report = check(ex.ledger)
    assert not report.ok and "index volume 0.0001, journal" in report.problems[0]
    assert check(ex.ledger, repair=True).repaired and check(ex.ledger).ok
    assert ex.ledger.index.volume() == sum(t.amount for t in TomlJournal(tmp_path / "h").read_all().txns)


@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder"])
def test_tampering_is_detected(tmp_path: Path, tamper: str) -> None:
    ex = new_home(tmp_path / "h")
    for i in range(3):
        award(ex, f"t-{i}", "zero", (i + 1) * SCALE)
    ex.close()
    path = tmp_path / "h" / "ledger.toml"
    text = path.read_text()
    head, *blocks = text.split("[[transaction]]\n")
    if tamper == "edit":
        blocks[-2] = blocks[-2].replace('amount = "2"', 'amount = "2000"')
    elif tamper == "delete":
        del blocks[-2]
    else:
        blocks[-1], blocks[-2] = blocks[-2], blocks[-1]
    path.write_text(head + "".join("[[transaction]]\n" + b for b in blocks))
    (tmp_path / "h" / "index.sqlite").unlink()
    report = check(Exchange(tmp_path / "h").ledger)
    assert not report.ok
    assert any("hash" in p or "chain broken" in p for p in report.problems)


def test_torn_tail_is_ignored_then_moved_aside(tmp_path: Path) -> None:
    ex = new_home(tmp_path / "h")
    award(ex, "ok-1", "zero", SCALE)
    path = tmp_path / "h" / "ledger.toml"
    with open(path, "ab") as f:
        f.write(b'[[transaction]]\nid = "torn"\nts = "2026-')
    fresh = Exchange(tmp_path / "h")
    report = check(fresh.ledger)
    assert report.ok and report.torn_bytes > 0 and report.notes
    repaired = check(fresh.ledger, repair=True)
    assert repaired.ok and repaired.repaired
    assert (tmp_path / "h" / "ledger.torn").read_bytes().startswith(b"[[transaction]]")
    award(fresh, "ok-2", "zero", SCALE)
    assert fresh.balance("zero").balance == 10002 * SCALE
    assert check(fresh.ledger).ok and not check(fresh.ledger).notes


# --- properties ----------------------------------------------------------------------
op = st.tuples(st.sampled_from(["award", "transfer", "replay"]), st.sampled_from(AGENTS), st.sampled_from(AGENTS),
               st.integers(1, 5000 * SCALE))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(op, max_size=25))
def test_balance_is_the_fold_of_transactions(tmp_path_factory: pytest.TempPathFactory, ops: list) -> None:
    ex = new_home(tmp_path_factory.mktemp("fold"))
    model = {a: 10000 * SCALE for a in AGENTS}
    written: list[Any] = []
    for n, (kind, a, b, units) in enumerate(ops):
        if kind == "award":
            t = make_txn(f"p-{n}", "award", REWARDS, a, units, agent=a)
            model[a] += units
        elif kind == "transfer" and a != b and model[a] >= units:
            t = make_txn(f"p-{n}", "transfer", a, b, units, agent=a)
            model[a] -= units
            model[b] += units
        elif kind == "replay" and written:
            t = random.Random(n).choice(written)  # replaying never pays twice
        else:
            continue
        ex.ledger.append(t)
        written.append(t)
    assert {a: ex.balance(a).balance for a in AGENTS} == model
    assert sum(ex.ledger.fresh().accounts().values()) == 0
    report = check(ex.ledger)
    assert report.ok, report.problems


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(AGENTS), st.integers(1, 10**6 * SCALE)), min_size=1, max_size=15))
def test_export_import_round_trips(tmp_path_factory: pytest.TempPathFactory, awards: list) -> None:
    from tests.conftest import tx_inproc as tx

    src = tmp_path_factory.mktemp("src")
    dst = tmp_path_factory.mktemp("dst")
    ex = new_home(src)
    for n, (agent, units) in enumerate(awards):
        award(ex, f"r-{n}", agent, units)
    for fmt_ in ("json", "csv"):
        dump = tx("--home", str(src), "export", "--format", fmt_)
        assert dump.code == 0, dump.err
        f = dst / f"export.{fmt_}"
        f.write_text(dump.out)
        for _ in range(2):  # importing twice changes nothing
            r = tx("--home", str(dst / "home"), "import", str(f)) if (dst / "home").exists() else None
            if r is None:
                assert tx("--home", str(dst / "home"), "init").code == 0
                r = tx("--home", str(dst / "home"), "import", str(f))
            assert r.code == 0, r.err
    a = json.loads(tx("--home", str(src), "balance", "--json").out)
    b = json.loads(tx("--home", str(dst / "home"), "balance", "--json").out)
    assert a == b
    assert tx("--home", str(dst / "home"), "doctor").code == 0


# --- concurrency and crashes ---------------------------------------------------------
def _writer(home: str, worker: int, count: int) -> None:
    ex = Exchange(Path(home))
    for i in range(count):
        award(ex, f"w{worker}-{i}", AGENTS[i % 3], (worker * 1000 + i + 1))


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    home = tmp_path / "h"
    new_home(home).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(home), w, 200)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    ex = Exchange(home)
    txns = [t for t in ex.ledger.fresh().iter_txns() if t.kind == "award"]
    assert len(txns) == 1600 and len({t.id for t in txns}) == 1600
    expected = sum(w * 1000 + i + 1 for w in range(8) for i in range(200))
    assert sum(t.amount for t in txns) == expected
    assert sum(ex.balance(a).balance for a in AGENTS) == 3 * 10000 * SCALE + expected
    assert check(ex.ledger).ok


WRITER = """
import sys
from pathlib import Path
from token_exchange.services.exchange import Exchange
from token_exchange.ledger.txn import REWARDS, make_txn
ex = Exchange(Path(sys.argv[1]))
n = int(sys.argv[2])
for _ in range(150):  # bounded: on a fast disk an unbounded writer makes every later doctor run slow
    ex.ledger.append_many([make_txn(f"k{n}-{i}", "award", REWARDS, "zero", 1, agent="zero") for i in range(20)])
    n += 1000
"""


def test_sigkill_at_random_points_leaves_a_consistent_ledger(tmp_path: Path) -> None:
    home = tmp_path / "h"
    new_home(home).close()
    rng = random.Random(42)
    killed = 0
    for round_ in range(8):
        ledger = home / "ledger.toml"
        before = ledger.stat().st_size
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(home), str(round_ * 10**6)])
        deadline = time.monotonic() + 30
        while ledger.stat().st_size == before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)  # kill only once the writer is really writing
        time.sleep(rng.random() * 0.05)
        os.kill(proc.pid, signal.SIGKILL)
        killed += proc.wait() == -signal.SIGKILL
        report = check(Exchange(home).ledger)
        assert report.ok, report.problems
    ex = Exchange(home)
    count = sum(1 for t in ex.ledger.fresh().iter_txns() if t.kind == "award")
    assert ex.balance("zero").balance == 10000 * SCALE + count  # every batch landed whole or not at all
    assert count % 20 == 0
    assert killed >= 1  # at least one writer really died mid-run


def test_hostile_ids_and_accounts_refused() -> None:
    for bad in ["", "../../etc/passwd", "a" * 500, "x\ny", "-flag"]:
        with pytest.raises(UserError):
            make_txn(bad, "award", REWARDS, "zero", 1)
    with pytest.raises(UserError):
        make_txn("ok", "award", REWARDS, "../../x", 1)
    with pytest.raises(UserError):
        make_txn("ok", "award", REWARDS, "zero", -1)


def test_doctor_finds_an_overdraft_at_an_instant_but_not_the_order_within_one() -> None:
    """Balances are proved at every instant: a hold settled in the microsecond it was made may be read
    back settle-first (a union-merged journal keeps no order within an instant); a real overdraft is
    found, naming the transaction; a clawback may leave a debt."""
    from token_exchange.ledger.doctor import Report, fold
    from token_exchange.ledger.txn import make_txn

    t1, t2 = "2026-01-01T12:00:00.000000Z", "2026-01-01T12:00:01.000000Z"
    opened = make_txn("open:claude", "open", "world:genesis", "claude", 100, ts=t1)
    hold = make_txn("llm:r1", "hold", "claude", "hold:r1", 80, ts=t2)
    settle = make_txn("llm:r1:settle", "spend", "hold:r1", "world:llm", 80, ts=t2)
    ok = Report()
    fold([opened, settle, hold], ok)  # settle-first within t2: hold:r1 is never negative at an instant
    assert ok.ok, ok.problems
    bad = Report()
    over = make_txn("llm:s1", "spend", "claude", "world:llm", 150, ts=t2)
    fold([opened, over], bad)
    assert bad.problems == ["transaction 1 (llm:s1): claude goes negative (-0.005)"]
    debt = Report()
    fold([opened, over._replace(id="clawback:x:claude", kind="clawback", payee="world:rewards")], debt)
    assert debt.ok, debt.problems
