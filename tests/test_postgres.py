"""The postgres backend against a real server: the same ledger as TOML, doctor, schema, failures, limits
across processes standing for hosts, reservations that expire in the database, and `tx migrate`.

Every test has a schema of its own (tests/pgtools.py); without a server they skip and say why."""

from __future__ import annotations

import json
import multiprocessing
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests import pgtools
from tests.conftest import GIT_ENV, Clock, make_ex, tx
from tests.pgtools import CutProxy, Schema, pg_home, with_schema
from token_exchange.amounts import SCALE
from token_exchange.errors import Refused, UserError
from token_exchange.ledger.doctor import check
from token_exchange.rules import limits
from token_exchange.services import corrections, reservations
from token_exchange.services import spending as llm
from token_exchange.services.exchange import Exchange

pg = pgtools.pg  # the fixture: a fresh schema on the test server
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def pg_ex(path: Path, dsn: str, clock: Any, extra: str = "") -> Exchange:
    ex = Exchange(pg_home(path, dsn, extra), clock=clock)
    ex.open_all()
    return ex


def workload(ex: Exchange, clock: Clock) -> None:
    """A bit of everything: awards, a commit, spends (one replayed), reservations settled, voided and
    expired, a transfer and a reversal."""
    ex.award("claude", 250 * SCALE, "manual", "good work", id="award:1", project="p")
    ex.commit("builder@aygp-dr.ai", "p", "feat: a thing", sha="a" * 40)
    clock.advance(seconds=1)
    llm.spend(ex, "claude", "coding", 2000, id="s1")
    llm.spend(ex, "claude", "coding", 2000, id="s1")  # replay: recorded once
    with reservations.reservation(ex, "builder", "coding", 8000, id="r1") as r:
        r.use(3000, 1000)
    clock.advance(seconds=2)
    reservations.reserve(ex, "spark", "coding", 1000, id="r2")
    reservations.void(ex, "r2")
    reservations.reserve(ex, "lambda", "coding", 1000, id="r3", ttl=60)
    clock.advance(seconds=61)
    llm.spend(ex, "lambda", "coding", 500, id="s2")  # expires r3 first
    corrections.transfer(ex, "claude", "builder", "12.5", id="t1")
    corrections.reverse(ex, "llm:s1", "charged by mistake")


def test_same_transactions_ids_hashes_and_balances_as_toml(tmp_path: Path, pg: Schema) -> None:
    c1, c2 = Clock(T0), Clock(T0)
    toml_ex = make_ex(tmp_path / "toml", c1)
    pg_ex_ = pg_ex(tmp_path / "pg", pg.dsn, c2)
    try:
        workload(toml_ex, c1)
        workload(pg_ex_, c2)
        a = [t.to_json() for t in toml_ex.ledger.fresh().iter_txns()]
        b = [t.to_json() for t in pg_ex_.ledger.fresh().iter_txns()]
        assert len(a) == 19 and a == b  # every id, ts, prev and hash
        assert [x.to_json() for x in toml_ex.balances()] == [x.to_json() for x in pg_ex_.balances()]
        ti, pi = toml_ex.ledger.fresh(), pg_ex_.ledger.fresh()
        assert ti.accounts() == pi.accounts() and ti.agents() == pi.agents()
        now = limits.micros(c1())
        for agent in ("claude", "builder", "lambda"):
            lim = toml_ex.cfg.agent(agent).limits
            assert limits.status(ti, lim, agent, now).to_json() == limits.status(pi, lim, agent, now).to_json()
            assert ti.history(agent, 5) == pi.history(agent, 5)
        assert ti.by_ref("llm:r1") == pi.by_ref("llm:r1") and ti.last_ts() == pi.last_ts()
        assert pg.sql("SELECT count(*) FROM holds") == [(0,)]  # r1 settled, r2 voided, r3 expired
        report = check(pg_ex_.ledger)
        assert report.ok, report.problems
        assert report.transactions == len(a)
    finally:
        pg_ex_.close()


