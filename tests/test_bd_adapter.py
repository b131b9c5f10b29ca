"""tx-bd: previews and idempotent issue-close payments, through the bd stand-in and the JSONL export."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, GENERATED_CUSTOM_TYPES, Result, seed_bd_store

BD = FIXTURES / "bd"
SMALL = FIXTURES / "beads" / "small.jsonl"
BIG = FIXTURES / "beads" / "issues.jsonl"


def _path_without_bd() -> str:
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and not (Path(p) / "bd").exists())


@pytest.fixture
def beads_repo(repo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temp repo, an exchange, bd (the stand-in) on PATH, and small.jsonl twice: imported into
    bd's database (.beads/embeddeddolt/) and as the tracked export .beads/issues.jsonl."""
    (repo / ".beads").mkdir()
    shutil.copy(SMALL, repo / ".beads" / "issues.jsonl")
    seed_bd_store(repo / ".beads", SMALL)
    from token_exchange.services.setup import init_home

    init_home(repo / ".exchange", "toml")
    monkeypatch.setenv("PATH", f"{FIXTURES}{os.pathsep}{_path_without_bd()}")
    monkeypatch.setenv("BD_STANDIN_NOW", "2026-02-01T12:00:00.123456789Z")
    for var in ("BD_STANDIN_LEGACY_SHOW", "BD_STANDIN_ERROR_MODE", "BD_STANDIN_FAIL", "BD_STANDIN_LOG",
                "BEADS_PATH", "CLAUDE_CODE", "BD_AGENT_MODE", "TX_BD_EXTRA_STATUSES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(repo)
    return repo


@pytest.fixture
def no_bd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", _path_without_bd())
    assert shutil.which("bd") is None


@pytest.fixture
def txbd(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Run tx-bd in-process (fast) with the real CLI conventions."""
    from token_exchange.cli.bd import run

    def invoke(*args: str, input: str | None = None) -> Result:
        capsys.readouterr()
        monkeypatch.setattr(sys, "stdin", io.StringIO(input or ""))
        code = run(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


def bd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BD), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def ledger_txns(repo: Path) -> list[dict]:
    from token_exchange.services.exchange import Exchange

    ex = Exchange(repo / ".exchange")
    try:
        return [t.to_json() for t in ex.ledger.fresh().iter_txns() if t.id.startswith("issue:")]
    finally:
        ex.close()


def balance(repo: Path, agent: str) -> Decimal:
    from token_exchange.amounts import to_decimal
    from token_exchange.services.exchange import Exchange

    ex = Exchange(repo / ".exchange")
    try:
        return to_decimal(ex.balance(agent).balance)
    finally:
        ex.close()


def one_line_error(r: Result) -> str:
    assert r.code == 1, (r.code, r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tx-bd: error: "), r.err
    assert "Traceback" not in r.err
    return lines[0]


# --------------------------------------------------------------------------- rewards and previews

def test_rewards_table_and_json(beads_repo, txbd):
    r = txbd("rewards", "--json")
    assert r.code == 0, r.err
    d = r.json()
    assert d["priority"] == {"P0": 500, "P1": 500, "P2": 300, "P3": 150, "P4": 75, "P5": 50}
    assert d["types"]["security"] == Decimal("2.0") and d["types"]["chore"] == Decimal("0.5")
    assert d["default_type_multiplier"] == 1
    r = txbd("rewards")
    assert r.code == 0 and "P2" in r.out and "300 x 1.5 = 450" in r.out


def test_preview_worked_figure_p2_bug_is_450(beads_repo, txbd):
    r = txbd("preview", "tx-b71c", "--json")
    assert r.code == 0, r.err
    d = r.json()
    assert d["reward"] == 450 and d["priority"] == 2 and d["priority_label"] == "P2"
    assert d["issue_type"] == "bug" and d["multiplier"] == Decimal("1.5") and d["priority_tokens"] == 300
    assert d["agent"] == "builder" and d["payee_from"] == "assignee" and d["already_paid"] is False
    text = txbd("preview", "tx-b71c")
    assert "300 x 1.5" in text.out and "450 tokens" in text.out and "builder" in text.out


def test_preview_p0_security_label_and_default_type(beads_repo, txbd):
    d = txbd("preview", "tx-c02d", "--json").json()  # P0 bug labelled security: 500 x 2.0
    assert d["reward"] == 1000 and d["multiplier_from"] == "label security"
    d = txbd("preview", "tx-a3f8", "--json").json()  # epic: not in the seed table -> default 1.0
    assert d["reward"] == 500 and "default" in d["multiplier_from"]


def test_preview_all_sorted_with_total(beads_repo, txbd):
    r = txbd("preview-all", "--json")
    assert r.code == 0, r.err
    d = r.json()
    rewards = [i["reward"] for i in d["issues"]]
    assert rewards == sorted(rewards, reverse=True)
    assert {i["id"] for i in d["issues"]} == {"tx-c02d", "tx-a3f8", "tx-b71c", "tx-e9f0", "tx-a3f8.1"}
    assert d["total"] == sum(rewards) == 2590
    for item in d["issues"]:
        assert {"id", "title", "priority", "issue_type", "reward"} <= set(item)
    text = txbd("preview-all")
    assert "tx-c02d" in text.out and "2590 tokens at stake" in text.out


def test_preview_all_bd_and_jsonl_agree_on_a_realistic_export(beads_repo, txbd, monkeypatch):
    shutil.copy(BIG, beads_repo / ".beads" / "issues.jsonl")
    seed_bd_store(beads_repo / ".beads", BIG, custom_types=GENERATED_CUSTOM_TYPES)
    monkeypatch.setenv("CLAUDE_CODE", "1")  # agent mode: bd's default list limit drops to 20
    log = beads_repo / "bd.log"
    monkeypatch.setenv("BD_STANDIN_LOG", str(log))
    via_bd = txbd("preview-all", "--json")
    assert via_bd.code == 0, via_bd.err
    assert any("--limit" in json.loads(ln) and "0" in json.loads(ln) for ln in log.read_text().splitlines())
    via_file = txbd("preview-all", "--jsonl", str(beads_repo / ".beads" / "issues.jsonl"), "--json")
    assert via_file.code == 0, via_file.err
    a, b = via_bd.json(), via_file.json()
    assert [i["id"] for i in a["issues"]] == [i["id"] for i in b["issues"]]
    assert a["total"] == b["total"] and a["count"] > 50


# --------------------------------------------------------------------------- every bd shape

@pytest.mark.parametrize("env", [{}, {"BD_STANDIN_LEGACY_SHOW": "1"}, {"BD_JSON_ENVELOPE": "1"}])
def test_preview_every_show_shape(beads_repo, txbd, monkeypatch, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    d = txbd("preview", "tx-b71c", "--json").json()
    assert d["id"] == "tx-b71c" and d["reward"] == 450


def test_envelope_everywhere(beads_repo, txbd, monkeypatch):
    monkeypatch.setenv("BD_JSON_ENVELOPE", "1")
    assert txbd("preview-all", "--json").json()["total"] == 2590
    r = txbd("close", "tx-b71c", "--json")
    assert r.code == 0, r.err
    assert r.json()["total_paid"] == 450
    s = txbd("sync", "--json", "--agent", "zero")
    assert s.code == 0, s.err
    assert {p["id"] for p in s.json()["paid"]} == {"tx-a3f8.1.2", "tx-d4e5"}


@pytest.mark.parametrize("mode", ["auto", "stderr-json", "stdout-json", "plain"])
def test_bd_errors_become_one_line(beads_repo, txbd, monkeypatch, mode):
    monkeypatch.setenv("BD_STANDIN_ERROR_MODE", mode)
    r = txbd("preview", "tx-nope")
    line = one_line_error(r)
    assert "no issues found matching" in line
    assert r.out == ""
    rj = txbd("preview", "tx-nope", "--json")
    assert rj.code == 1 and "no issues found matching" in rj.json()["error"]


def test_bd_plain_failure_and_missing_database(beads_repo, txbd, monkeypatch, tmp_path):
    monkeypatch.setenv("BD_STANDIN_FAIL", "Error: database is locked\nHint: try again")
    line = one_line_error(txbd("preview-all"))
    assert "database is locked (try again)" in line
    monkeypatch.delenv("BD_STANDIN_FAIL")
    elsewhere = tmp_path / "nowhere"
    elsewhere.mkdir()
    monkeypatch.setenv("BEADS_DIR", str(elsewhere / "missing"))
    # bd uses $BEADS_DIR only when it holds a database, else it searches from the cwd
    # (beads.go FindDatabasePath): inside the repo it still finds .beads/embeddeddolt
    assert txbd("preview", "tx-b71c", "--json").json()["reward"] == 450
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("TOKEN_EXCHANGE_HOME", str(beads_repo / ".exchange"))
    line = one_line_error(txbd("preview", "tx-b71c"))
    assert "no beads database found" in line


def test_beads_path_and_beads_dir_are_honoured(beads_repo, txbd, monkeypatch, tmp_path):
    other = tmp_path / "elsewhere-beads"
    other.mkdir()
    shutil.copy(SMALL, other / "issues.jsonl")
    seed_bd_store(other, SMALL)
    shutil.rmtree(beads_repo / ".beads")
    monkeypatch.setenv("BEADS_DIR", str(other))
    monkeypatch.setenv("PATH", _path_without_bd())
    monkeypatch.setenv("BEADS_PATH", str(BD))
    assert txbd("preview", "tx-b71c", "--json").json()["source"].startswith("bd (")
    monkeypatch.delenv("BEADS_PATH")  # no bd at all: the export in $BEADS_DIR
    d = txbd("preview", "tx-b71c", "--json").json()
    assert d["reward"] == 450 and d["source"] == str(other / "issues.jsonl")
    monkeypatch.setenv("BEADS_PATH", str(tmp_path / "no-such-bd"))
    assert "BEADS_PATH" in one_line_error(txbd("preview", "tx-b71c"))


# --------------------------------------------------------------------------- close

def test_close_pays_assignee_once_and_records_project(beads_repo, txbd):
    r = txbd("close", "tx-b71c", "--reason", "fixed rounding", "--json")
    assert r.code == 0, r.err
    d = r.json()
    (c,) = d["closed"]
    assert c["id"] == "tx-b71c" and c["paid"] is True and c["amount"] == 450 and c["agent"] == "builder"
    assert d["refused"] == [] and d["total_paid"] == 450
    assert balance(beads_repo, "builder") == 10450
    (t,) = ledger_txns(beads_repo)
    assert t["id"] == "issue:tx-b71c" and t["kind"] == "award" and t["project"] == "nexushive-setup"
    assert t["source"]["contract"] == "nexushive-setup" and t["breakdown"]["multiplier"] == "1.5"
    shown = json.loads(bd("show", "tx-b71c", "--json").stdout)[0]
    assert shown["status"] == "closed" and shown["close_reason"] == "fixed rounding"


def test_reclose_reopen_sync_and_priority_change_pay_once(beads_repo, txbd):
    assert txbd("close", "tx-b71c").code == 0
    again = txbd("close", "tx-b71c", "--json")  # bd re-closes an already closed issue successfully
    assert again.code == 0 and again.json()["closed"][0]["already_paid"] is True
    assert again.json()["total_paid"] == 0
    assert bd("reopen", "tx-b71c").returncode == 0
    assert bd("update", "tx-b71c", "--priority", "0").returncode == 0
    r = txbd("close", "tx-b71c", "--json")
    c = r.json()["closed"][0]
    assert c["already_paid"] is True and c["amount"] == 450 and c["reward"] == 750
    assert "first payment stands" in c["note"]
    text = txbd("close", "tx-b71c")
    assert "first payment stands" in text.err
    s = txbd("sync", "--json", "--agent", "zero")
    assert "tx-b71c" not in {p["id"] for p in s.json()["paid"]}
    assert len([t for t in ledger_txns(beads_repo) if t["id"] == "issue:tx-b71c"]) == 1
    assert balance(beads_repo, "builder") == 10450


def test_close_refused_issues_are_reported_and_not_paid(beads_repo, txbd):
    r = txbd("close", "tx-e9f0", "tx-a3f8", "tx-c02d", "--agent", "zero", "--json")
    assert r.code == 1
    d = r.json()
    assert [c["id"] for c in d["closed"]] == ["tx-c02d"] and d["closed"][0]["amount"] == 1000
    refused = {x["id"]: x["reason"] for x in d["refused"]}
    assert "blocked by open issues" in refused["tx-e9f0"]
    assert "open child" in refused["tx-a3f8"]
    assert {t["id"] for t in ledger_txns(beads_repo)} == {"issue:tx-c02d"}
    text = txbd("close", "tx-e9f0", "--agent", "zero")
    assert text.code == 1 and "tx-e9f0: bd did not close it: cannot close tx-e9f0: blocked" in text.err


@pytest.mark.parametrize("mode", ["auto", "stderr-json", "stdout-json", "plain"])
def test_close_unknown_id_closes_and_pays_nothing(beads_repo, txbd, monkeypatch, mode):
    monkeypatch.setenv("BD_STANDIN_ERROR_MODE", mode)
    r = txbd("close", "tx-b71c", "tx-nope", "--agent", "zero", "--json")
    assert r.code == 1
    d = r.json()
    assert d["closed"] == [] and {x["id"] for x in d["refused"]} == {"tx-b71c", "tx-nope"}
    assert all("tx-nope" in x["reason"] for x in d["refused"])
    assert ledger_txns(beads_repo) == []


def test_close_partial_id_resolved_by_bd(beads_repo, txbd):
    r = txbd("close", "b71c", "--json")
    assert r.code == 0, r.err
    assert r.json()["closed"][0]["id"] == "tx-b71c" and r.json()["refused"] == []


def test_payee_agent_option_then_actor_then_error(beads_repo, txbd, monkeypatch):
    log = beads_repo / "bd.log"
    monkeypatch.setenv("BD_STANDIN_LOG", str(log))
    line = one_line_error(txbd("close", "tx-e9f0"))  # no assignee, no --agent, no actor
    assert "nobody to pay for tx-e9f0" in line and "nothing closed" in line
    assert not any(json.loads(ln)[0] == "close" for ln in log.read_text().splitlines())
    assert txbd("close", "tx-b71c").code == 0  # unblocks tx-e9f0
    monkeypatch.setenv("BD_ACTOR", "spark")
    d = txbd("close", "tx-e9f0", "--json").json()["closed"][0]
    assert d["agent"] == "spark" and d["payee_from"] == "actor" and d["amount"] == 400
    monkeypatch.delenv("BD_ACTOR")
    subprocess.run(["git", "config", "user.email", "lambda@aygp-dr.ai"], cwd=beads_repo, check=True)
    d = txbd("close", "tx-a3f8.1", "--agent", "zero", "--json").json()["closed"][0]
    assert d["agent"] == "builder" and d["payee_from"] == "assignee"  # a known assignee beats --agent
    assert bd("update", "tx-c02d", "--assignee", "mystery-agent").returncode == 0
    d = txbd("close", "tx-c02d", "--json").json()["closed"][0]  # git user.email is the actor
    assert d["agent"] == "lambda" and d["payee_from"] == "actor"
    assert one_line_error(txbd("close", "tx-a3f8", "--agent", "nobody")).endswith("unknown agent 'nobody' "
                                                                                  "(known: builder, claude, lambda, "
                                                                                  "observer, spark, zero)")


def test_close_needs_bd(beads_repo, txbd, no_bd):
    line = one_line_error(txbd("close", "tx-b71c"))
    assert "bd is not installed" in line and "closing needs bd" in line


def test_close_non_work_types_are_not_paid(beads_repo, txbd):
    r = bd("create", "Wait for CI", "-t", "gate", "--id", "tx-g1", "--json")
    assert r.returncode == 0, r.stderr
    d = txbd("close", "tx-g1", "--agent", "zero", "--json")
    assert d.code == 0 and d.json()["not_work"] == ["tx-g1"] and d.json()["closed"] == []
    assert ledger_txns(beads_repo) == []


# --------------------------------------------------------------------------- sync

def test_sync_pays_closed_issues_once_and_is_safe_to_repeat(beads_repo, txbd):
    assert bd("close", "tx-b71c").returncode == 0  # plain bd close: nobody paid yet
    r = txbd("sync", "--json")
    assert r.code == 0, r.err
    d = r.json()
    assert {p["id"]: p["amount"] for p in d["paid"]} == {"tx-b71c": 450, "tx-a3f8.1.2": 120}
    assert [u["id"] for u in d["unpaid"]] == ["tx-d4e5"]  # 'mystery-agent' maps to no agent
    assert d["total_paid"] == 570
    again = txbd("sync", "--json").json()
    assert again["paid"] == [] and again["already_paid"] == 2 and again["total_paid"] == 0
    d = txbd("sync", "--agent", "observer", "--json").json()
    assert [(p["id"], p["agent"], p["amount"]) for p in d["paid"]] == [("tx-d4e5", "observer", 150)]


def test_sync_from_the_jsonl_without_bd(beads_repo, txbd, no_bd):
    d = txbd("sync", "--json", "--agent", "zero").json()
    assert {p["id"] for p in d["paid"]} == {"tx-a3f8.1.2", "tx-d4e5"}
    assert d["source"].endswith("issues.jsonl")
    assert {t["id"] for t in ledger_txns(beads_repo)} == {"issue:tx-a3f8.1.2", "issue:tx-d4e5"}


def test_sync_needs_an_exchange(tmp_path, txbd, monkeypatch, no_bd):
    monkeypatch.chdir(tmp_path)
    assert "pass --home" in one_line_error(txbd("sync"))


# --------------------------------------------------------------------------- the JSONL export (no bd)

def test_jsonl_formats_memory_tombstone_schema_header_and_untyped_lines(beads_repo, txbd, no_bd):
    path = beads_repo / ".beads" / "issues.jsonl"
    lines = path.read_text().splitlines()
    untyped = json.loads(lines[3])
    del untyped["_type"]
    lines[3] = json.dumps(untyped)
    path.write_text("\n".join(['{"_schema": 1}', *lines, ""]))
    d = txbd("preview-all", "--json").json()
    assert {i["id"] for i in d["issues"]} == {"tx-c02d", "tx-a3f8", "tx-b71c", "tx-e9f0", "tx-a3f8.1"}
    assert d["total"] == 2590
    r = txbd("preview", "tx-f00d")
    assert r.code == 1 and "no issue tx-f00d" in r.err  # deleted: invisible, like bd


HOSTILE = [
    ('{"id": "tx-1", "title": "x", "priority": 2', "invalid JSON"),
    ('{"id": "tx-1", "title": "x", "priority": 2, "status": "review"}', "unknown status 'review'"),
    ('{"id": "tx-1", "title": "x"}', "missing field 'priority'"),
    ('{"title": "x", "priority": 1}', "missing field 'id'"),
    ('{"id": "tx-1", "priority": 1}', "missing field 'title'"),
    ('[1, 2, 3]', "expected an issue object"),
    ('{"id": "tx-1", "title": "x", "priority": "urgent"}', "invalid priority"),
    ('{"id": "tx-1", "title": "x", "priority": true}', "invalid priority"),
    ('{"id": "tx-1", "title": "x", "priority": 1e999}', "invalid priority"),
    ('{"id": "tx-1", "title": "x", "priority": NaN}', "invalid priority"),
    ('{"id": "tx-1", "title": "x", "priority": 1' + "0" * 5000 + '}', "invalid JSON"),
    ('{"id": "../../etc", "title": "x", "priority": 1}', "invalid issue id"),
    ('{"id": "tx-1", "title": 5, "priority": 1}', "'title' must be text"),
    ('{"id": "tx-1", "title": "x", "priority": 1, "labels": "security"}', "'labels' must be a list"),
    ('{"id": "tx-1", "title": "x", "priority": 1, "status": "closed", "closed_at": 17}', "'closed_at' must be text"),
    ('{"_type": "comment", "id": "c1"}', "unknown record type 'comment'"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
]


@pytest.mark.parametrize("bad,expect", HOSTILE, ids=[e for _b, e in HOSTILE])
def test_hostile_jsonl_lines_name_the_line_and_pay_nothing(beads_repo, txbd, no_bd, bad, expect):
    path = beads_repo / ".beads" / "issues.jsonl"
    lines = path.read_text().splitlines()
    lines.insert(5, bad)  # line 6; valid closed issues come before and after it
    path.write_text("\n".join(lines) + "\n")
    for args in (["sync", "--agent", "zero"], ["preview-all"]):
        line = one_line_error(txbd(*args))
        assert "issues.jsonl line 6" in line and expect in line, line
    assert ledger_txns(beads_repo) == []


def test_unconfigured_priority_fails_before_paying(beads_repo, txbd, no_bd):
    path = beads_repo / ".beads" / "issues.jsonl"
    good = path.read_text()
    path.write_text(good + '{"id": "tx-7", "title": "x", "priority": 7, "status": "closed"}\n')
    line = one_line_error(txbd("sync", "--agent", "zero"))
    assert "issues.jsonl line 11 (tx-7): no reward configured for priority P7" in line
    assert ledger_txns(beads_repo) == []
    path.write_text(good + '{"id": "tx-7", "title": "x", "priority": 7}\n')
    assert "no reward configured for priority P7" in one_line_error(txbd("preview-all"))


def test_invalid_utf8_and_custom_statuses(beads_repo, txbd, no_bd, monkeypatch):
    path = beads_repo / ".beads" / "issues.jsonl"
    path.write_bytes(path.read_bytes() + b'{"id": "tx-9", "title": "\xff\xfe", "priority": 1}\n')
    assert "issues.jsonl line 11: not valid UTF-8" in one_line_error(txbd("preview-all"))
    path.write_text(SMALL.read_text() + '{"id": "tx-9", "title": "t", "priority": 1, "status": "review"}\n')
    monkeypatch.setenv("TX_BD_EXTRA_STATUSES", "review, qa")
    d = txbd("preview-all", "--json").json()
    assert "tx-9" in {i["id"] for i in d["issues"]}


def test_huge_file_and_huge_line_are_refused(beads_repo, txbd, no_bd, monkeypatch):
    from token_exchange import beads

    monkeypatch.setattr(beads, "MAX_LINE", 300)
    line = one_line_error(txbd("preview-all"))
    assert "issues.jsonl line 1: line is" in line and "max 300" in line
    monkeypatch.setattr(beads, "MAX_FILE", 1000)
    line = one_line_error(txbd("preview-all"))
    assert "too large for an issue export" in line


def test_no_bd_and_no_export(tmp_path, txbd, no_bd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_line_error(txbd("preview-all"))
    assert "bd is not installed and there is no .beads/issues.jsonl" in line


def test_previews_work_before_tx_init(repo, txbd, no_bd, monkeypatch):
    (repo / ".beads").mkdir()
    shutil.copy(SMALL, repo / ".beads" / "issues.jsonl")
    monkeypatch.chdir(repo)
    r = txbd("preview", "tx-b71c", "--json")
    assert r.code == 0 and r.json()["reward"] == 450 and "default reward tables" in r.err


# --------------------------------------------------------------------------- the on_close hook

def test_install_hook_and_hook_pays_once(beads_repo, txbd):
    r = txbd("install-hook")
    assert r.code == 0, r.err
    assert "asynchronously" in r.err and "sync" in r.err
    hook = beads_repo / ".beads" / "hooks" / "on_close"
    assert os.access(hook, os.X_OK)
    closed = bd("close", "tx-b71c", "--json", env={"BD_NO_HOOKS": "1"})  # the hook is run by hand below
    payload = json.dumps(json.loads(closed.stdout)[0])
    env = {**os.environ}
    runs = [subprocess.run([str(hook), "tx-b71c", "close"], input=payload, capture_output=True, text=True,
                           env=env, cwd="/") for _ in range(2)]
    assert runs[0].returncode == 0, runs[0].stderr
    assert "paid 450 tokens to builder" in runs[0].stderr
    assert "already paid" in runs[1].stderr
    assert len(ledger_txns(beads_repo)) == 1
    quiet = subprocess.run([str(hook), "tx-a3f8.1.2", "close"], input="", capture_output=True, text=True,
                           env={**env, "TOKEN_EXCHANGE_BD_CLOSING": "1"})
    assert quiet.returncode == 0 and len(ledger_txns(beads_repo)) == 1
    s = txbd("sync", "--json", "--agent", "zero").json()
    assert "tx-b71c" not in {p["id"] for p in s["paid"]}


def _paid(repo: Path) -> dict[str, tuple[str, str]]:
    """issue id -> (agent, how it was paid) for every issue payment in the ledger."""
    return {t["id"][len("issue:"):]: (t["agent"], t["source"]["via"]) for t in ledger_txns(repo)}


def test_bd_close_fires_the_installed_hook_and_pays_once(beads_repo, txbd):
    """bd itself runs .beads/hooks/on_close after `bd close` (the stand-in waits for it): paid at
    once, re-closing fires the hook again but pays nothing new, and a later sync pays nothing new."""
    assert txbd("install-hook").code == 0
    log = beads_repo / "hooks.log"
    p = bd("close", "tx-b71c", "--json", env={"BD_STANDIN_HOOK_LOG": str(log)})
    assert p.returncode == 0, p.stderr
    (rec,) = [json.loads(x) for x in log.read_text().splitlines()]
    assert rec["outcome"] == "exited" and rec["exit_code"] == 0, rec
    assert "paid 450 tokens to builder" in rec["stderr"]
    assert _paid(beads_repo) == {"tx-b71c": ("builder", "hook")}
    assert bd("close", "tx-b71c", "-r", "again").returncode == 0
    s = txbd("sync", "--json", "--agent", "zero").json()
    assert "tx-b71c" not in {x["id"] for x in s["paid"]}
    assert len([t for t in ledger_txns(beads_repo) if t["id"] == "issue:tx-b71c"]) == 1
    assert balance(beads_repo, "builder") == 10450


def test_tx_bd_close_with_the_hook_installed_pays_once(beads_repo, txbd):
    """`tx-bd close` runs `bd close`, which fires the hook; the hook stays quiet (TOKEN_EXCHANGE_BD_CLOSING)."""
    assert txbd("install-hook").code == 0
    log = beads_repo / "hooks.log"
    os.environ["BD_STANDIN_HOOK_LOG"] = str(log)
    try:
        r = txbd("close", "tx-b71c", "--json")
    finally:
        del os.environ["BD_STANDIN_HOOK_LOG"]
    assert r.code == 0 and r.json()["total_paid"] == 450
    assert [json.loads(x)["hook"] for x in log.read_text().splitlines()] == ["on_close"]
    assert _paid(beads_repo) == {"tx-b71c": ("builder", "close")}


def test_a_cut_off_hook_is_caught_up_by_sync(beads_repo, txbd):
    """bd may exit before its hook runs (BD_STANDIN_CUT_HOOKS=1 models the worst case): nothing
    is paid until `tx-bd sync`, which pays it once."""
    assert txbd("install-hook").code == 0
    assert bd("close", "tx-b71c", env={"BD_STANDIN_CUT_HOOKS": "1"}).returncode == 0
    assert _paid(beads_repo) == {}
    s = txbd("sync", "--json").json()
    assert {x["id"] for x in s["paid"]} == {"tx-b71c", "tx-a3f8.1.2"}
    assert _paid(beads_repo)["tx-b71c"] == ("builder", "sync")
    assert txbd("sync", "--json").json()["paid"] == []


def test_sync_from_the_file_sees_a_bd_close_only_after_bd_export(beads_repo, txbd):
    """bd >= 1.0.4 writes .beads/issues.jsonl only on `bd export`: a sync that reads the file
    misses a close until the user runs `bd export -o .beads/issues.jsonl`."""
    export = beads_repo / ".beads" / "issues.jsonl"
    assert bd("close", "tx-b71c").returncode == 0
    d = txbd("sync", "--jsonl", str(export), "--agent", "zero", "--json").json()
    assert {x["id"] for x in d["paid"]} == {"tx-a3f8.1.2", "tx-d4e5"}  # tx-b71c: not in the stale file
    assert bd("export", "-o", str(export)).returncode == 0
    d = txbd("sync", "--jsonl", str(export), "--agent", "zero", "--json").json()
    assert [x["id"] for x in d["paid"]] == ["tx-b71c"]


# --------------------------------------------------------------------------- what the adapter gets wrong
# Each test below states what real bd (v1.0.5) does, as the stand-in now reproduces it, and what
# the adapter should then do.  They fail today; strict xfail makes them flip once it is fixed.

@pytest.mark.xfail(strict=True, reason="adapter pays closed wisps: bd list merges ephemeral issues "
                   "(search_counts.go) and the adapter does not skip ephemeral=true")
def test_sync_does_not_pay_closed_wisps(beads_repo, txbd):
    w = json.loads(bd("create", "Patrol the queue", "--ephemeral", "-a", "builder@example.com", "--json").stdout)
    assert bd("close", w["id"]).returncode == 0
    assert w["id"] in {i["id"] for i in json.loads(bd("list", "--status", "closed", "--json").stdout)}
    d = txbd("sync", "--json", "--agent", "zero").json()
    assert w["id"] not in {x["id"] for x in d["paid"]}
    assert w["id"] not in _paid(beads_repo)


@pytest.mark.xfail(strict=True, reason="adapter pays a wisp closed through `tx-bd close`")
def test_close_does_not_pay_a_wisp(beads_repo, txbd):
    w = json.loads(bd("create", "Patrol the queue", "--ephemeral", "-a", "builder@example.com", "--json").stdout)
    r = txbd("close", w["id"], "--json")
    assert r.code == 0 and r.json()["total_paid"] == 0
    assert _paid(beads_repo) == {}


@pytest.mark.xfail(strict=True, reason="preview-all through bd lists open wisps, the export never "
                   "has them: the total at stake depends on the path the data came by")
def test_preview_all_is_the_same_through_bd_and_the_export_with_wisps(beads_repo, txbd):
    assert bd("create", "Patrol the queue", "--ephemeral", "-p", "0", "--json").returncode == 0
    export = beads_repo / ".beads" / "issues.jsonl"
    assert bd("export", "-o", str(export)).returncode == 0
    via_bd = txbd("preview-all", "--json").json()
    via_file = txbd("preview-all", "--jsonl", str(export), "--json").json()
    assert [i["id"] for i in via_bd["issues"]] == [i["id"] for i in via_file["issues"]]
    assert via_bd["total"] == via_file["total"]


@pytest.mark.xfail(strict=True, reason="`bd update --status closed` fires only on_update (v1.x); "
                   "install-hook writes only on_close and the hook ignores the update event")
def test_update_status_closed_is_paid_by_the_hook(beads_repo, txbd):
    assert txbd("install-hook").code == 0
    assert bd("update", "tx-b71c", "--status", "closed").returncode == 0
    assert _paid(beads_repo) == {"tx-b71c": ("builder", "hook")}


@pytest.mark.xfail(strict=True, reason="adapter takes the closer from git user.email; bd's actor is "
                   "git user.name (main.go getActorWithGit)")
def test_payee_falls_back_to_bds_actor_git_user_name(beads_repo, txbd):
    subprocess.run(["git", "config", "user.name", "spark"], cwd=beads_repo, check=True)
    subprocess.run(["git", "config", "user.email", "lambda@aygp-dr.ai"], cwd=beads_repo, check=True)
    assert bd("update", "tx-c02d", "--assignee", "mystery-agent").returncode == 0
    d = txbd("close", "tx-c02d", "--json").json()["closed"][0]
    assert d["agent"] == "spark" and d["payee_from"] == "actor"


@pytest.mark.xfail(strict=True, reason="adapter prefers BEADS_ACTOR; bd 1.0.5 uses BD_ACTOR when both "
                   "are set (viper binds BD_ACTOR to `actor`, main.go l.422/925)")
def test_payee_actor_when_both_actor_variables_are_set(beads_repo, txbd, monkeypatch):
    monkeypatch.setenv("BEADS_ACTOR", "lambda")
    monkeypatch.setenv("BD_ACTOR", "spark")
    assert bd("update", "tx-c02d", "--assignee", "mystery-agent").returncode == 0
    assert json.loads(bd("create", "who am i", "--json").stdout)["created_by"] == "spark"  # bd's own view
    d = txbd("close", "tx-c02d", "--json").json()["closed"][0]
    assert d["agent"] == "spark"


def _redirected(repo: Path, tmp_path: Path) -> None:
    """repo/.beads/redirect -> a shared beads dir holding the database (bd follows it)."""
    shared = tmp_path / "shared" / ".beads"
    seed_bd_store(shared, SMALL)
    shutil.rmtree(repo / ".beads" / "embeddeddolt")
    (repo / ".beads" / "redirect").write_text(str(shared) + "\n")


def _worktree(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Work in a linked worktree of repo whose .beads has only tracked files (bd uses the main one)."""
    (repo / ".gitignore").write_text(".beads/embeddeddolt/\n.exchange/\n")
    subprocess.run(["git", "add", ".gitignore", ".beads/config.yaml"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-q", "--no-verify", "-m", "beads"], cwd=repo, check=True)
    wt = tmp_path / "wt"
    subprocess.run(["git", "worktree", "add", "-q", str(wt), "-b", "feature"], cwd=repo, check=True)
    monkeypatch.setenv("TOKEN_EXCHANGE_HOME", str(repo / ".exchange"))
    monkeypatch.chdir(wt)


@pytest.mark.xfail(strict=True, reason="install-hook writes <toplevel>/.beads/hooks; bd runs the hooks "
                   "of its RESOLVED beads dir (redirect target, main repo of a worktree)")
@pytest.mark.parametrize("layout", ["redirect", "worktree"])
def test_install_hook_writes_into_bds_resolved_beads_dir(beads_repo, txbd, tmp_path, monkeypatch, layout):
    if layout == "redirect":
        _redirected(beads_repo, tmp_path)
    else:
        _worktree(beads_repo, tmp_path, monkeypatch)
    assert txbd("install-hook").code == 0
    assert bd("close", "tx-b71c").returncode == 0
    assert _paid(beads_repo) == {"tx-b71c": ("builder", "hook")}


@pytest.mark.xfail(strict=True, reason="a file-based sync reads a stale export silently; it should warn "
                   "(the database is newer) or run `bd export` first when bd is on PATH")
def test_sync_from_a_stale_export_says_so_or_exports_first(beads_repo, txbd):
    export = beads_repo / ".beads" / "issues.jsonl"
    assert bd("close", "tx-b71c").returncode == 0
    r = txbd("sync", "--jsonl", str(export), "--agent", "zero", "--json")
    assert r.code == 0
    paid = {x["id"] for x in r.json()["paid"]}
    said = r.err.replace(str(beads_repo.parent), "<tmp>")  # (the tmp path names this test)
    assert "tx-b71c" in paid or ("export" in said and ("older" in said or "stale" in said))


def test_install_hook_refuses_a_foreign_hook(beads_repo, txbd):
    hook = beads_repo / ".beads" / "hooks" / "on_close"
    hook.parent.mkdir()
    hook.write_text("#!/bin/sh\necho mine\n")
    assert "not ours" in one_line_error(txbd("install-hook"))
    assert txbd("install-hook", "--force").code == 0
    assert txbd("install-hook").code == 0  # ours now: rewriting is fine


def test_hook_shapes_and_events(beads_repo, txbd):
    assert bd("close", "tx-b71c").returncode == 0
    shown = bd("show", "tx-b71c", "--json").stdout
    assert txbd("hook", "tx-b71c", "update", input=shown).code == 0  # other events: nothing
    assert ledger_txns(beads_repo) == []
    envelope = json.dumps({"schema_version": 1, "data": json.loads(shown)})
    r = txbd("hook", "tx-b71c", "close", input=envelope)
    assert r.code == 0 and "paid 450" in r.err
    r = txbd("hook", "tx-a3f8.1.2", "close", input="")  # no stdin: asks bd
    assert r.code == 0 and "paid 120" in r.err
    r = txbd("hook", "tx-b71c", "close", input='{"id": "tx-c02d", "title": "x", "priority": 0}')
    assert "not tx-b71c" in one_line_error(r)
    r = txbd("hook", "tx-c02d", "close", input=bd("show", "tx-c02d", "--json").stdout)
    assert r.code == 0 and "not closed; nothing paid" in r.err
    assert "not JSON" in one_line_error(txbd("hook", "tx-b71c", "close", input="{oops"))


# --------------------------------------------------------------------------- CLI conventions

def test_usage_errors_exit_2_and_json_errors(beads_repo, txbd):
    assert txbd("preview").code == 2
    assert txbd("close").code == 2
    r = txbd("preview", "tx-nope", "--json")
    assert r.code == 1 and set(r.json()) == {"error"}


def test_console_script_and_light_import(beads_repo):
    r = subprocess.run([sys.executable, "-c", "import sys, token_exchange.cli.bd; print('rich' in sys.modules)"],
                       capture_output=True, text=True)
    assert r.stdout.strip() == "False", r.stderr
    exe = shutil.which("tx-bd")
    if exe:
        r = subprocess.run([exe, "preview", "tx-b71c", "--json"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["reward"] == 450
