"""Batches are all-or-nothing (issue 13.4): a write cut at any byte, or a writer killed at any moment,
leaves none of its batch; a partial batch inside the journal is reported by doctor.

A SIGKILL during one ``O_APPEND`` write (``storage.append_durably``) leaves a prefix of the bytes it
was writing, so cutting the journal at every byte offset of a real batch's write is every outcome a
kill can have; the last test kills real ``tx import`` processes at increasing moments.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import Clock, make_ex, tx_inproc
from token_exchange.ledger.backends.toml import TomlJournal
from token_exchange.ledger.doctor import check
from token_exchange.ledger.txn import REWARDS, make_txn
from token_exchange.services.exchange import Exchange


def _batch(n: int, tag: str) -> list:
    who = ("zero", "claude")
    return [make_txn(f"{tag}-{i}", "award", REWARDS, who[i % 2], (i + 1) * 100, agent=who[i % 2],
                     description=f"batch {tag} #{i}", source={"type": "t", "n": i}) for i in range(n)]


def _restore(home: Path, saved: Path, journal: bytes, fresh_index: bool) -> None:
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm", "ledger.torn"):
        (home / name).unlink(missing_ok=True)
        if not fresh_index and (saved / name).exists():
            shutil.copy(saved / name, home / name)
    (home / "ledger.toml").write_bytes(journal)


def test_a_write_cut_at_every_byte_leaves_none_of_the_batch(tmp_path: Path) -> None:
    clock = Clock()
    home = tmp_path / "h"
    make_ex(home, clock).close()
    base = (home / "ledger.toml").read_bytes()
    saved = tmp_path / "saved"
    shutil.copytree(home, saved)
    scratch = tmp_path / "scratch"
    shutil.copytree(home, scratch)
    batch = _batch(4, "b")
    Exchange(scratch, clock=clock).ledger.append_many(batch)
    written = (scratch / "ledger.toml").read_bytes()[len(base):]
    assert written.startswith(b"# batch 4\n")
    ids = {t.id for t in batch}
    journal = TomlJournal(home)
    for cut in range(len(written) + 1):  # every byte: what the reader commits, from the indexed end and from 0
        (home / "ledger.toml").write_bytes(base + written[:cut])
        for start in (str(len(base)), ""):
            chunk = journal.read_from(start)
            present = {t.id for t in chunk.txns} & ids
            assert present == (ids if cut == len(written) else set()), (cut, start, sorted(present))
            assert (chunk.tail is not None and chunk.tail.torn) == (0 < cut < len(written)), (cut, chunk.tail)
    for cut in sorted({*range(0, len(written) + 1, 173), 1, 10, 11, len(written) - 1, len(written)}):
        for fresh_index in (False, True):  # the whole ledger and doctor: index at the old end, or deleted
            _restore(home, saved, base + written[:cut], fresh_index)
            ex = Exchange(home, clock=clock)
            present = {t.id for t in ex.ledger.fresh().iter_txns()} & ids
            assert present == (ids if cut == len(written) else set()), (cut, fresh_index, sorted(present))
            report = check(ex.ledger)
            assert report.ok, (cut, report.problems)
            assert bool(report.torn_bytes) == (0 < cut < len(written))
            ex.close()
    # after a cut, the next writer sets the torn bytes aside and appends cleanly
    _restore(home, saved, base + written[: len(written) // 2], False)
    ex = Exchange(home, clock=clock)
    ex.ledger.append_many(_batch(3, "c"))
    assert (home / "ledger.torn").read_bytes() == written[: len(written) // 2]
    assert check(ex.ledger).ok and not ({t.id for t in ex.ledger.fresh().iter_txns()} & ids)


def test_a_journal_complete_but_not_yet_indexed_is_caught_up_whole(tmp_path: Path) -> None:
    """Killed after the journal write, before the index update: the batch is there, whole, on the next read."""
    clock = Clock()
    home = tmp_path / "h"
    make_ex(home, clock).close()
    saved = tmp_path / "idx"
    saved.mkdir()
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        if (home / name).exists():
            shutil.copy(home / name, saved / name)
    ex = Exchange(home, clock=clock)
    ex.ledger.append_many(_batch(5, "w"))
    ex.close()
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (home / name).unlink(missing_ok=True)
        if (saved / name).exists():
            shutil.copy(saved / name, home / name)
    ex = Exchange(home, clock=clock)
    assert len([t for t in ex.ledger.fresh().iter_txns() if t.id.startswith("w-")]) == 5
    assert check(ex.ledger).ok


def test_doctor_detects_a_partial_batch_inside_the_journal(tmp_path: Path) -> None:
    clock = Clock()
    ex = make_ex(tmp_path / "h", clock)
    ex.ledger.append_many(_batch(3, "p"))
    ex.ledger.append_many(_batch(2, "q"))
    ex.close()
    path = tmp_path / "h" / "ledger.toml"
    text = path.read_text()
    start = text.index("# batch 3\n")
    second = text.index("[[transaction]]", text.index('id = "p-1"') - 40)
    third = text.index("[[transaction]]", second + 10)
    path.write_text(text[:second] + text[third:])  # drop the middle block of the 3-block batch
    report = check(Exchange(tmp_path / "h", clock=clock).ledger)
    assert not report.ok
    assert any("partial batch" in p and f"byte {len(text[:start].encode())}" in p for p in report.problems), \
        report.problems
    r = tx_inproc("--home", str(tmp_path / "h"), "balance", "zero")
    assert r.code == 1 and "run `tx doctor`" in r.err  # the index remembers more than the journal now has
    (tmp_path / "h" / "index.sqlite").unlink()
    r = tx_inproc("--home", str(tmp_path / "h"), "balance", "zero")
    assert r.code == 1 and "does not verify" in r.err and "partial batch" in r.err


KILLED_IMPORT_ROWS = 3000


def test_killed_imports_leave_all_or_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    assert tx_inproc("--home", str(src), "init").code == 0
    ex = Exchange(src)
    for lo in range(0, KILLED_IMPORT_ROWS, 500):
        ex.ledger.append_many([make_txn(f"imp-{i}", "award", REWARDS, "zero", 1, agent="zero", description="x" * 40)
                               for i in range(lo, lo + 500)])
    ex.close()
    dump = tx_inproc("--home", str(src), "export", "--format", "json")
    export = tmp_path / "export.json"
    export.write_text(dump.out)
    dst = tmp_path / "dst"
    assert tx_inproc("--home", str(dst), "init").code == 0
    cmd = [sys.executable, "-m", "token_exchange", "--home", str(dst), "import", str(export)]
    outcomes = set()
    delay = 0.05
    for _ in range(12):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        ex = Exchange(dst)
        n = sum(1 for t in ex.ledger.fresh().iter_txns() if t.id.startswith("imp-"))
        assert n in (0, KILLED_IMPORT_ROWS), n
        report = check(ex.ledger)
        assert report.ok, report.problems
        ex.close()
        outcomes.add(n)
        if n:
            break
        delay *= 1.6
    assert KILLED_IMPORT_ROWS in outcomes or outcomes == {0}
    d = json.loads(tx_inproc("--home", str(dst), "import", str(export), "--json").out)
    assert d["imported"] + d["already_present"] >= KILLED_IMPORT_ROWS