def test_doctor_sees_edits_in_the_database_and_repair_quarantines_them(tmp_path: Path, pg: Schema) -> None:
    clock = Clock(T0)
    ex = pg_ex(tmp_path / "pg", pg.dsn, clock)
    try:
        workload(ex, clock)
        n = ex.ledger.fresh().count()
        # An operator with SQL access edits the amount column only: the text the hash covers disagrees.
        pg.sql("UPDATE txns SET amount = amount + 1 WHERE seq = 9")
        report = check(ex.ledger)
        assert not report.ok and "transaction 9" in report.problems[0] and "disagree" in report.problems[0]
        pg.sql("UPDATE txns SET amount = amount - 1 WHERE seq = 9")
        assert check(ex.ledger).ok
        # Derived state edited: found, and --repair rebuilds it from the journal.
        pg.sql("UPDATE accounts SET balance = balance + 5 WHERE account = 'claude'")
        report = check(ex.ledger)
        assert not report.ok and "index out of step" in report.problems[0]
        report = check(ex.ledger, repair=True)
        assert report.ok and report.repaired and "rebuilt the index" in report.repaired[0]
        assert check(ex.ledger).ok
        # The journal's text edited (and its hash recomputed): the chain breaks at the next transaction.
        from hashlib import sha256

        (data,) = pg.sql("SELECT data FROM txns WHERE seq = 12")[0]
        edited = data.replace('"description":"', '"description":"edited ', 1)
        pg.sql("UPDATE txns SET data = %s, hash = %s WHERE seq = 12", (edited, sha256(edited.encode()).hexdigest()))
        report = check(ex.ledger)
        assert not report.ok and "transaction 13" in report.problems[0] and "chain broken" in report.problems[0]
        report = check(ex.ledger, repair=True)
        assert report.quarantined and Path(report.quarantined).is_file()
        assert len(Path(report.quarantined).read_text().splitlines()) == n - 12
        assert pg.sql("SELECT count(*) FROM quarantine") == [(n - 12,)]
        after = check(ex.ledger)
        assert after.ok and after.transactions == 12
        assert ex.ledger.fresh().count() == 12
        # Writing goes on from the repaired head.
        llm.spend(ex, "claude", "coding", 100, id="after-repair")
        assert check(ex.ledger).ok
    finally:
        ex.close()


def test_schema_is_created_once_versioned_and_a_newer_one_is_refused(tmp_path: Path, pg: Schema) -> None:
    ctx = multiprocessing.get_context("fork")
    homes = [pg_home(tmp_path / f"h{i}", pg.dsn) for i in range(6)]
    procs = [ctx.Process(target=_open_wallets, args=(str(h),)) for h in homes]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert pg.sql("SELECT version FROM schema_version") == [(1,)]
    assert pg.sql("SELECT count(*) FROM txns") == [(6,)]  # six wallets opened once, by whichever host was first
    pg.sql("INSERT INTO schema_version(version) VALUES (99)")
    r = tx("--home", str(homes[0]), "balance")
    assert r.code == 1 and "Traceback" not in r.err
    assert r.err.count("\n") == 1 and "schema version 99" in r.err and "upgrade" in r.err


def _open_wallets(home: str) -> None:
    ex = Exchange(Path(home), clock=lambda: T0)
    ex.open_all()
    ex.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_down_is_one_line_without_the_dsn_and_changes_nothing(tmp_path: Path, pg: Schema,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    home = pg_home(tmp_path / "h", "")  # the DSN comes from the environment
    dsn = f"postgresql://postgres:s3cret-pw@127.0.0.1:{_free_port()}/test"
    for args in (["balance"], ["llm", "spend", "claude", "coding", "1000", "--id", "x1"], ["doctor"]):
        r = tx("--home", str(home), *args, env={"TOKEN_EXCHANGE_DSN": dsn})
        assert r.code == 1, (args, r.out, r.err)
        assert "Traceback" not in r.err and r.err.count("\n") == 1, r.err
        assert "s3cret-pw" not in r.err + r.out and "postgres:" not in r.err
        assert "cannot connect" in r.err and "127.0.0.1" in r.err
    assert not {"ledger.toml", "index.sqlite", "ledger.lock"} & {p.name for p in home.iterdir()}


def test_a_password_in_config_toml_is_refused_and_a_bad_dsn_is_one_line(tmp_path: Path, pg: Schema) -> None:
    home = pg_home(tmp_path / "h", with_schema(pg.server, pg.name, password="s3cret-pw"))
    r = tx("--home", str(home), "balance")
    assert r.code == 1 and r.err.count("\n") == 1 and "holds a password" in r.err and "s3cret-pw" not in r.err
    bad = pg_home(tmp_path / "b", "this is = not a 'dsn")
    r = tx("--home", str(bad), "balance")
    assert r.code == 1 and r.err.count("\n") == 1 and "not a PostgreSQL connection string" in r.err
    r = tx("--home", str(bad), "balance", env={"TOKEN_EXCHANGE_DSN": pg.dsn})  # the environment wins
    assert r.code == 0, r.err


def test_init_status_and_doctor_from_the_command_line_never_print_the_dsn(tmp_path: Path, pg: Schema) -> None:
    dsn = with_schema(pg.server, pg.name, application_name="marker-in-the-dsn")
    env = {"TOKEN_EXCHANGE_DSN": dsn}
    home = tmp_path / "h"
    r = tx("--home", str(home), "init", "--backend", "postgres", env=env)
    assert r.code == 0 and "postgres backend" in r.err, r.err
    assert 'backend = "postgres"' in (home / "config.toml").read_text()
    outputs = [r.out + r.err]
    for args in (["status", "--json"], ["doctor", "--json"], ["llm", "spend", "claude", "coding", "1000", "--id", "c1"],
                 ["balance", "claude", "--json"]):
        r = tx("--home", str(home), *args, env=env)
        assert r.code == 0, (args, r.err)
        outputs.append(r.out + r.err)
    assert json.loads(outputs[1])["backend"] == "postgres" and json.loads(outputs[2])["ok"]
    assert json.loads(outputs[4])["spent"] == 15
    assert not any("marker-in-the-dsn" in o or "search_path" in o for o in outputs)
    assert not any("marker-in-the-dsn" in str(row) for row in pg.sql("SELECT data FROM txns"))
    assert not (home / "index.sqlite").exists()  # the index lives in the database


def _proxy_home(tmp_path: Path, pg: Schema) -> tuple[Exchange, CutProxy]:
    import psycopg

    info = psycopg.conninfo.conninfo_to_dict(pg.server)
    proxy = CutProxy(str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432))
    direct = pg_ex(tmp_path / "direct", pg.dsn, lambda: T0)  # wallets opened, schema made
    direct.close()
    via = with_schema(pg.server, pg.name, host="127.0.0.1", port=str(proxy.port))
    return Exchange(pg_home(tmp_path / "via", via), clock=lambda: T0), proxy


def _spends(pg: Schema, rid: str) -> list[tuple[Any, ...]]:
    return pg.sql("SELECT id, amount FROM txns WHERE id = %s", (f"llm:{rid}",))


def test_connection_lost_before_commit_writes_nothing_and_the_retry_charges_once(tmp_path: Path,
                                                                                 pg: Schema) -> None:
    ex, proxy = _proxy_home(tmp_path, pg)
    try:
        before = ex.balance("claude").balance
        proxy.arm(b"INSERT INTO txns", deliver=False)
        with pytest.raises(UserError, match="lost the connection.*nothing of this command was written"):
            llm.spend(ex, "claude", "coding", 1000, id="req-1")
        assert proxy.cuts == 1 and _spends(pg, "req-1") == []
        r = llm.spend(ex, "claude", "coding", 1000, id="req-1")  # the same request again: reconnects
        assert r.created and _spends(pg, "req-1") == [("llm:req-1", 15 * SCALE)]
        assert ex.balance("claude").balance == before - 15 * SCALE
        assert check(ex.ledger).ok
    finally:
        ex.close()
        proxy.close()


def test_connection_lost_while_committing_is_said_and_the_retry_charges_once(tmp_path: Path, pg: Schema) -> None:
    ex, proxy = _proxy_home(tmp_path, pg)
    try:
        before = ex.balance("claude").balance
        proxy.arm(b"COMMIT", deliver=True)  # the server commits; its answer never arrives
        with pytest.raises(UserError, match="while committing.*may or may not.*same id"):
            llm.spend(ex, "claude", "coding", 1000, id="req-2")
        assert proxy.cuts == 1 and _spends(pg, "req-2") == [("llm:req-2", 15 * SCALE)]
        r = llm.spend(ex, "claude", "coding", 1000, id="req-2")
        assert not r.created  # the transaction id decides: charged once
        assert _spends(pg, "req-2") == [("llm:req-2", 15 * SCALE)]
        assert ex.balance("claude").balance == before - 15 * SCALE
        assert check(ex.ledger).ok
    finally:
        ex.close()
        proxy.close()


def test_reservations_live_and_expire_in_the_database_across_hosts(tmp_path: Path, pg: Schema) -> None:
    clock = Clock(T0)
    a = pg_ex(tmp_path / "host-a", pg.dsn, clock)
    b = Exchange(pg_home(tmp_path / "host-b", pg.dsn), clock=clock)
    try:
        reservations.reserve(a, "claude", "coding", 30000, id="big", ttl=60)  # 450 of the 1,000 hourly limit
        idx = b.ledger.fresh()
        assert [h[0] for h in idx.open_holds("claude")] == ["hold:big"]
        assert limits.usage(idx, "claude", limits.micros(clock())).hourly == 450 * SCALE
        llm.spend(b, "claude", "coding", 30000, id="first")  # 900 used
        # Host B is refused what host A's hold leaves no room for.
        with pytest.raises(Refused, match="Hourly limit"):
            llm.spend(b, "claude", "coding", 30000, id="too-much")
        clock.advance(seconds=61)
        r = llm.spend(b, "claude", "coding", 30000, id="fits-now")  # B expires A's hold first, then spends
        assert r.created
        assert reservations.show(a, "big").state == "expired"
        assert pg.sql("SELECT count(*) FROM txns WHERE id = 'llm:big:expire'") == [(1,)]
        assert pg.sql("SELECT count(*) FROM holds") == [(0,)]
        assert check(a.ledger).ok
    finally:
        a.close()
        b.close()


# --- limits across processes (each with its own home: standing for hosts) ---------------------------
def _racer(home: str, tokens: int, attempts: int, reserve_too: bool, tag: str,
           start: Any, results: Any) -> None:
    ex = Exchange(Path(home), clock=lambda: T0)
    ex.ledger.fresh()  # connected before the start
    start.wait()
    ok: list[str] = []
    for i in range(attempts):
        rid = f"{tag}-{i}"
        try:
            if reserve_too and i % 2:
                with reservations.reservation(ex, "observer", "x", tokens, model="gemini-pro", id=rid) as r:
                    r.use(tokens)
                ok.append(f"llm:{rid}:settle")
            else:
                llm.spend(ex, "observer", "x", tokens, model="gemini-pro", id=rid)
                ok.append(f"llm:{rid}")
        except Refused:
            pass
    ex.close()
    results.put(ok)


def race(homes: list[Path], tokens: int, attempts: int, reserve_too: bool = False) -> list[str]:
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(str(h), tokens, attempts, reserve_too, f"h{n}", start, results))
             for n, h in enumerate(homes)]
    for p in procs:
        p.start()
    start.set()
    done = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return [i for d in done for i in d]


@pytest.mark.parametrize("extra, tokens, attempts, fits", [
    # reserve 9,000 of 10,000: 1,000 spendable; spends and reservations of 30 each: 33 fit (990), never 34
    ("[agents.observer.limits]\nreserve = 9000\nhourly = 100000\ndaily = 100000\n", 15000, 6, 33),
    # the daily limit (hourly wide open): 50 tokens each, 20 fit exactly
    ("[agents.observer.limits]\nhourly = 100000\ndaily = 1000\n", 25000, 5, 20),
    # the wallet itself (no reserve, no window): 10,000 tokens, 400 each: 25 fit, never 26
    ("[agents.observer.limits]\nreserve = 0\nhourly = 100000\ndaily = 100000\nburst = 500\n", 200000, 5, 25),
])
def test_8_hosts_never_pass_the_reserve_daily_or_wallet_together(tmp_path: Path, pg: Schema, extra: str,
                                                                 tokens: int, attempts: int, fits: int) -> None:
    homes = [pg_home(tmp_path / f"host{i}", pg.dsn, extra) for i in range(8)]
    first = Exchange(homes[0], clock=lambda: T0)
    first.open_all()
    first.close()
    ok = race(homes, tokens, attempts, reserve_too=True)
    assert len(ok) == fits and len(set(ok)) == fits
    ex = Exchange(homes[0], clock=lambda: T0)
    try:
        b = ex.balance("observer")
        assert b.balance >= ex.cfg.agent("observer").limits.reserve and b.balance >= 0
        assert pg.sql("SELECT count(*) FROM holds") == [(0,)]
        assert check(ex.ledger).ok
    finally:
        ex.close()


def test_burst_is_refused_on_every_host(tmp_path: Path, pg: Schema) -> None:
    ex = pg_ex(tmp_path / "h", pg.dsn, lambda: T0, "[agents.observer.limits]\nburst = 10\n")
    try:
        with pytest.raises(Refused, match="burst"):
            llm.spend(ex, "observer", "x", 6000, model="gemini-pro", id="b1")  # 12 > 10
        assert pg.sql("SELECT count(*) FROM txns WHERE kind = 'spend'") == [(0,)]
    finally:
        ex.close()


# --- tx migrate ---------------------------------------------------------------------------------
def _export(home: Path, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    r = tx("--home", str(home), "export", env=env)
    assert r.code == 0, r.err
    rows: list[dict[str, Any]] = json.loads(r.out)["transactions"]
    return rows


def test_migrate_toml_to_postgres_and_back_keeps_every_id_and_hash(tmp_path: Path, pg: Schema) -> None:
    clock = Clock(T0)
    home = tmp_path / "ex"
    ex = make_ex(home, clock)
    workload(ex, clock)
    ex.close()
    before = _export(home)
    r = tx("--home", str(home), "migrate", "--to", "postgres", "--dsn", pg.dsn)
    assert r.code == 0, r.err
    assert f"migrated {len(before)} transactions from toml to postgres" in r.err and "hashes kept" in r.err
    assert "consistent on both sides" in r.err and "now uses postgres" in r.err
    assert 'backend = "postgres"' in (home / "config.toml").read_text()
    assert _export(home) == before
    assert tx("--home", str(home), "doctor").code == 0
    # Life goes on in the database; moving back appends only what ledger.toml lacks (its prefix is equal).
    assert tx("--home", str(home), "llm", "spend", "claude", "coding", "1000", "--id", "later").code == 0
    grown = _export(home)
    assert len(grown) == len(before) + 1
    r = tx("--home", str(home), "migrate", "--to", "toml", "--json")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert result["copied"] == 1 and result["hashes_kept"] and result["target_doctor"]["ok"]
    assert 'backend = "toml"' in (home / "config.toml").read_text()
    assert _export(home) == grown
    assert tx("--home", str(home), "doctor").code == 0


def test_migrate_refuses_a_target_holding_other_transactions_and_notes_without_reseal(tmp_path: Path,
                                                                                      pg: Schema) -> None:
    other = pg_ex(tmp_path / "other", pg.dsn, lambda: T0)
    llm.spend(other, "claude", "coding", 1000, id="elsewhere")
    other.close()
    clock = Clock(T0 + timedelta(hours=1))
    home = tmp_path / "ex"
    ex = make_ex(home, clock)
    ex.close()
    r = tx("--home", str(home), "migrate", "--to", "postgres", "--dsn", pg.dsn)
    assert r.code == 1 and r.err.count("\n") == 1 and "already holds" in r.err
    assert 'backend = "toml"' in (home / "config.toml").read_text()
    r = tx("--home", str(home), "migrate", "--to", "notes")
    assert r.code == 1 and "--reseal" in r.err


def test_migrate_notes_to_postgres_reseals_and_keeps_ids_dates_and_balances(tmp_path: Path, pg: Schema) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = dict(GIT_ENV)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env={**env, "PATH": "/usr/bin:/bin"})
    home = repo / ".exchange"
    assert tx("--home", str(home), "init", "--backend", "notes").code == 0
    for i in range(3):
        assert tx("--home", str(home), "llm", "spend", "claude", "coding", "1000", "--id", f"n{i}").code == 0
    before = _export(home)
    r = tx("--home", str(home), "migrate", "--to", "postgres", "--dsn", pg.dsn, "--reseal")
    assert r.code == 0, r.err
    assert "hashes re-sealed" in r.err and "consistent on both sides" in r.err
    after = _export(home)
    key = lambda rows: sorted((t["id"], t["ts"], t["amount"], t["payer"], t["payee"]) for t in rows)  # noqa: E731
    assert key(after) == key(before)
    assert all(t["prev"] == "" for t in before) and after[0]["prev"] == "" and after[1]["prev"] == after[0]["hash"]
    bal = tx("--home", str(home), "balance", "claude", "--json")
    assert bal.code == 0 and bal.json()["spent"] == 45


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
