"""tx-bd: previews and idempotent issue-close payments, through the bd stand-in and the JSONL export."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import FIXTURES, GENERATED_CUSTOM_TYPES, Result, from_template, initial_repo, seed_bd_store
from token_exchange import clock

BD = FIXTURES / "bd"
SMALL = FIXTURES / "beads" / "small.jsonl"
BIG = FIXTURES / "beads" / "issues.jsonl"


def _path_without_bd() -> str:
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and not (Path(p) / "bd").exists())


def _beads_repo(repo: Path) -> None:
    initial_repo(repo)
    (repo / ".beads").mkdir()
    shutil.copy(SMALL, repo / ".beads" / "issues.jsonl")
    seed_bd_store(repo / ".beads", SMALL)
    from token_exchange.services.setup import init_home

    init_home(repo / ".exchange", "toml")


@pytest.fixture
def beads_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temp repo (the `repo` fixture's), an exchange, bd (the stand-in) on PATH, and small.jsonl twice:
    imported into bd's database (.beads/embeddeddolt/) and as the tracked export .beads/issues.jsonl.  The
    repository, the import and the exchange are made once per worker and copied (conftest.from_template)."""
    repo = from_template("beads_repo", tmp_path / "nexushive-setup", _beads_repo)
    monkeypatch.setenv("PATH", f"{FIXTURES}{os.pathsep}{_path_without_bd()}")
    monkeypatch.setenv("BD_STANDIN_NOW", "2026-02-01T12:00:00.123456789Z")
    monkeypatch.setenv("USER", "ci-runner")  # bd's last actor source: a name that is no agent
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
def txbd(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
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
    return subprocess.run([sys.executable, str(BD), *args], capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})})


def ledger_txns(repo: Path) -> list[dict]:
    from token_exchange.services.exchange import Exchange

    ex = Exchange(repo / ".exchange")
    try:
        return [t.to_json() for t in ex.ledger.fresh().iter_txns() if t.id.startswith(("issue:", "reversal:issue:"))]
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


def test_issue_caps_cut_a_close_to_what_the_window_leaves(beads_repo, txbd):
    """[caps] issues: one batch of closes sees its own earlier awards; the next close in the window pays 0."""
    cfg = beads_repo / ".exchange" / "config.toml"
    cfg.write_text(cfg.read_text().replace("\n[caps]\n", "\n[caps]\nissues = { daily = 500 }\n", 1))
    r = txbd("close", "tx-b71c", "tx-a3f8.1", "--json")  # builder: a P2 bug (450), then a P2 task (300)
    assert r.code == 0, r.err
    paid = {c["id"]: c["amount"] for c in r.json()["closed"]}
    assert paid == {"tx-b71c": 450, "tx-a3f8.1": 50}
    assert balance(beads_repo, "builder") == 10500
    cut = next(t for t in ledger_txns(beads_repo) if t["id"] == "issue:tx-a3f8.1")
    assert "daily issues cap 500" in cut["breakdown"]["cap"]
    preview = txbd("preview", "tx-a3f8", "--json")  # claude's cap is untouched by builder's awards
    assert preview.code == 0 and preview.json()["reward"] == 500, preview.err  # a P1 epic: 500 x 1.0
    assert preview.json()["pays"] == 500 and preview.json()["cut"] is None
    # A preview prices a close made now: at the stand-in's "now" builder's daily window is spent ...
    with clock.injected(lambda: datetime(2026, 2, 1, 13, 0, tzinfo=UTC)):
        capped = txbd("preview", "tx-e9f0", "--agent", "builder", "--json")  # a P1 task, unassigned
        shown = txbd("preview", "tx-e9f0", "--agent", "builder")
    assert capped.code == 0 and capped.json()["agent"] == "builder", capped.err
    assert capped.json()["reward"] == 400 and capped.json()["pays"] == 0  # P1 500 x task 0.8
    assert "daily issues cap 500" in capped.json()["cut"]
    assert "capped: " in shown.out and "pays 0 tokens" in shown.out
    # ... and two days after the awards were written (the ledger's own time) it is free again.
    with clock.injected(lambda: datetime.now(UTC) + timedelta(days=2)):
        later = txbd("preview", "tx-e9f0", "--agent", "builder", "--json")
    assert later.json()["pays"] == 400 and later.json()["cut"] is None


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
    # Changed by issue 14: bd's actor is git user.name, never user.email (main.go getActorWithGit), so
    # the e-mail alone no longer names a payee; the user name does.
    line = one_line_error(txbd("close", "tx-c02d"))
    assert "nobody to pay for tx-c02d" in line and "'ci-runner' (from $USER) is not an agent" in line
    subprocess.run(["git", "config", "user.name", "lambda"], cwd=beads_repo, check=True)
    d = txbd("close", "tx-c02d", "--json").json()["closed"][0]  # git user.name is bd's actor
    assert d["agent"] == "lambda" and d["payee_from"] == "actor"
    assert d["payee_detail"] == "lambda (bd actor, from git user.name)"
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
    from token_exchange.beads import issues

    monkeypatch.setattr(issues, "MAX_LINE", 300)
    line = one_line_error(txbd("preview-all"))
    assert "issues.jsonl line 1: line is" in line and "max 300" in line
    monkeypatch.setattr(issues, "MAX_FILE", 1000)
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
                           env=env, cwd="/", check=False) for _ in range(2)]
    assert runs[0].returncode == 0, runs[0].stderr
    assert "paid 450 tokens to builder" in runs[0].stderr
    assert "already paid" in runs[1].stderr
    assert len(ledger_txns(beads_repo)) == 1
    quiet = subprocess.run([str(hook), "tx-a3f8.1.2", "close"], input="", capture_output=True, text=True,
                           env={**env, "TOKEN_EXCHANGE_BD_CLOSING": "1"}, check=False)
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


# --------------------------------------------------------------------------- bd as it really is (issue 14)
# Each test below states what real bd (v1.0.5) does, as the stand-in reproduces it, and what the
# adapter does about it.  They were strict xfails until the adapter was fixed (issue 14, parts 2-3).

def test_sync_does_not_pay_closed_wisps(beads_repo, txbd):
    w = json.loads(bd("create", "Patrol the queue", "--ephemeral", "-a", "builder@example.com", "--json").stdout)
    assert bd("close", w["id"]).returncode == 0
    assert w["id"] in {i["id"] for i in json.loads(bd("list", "--status", "closed", "--json").stdout)}
    d = txbd("sync", "--json", "--agent", "zero").json()
    assert w["id"] not in {x["id"] for x in d["paid"]}
    assert w["id"] not in _paid(beads_repo)


def test_close_does_not_pay_a_wisp(beads_repo, txbd):
    w = json.loads(bd("create", "Patrol the queue", "--ephemeral", "-a", "builder@example.com", "--json").stdout)
    r = txbd("close", w["id"], "--json")
    assert r.code == 0 and r.json()["total_paid"] == 0
    assert _paid(beads_repo) == {}


def test_preview_all_is_the_same_through_bd_and_the_export_with_wisps(beads_repo, txbd):
    assert bd("create", "Patrol the queue", "--ephemeral", "-p", "0", "--json").returncode == 0
    export = beads_repo / ".beads" / "issues.jsonl"
    assert bd("export", "-o", str(export)).returncode == 0
    via_bd = txbd("preview-all", "--json").json()
    via_file = txbd("preview-all", "--jsonl", str(export), "--json").json()
    assert [i["id"] for i in via_bd["issues"]] == [i["id"] for i in via_file["issues"]]
    assert via_bd["total"] == via_file["total"]


def test_update_status_closed_is_paid_by_the_hook(beads_repo, txbd):
    assert txbd("install-hook").code == 0
    assert bd("update", "tx-b71c", "--status", "closed").returncode == 0
    assert _paid(beads_repo) == {"tx-b71c": ("builder", "hook")}


def test_payee_falls_back_to_bds_actor_git_user_name(beads_repo, txbd):
    subprocess.run(["git", "config", "user.name", "spark"], cwd=beads_repo, check=True)
    subprocess.run(["git", "config", "user.email", "lambda@aygp-dr.ai"], cwd=beads_repo, check=True)
    assert bd("update", "tx-c02d", "--assignee", "mystery-agent").returncode == 0
    d = txbd("close", "tx-c02d", "--json").json()["closed"][0]
    assert d["agent"] == "spark" and d["payee_from"] == "actor"


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


@pytest.mark.parametrize("layout", ["redirect", "worktree"])
def test_install_hook_writes_into_bds_resolved_beads_dir(beads_repo, txbd, tmp_path, monkeypatch, layout):
    if layout == "redirect":
        _redirected(beads_repo, tmp_path)
    else:
        _worktree(beads_repo, tmp_path, monkeypatch)
    assert txbd("install-hook").code == 0
    assert bd("close", "tx-b71c").returncode == 0
    assert _paid(beads_repo) == {"tx-b71c": ("builder", "hook")}


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
    still_open = bd("show", "tx-b71c", "--json").stdout
    assert txbd("hook", "tx-b71c", "update", input=still_open).code == 0  # an update of an open issue: nothing
    assert txbd("hook", "tx-b71c", "create", input=still_open).code == 0  # other events: nothing
    assert ledger_txns(beads_repo) == []
    assert bd("close", "tx-b71c").returncode == 0
    shown = bd("show", "tx-b71c", "--json").stdout
    # (Changed by issue 14: an update event whose issue is closed now pays -- `bd update --status
    # closed` fires only on_update -- see test_update_status_closed_is_paid_by_the_hook.)
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
                       capture_output=True, text=True, check=False)
    assert r.stdout.strip() == "False", r.stderr
    exe = shutil.which("tx-bd")
    if exe:
        r = subprocess.run([exe, "preview", "tx-b71c", "--json"], capture_output=True, text=True, check=False)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["reward"] == 450


# --------------------------------------------------------------------------- bd's hooks, end to end
# Every test below goes through the stand-in's real hook firing: `tx-bd install-hook`, then plain bd
# commands run the installed scripts as bd 1.0.5 does (hooks.go: `<hook> <id> <event>`, issue JSON on
# stdin, bd's environment and cwd), waited for, cut off before they start (BD_STANDIN_CUT_HOOKS=1), or
# left running on their own after bd exits (BD_STANDIN_CUT_HOOKS=detach).

def hook_log(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _wait_for_detached(log: Path) -> None:
    """Detached hooks outlive bd: wait (bounded) until every one of them has exited."""
    import time

    deadline = time.monotonic() + 120
    for rec in hook_log(log):
        if rec["outcome"] != "detached":
            continue
        while time.monotonic() < deadline:
            try:
                os.kill(rec["pid"], 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"hook {rec} still running")


@pytest.mark.parametrize("cut", ["0", "1", "detach"])
def test_bd_close_and_update_status_closed_each_pay_once_through_the_hooks(beads_repo, txbd, cut):
    """`bd close` fires on_close, `bd update --status closed` only on_update: both pay at once, exactly
    once; cut off, nothing is paid until `tx-bd sync`, which pays each once; a later sync pays nothing."""
    r = txbd("install-hook", "--json")
    assert r.code == 0, r.err
    assert {Path(h).name for h in r.json()["hooks"]} == {"on_close", "on_update"}
    log = beads_repo / "hooks.log"
    env = {"BD_STANDIN_CUT_HOOKS": cut, "BD_STANDIN_HOOK_LOG": str(log)}
    assert bd("close", "tx-b71c", env=env).returncode == 0
    assert bd("update", "tx-c02d", "--status", "closed", env=env).returncode == 0
    _wait_for_detached(log)
    fired = [(x["hook"], x["argv"], x["outcome"]) for x in hook_log(log)]
    expect = {"0": "exited", "1": "cut", "detach": "detached"}[cut]
    assert fired == [("on_close", ["tx-b71c", "close"], expect), ("on_update", ["tx-c02d", "update"], expect)]
    by_hook = {} if cut == "1" else {"tx-b71c": ("builder", "hook"), "tx-c02d": ("claude", "hook")}
    assert _paid(beads_repo) == by_hook
    if cut == "0":
        assert all(x["exit_code"] == 0 for x in hook_log(log))
    s = txbd("sync", "--json").json()
    assert {x["id"] for x in s["paid"]} == ({"tx-b71c", "tx-c02d"} - set(by_hook)) | {"tx-a3f8.1.2"}
    assert _paid(beads_repo)["tx-b71c"][0] == "builder" and _paid(beads_repo)["tx-c02d"][0] == "claude"
    assert txbd("sync", "--json").json()["paid"] == []
    issue_txns = [t["id"] for t in ledger_txns(beads_repo)]
    assert sorted(issue_txns) == ["issue:tx-a3f8.1.2", "issue:tx-b71c", "issue:tx-c02d"]
    assert balance(beads_repo, "builder") == 10450 and balance(beads_repo, "claude") == 10000 + 1000 + 120


def test_every_later_hook_on_a_paid_issue_pays_nothing(beads_repo, txbd):
    """Re-closing fires on_close again, any update of a closed issue fires on_update with it closed:
    one payment, whatever the number of hooks."""
    assert txbd("install-hook").code == 0
    log = beads_repo / "hooks.log"
    env = {"BD_STANDIN_HOOK_LOG": str(log)}
    assert bd("close", "tx-b71c", env=env).returncode == 0
    assert bd("close", "tx-b71c", "-r", "again", env=env).returncode == 0
    assert bd("update", "tx-b71c", "--notes", "n", "--add-label", "x", env=env).returncode == 0
    assert bd("update", "tx-b71c", "--status", "closed", env=env).returncode == 0
    assert len(hook_log(log)) == 5 and all(x["exit_code"] == 0 for x in hook_log(log))
    assert "already paid 450 to builder" in hook_log(log)[-1]["stderr"]
    assert _paid(beads_repo) == {"tx-b71c": ("builder", "hook")}
    assert balance(beads_repo, "builder") == 10450


def test_tx_bd_close_with_both_hooks_installed_pays_once(beads_repo, txbd):
    assert txbd("install-hook").code == 0
    log = beads_repo / "hooks.log"
    os.environ["BD_STANDIN_HOOK_LOG"] = str(log)
    try:
        assert txbd("close", "tx-b71c").code == 0
    finally:
        del os.environ["BD_STANDIN_HOOK_LOG"]
    assert [(x["hook"], x["exit_code"], x["stderr"]) for x in hook_log(log)] == [("on_close", 0, "")]
    assert _paid(beads_repo) == {"tx-b71c": ("builder", "close")}


def test_wisps_are_never_paid_on_any_path(beads_repo, txbd, monkeypatch):
    """bd list --json merges wisps, the hooks hand them over, an old export may carry one (legacy
    `"wisp": true` too): none of them is ever paid or listed as open work."""
    assert txbd("install-hook").code == 0
    log = beads_repo / "hooks.log"
    w = json.loads(bd("create", "Patrol", "--ephemeral", "-a", "builder@example.com", "--json").stdout)
    assert bd("close", w["id"], env={"BD_STANDIN_HOOK_LOG": str(log)}).returncode == 0
    (rec,) = hook_log(log)
    assert rec["exit_code"] == 0 and json.loads(rec["stdin"])["ephemeral"] is True
    r = txbd("hook", w["id"], "close", input=rec["stdin"])  # by hand as well
    assert r.code == 0 and r.err == ""
    assert txbd("sync", "--json").json()["not_work"] == 1
    assert w["id"] not in _paid(beads_repo)
    export = beads_repo / ".beads" / "issues.jsonl"
    lines = export.read_text().splitlines()
    for n, flag in enumerate(("ephemeral", "wisp")):
        lines.append(json.dumps({"id": f"tx-wisp-{n}", "title": "w", "priority": 0, "status": "closed",
                                 "closed_at": "2026-01-01T00:00:00Z", "assignee": "builder@example.com", flag: True}))
        lines.append(json.dumps({"id": f"tx-wisp-open-{n}", "title": "w", "priority": 0, "status": "open", flag: True}))
    export.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("PATH", _path_without_bd())
    d = txbd("sync", "--json").json()
    assert not {x["id"] for x in d["paid"]} & {"tx-wisp-0", "tx-wisp-1"}
    assert not [i for i in txbd("preview-all", "--json").json()["issues"] if "wisp" in i["id"]]
    p = txbd("preview", "tx-wisp-1", "--json").json()
    assert p["work"] is False and p["reward"] == 0 and "wisp" in p["not_work"]
    assert not [t for t in ledger_txns(beads_repo) if "wisp" in t["id"]]


# --------------------------------------------------------------------------- reopen after payment (issue 15.3)

def _later(monkeypatch: pytest.MonkeyPatch, seconds: int) -> None:
    """Move bd's clock (the stand-in's BD_STANDIN_NOW): bd stores whole seconds."""
    monkeypatch.setenv("BD_STANDIN_NOW", f"2026-02-01T12:{seconds // 60:02d}:{seconds % 60:02d}Z")


def test_reopen_after_payment_is_reversed_once_and_a_later_close_pays_once(beads_repo, txbd, monkeypatch):
    assert txbd("install-hook").code == 0
    assert bd("close", "tx-b71c").returncode == 0
    assert balance(beads_repo, "builder") == 10450
    _later(monkeypatch, 60)
    assert bd("reopen", "tx-b71c").returncode == 0  # fires on_update with the issue open
    assert balance(beads_repo, "builder") == 10000
    rev = next(t for t in ledger_txns(beads_repo) if t["kind"] == "reversal")
    assert rev["id"] == "reversal:issue:tx-b71c" and rev["payer"] == "builder" and rev["payee"] == "world:rewards"
    assert rev["amount"] == "450" and rev["source"] == {"type": "reversal", "reverses": "issue:tx-b71c",
                                                         "issue": "tx-b71c"}
    assert bd("update", "tx-b71c", "--notes", "still open").returncode == 0  # reversed once only
    s = txbd("sync", "--json").json()
    assert s["reversed"] == [] and "tx-b71c" not in {x["id"] for x in s["paid"]}
    _later(monkeypatch, 120)
    assert bd("close", "tx-b71c").returncode == 0
    assert balance(beads_repo, "builder") == 10450
    assert "tx-b71c" not in {x["id"] for x in txbd("sync", "--json").json()["paid"]}
    ids = [t["id"] for t in ledger_txns(beads_repo) if "tx-b71c" in t["id"]]
    assert ids == ["issue:tx-b71c", "reversal:issue:tx-b71c", "issue:tx-b71c:2"]
    assert txbd("sync", "--json").json()["paid"] == []


def test_a_reopen_the_hook_missed_is_reversed_by_sync_and_a_stale_export_reverses_nothing(beads_repo, txbd,
                                                                                          monkeypatch):
    export = beads_repo / ".beads" / "issues.jsonl"
    assert bd("close", "tx-b71c").returncode == 0  # no hook installed: sync pays it
    assert "tx-b71c" in {x["id"] for x in txbd("sync", "--json").json()["paid"]}
    # an export written before the close still says "open": it is older than the close, nothing happens
    d = txbd("sync", "--jsonl", str(export), "--json").json()
    assert d["reversed"] == [] and balance(beads_repo, "builder") == 10450
    _later(monkeypatch, 30)
    assert bd("reopen", "tx-b71c").returncode == 0
    d = txbd("sync", "--json").json()
    assert [(x["id"], x["reversed"], x["reversed_amount"]) for x in d["reversed"]] == [("tx-b71c", True, 450)]
    assert balance(beads_repo, "builder") == 10000
    assert txbd("sync", "--json").json()["reversed"] == []
    text = txbd("sync")
    assert text.err.count("\n") == 1 and "synced" in text.err
    # the exported close that was paid and reversed pays nothing again; a new close does
    assert bd("export", "-o", str(export), env={"BD_STANDIN_NOW": "2026-02-01T12:00:00Z"}).returncode == 0


def test_a_reversal_never_makes_a_wallet_negative(beads_repo, txbd, monkeypatch):
    from token_exchange.ledger.txn import LLM, make_txn
    from token_exchange.services.exchange import Exchange

    assert txbd("close", "tx-b71c").code == 0
    ex = Exchange(beads_repo / ".exchange")
    try:
        ex.ledger.append(make_txn("spend:test-all", "spend", "builder", LLM, 10_400 * 10_000, agent="builder"))
    finally:
        ex.close()
    _later(monkeypatch, 30)
    assert bd("reopen", "tx-b71c").returncode == 0
    d = txbd("sync", "--json").json()
    (kept,) = d["reversed"]
    assert kept["reversed"] is False and "below zero" in kept["note"] and "the payment stands" in kept["note"]
    assert balance(beads_repo, "builder") == 50
    _later(monkeypatch, 60)
    assert bd("close", "tx-b71c").returncode == 0
    assert "tx-b71c" not in {x["id"] for x in txbd("sync", "--json").json()["paid"]}  # it stood: nothing new
    assert [t["id"] for t in ledger_txns(beads_repo) if "tx-b71c" in t["id"]] == ["issue:tx-b71c"]


# --------------------------------------------------------------------------- payee: bd's actor, said plainly

@pytest.mark.parametrize("case", [
    {"flag": "spark", "env": {"BEADS_ACTOR": "lambda", "BD_ACTOR": "zero"}, "want": "spark", "source": "--actor"},
    {"env": {"BEADS_ACTOR": "lambda", "BD_ACTOR": "spark"}, "want": "spark", "source": "BD_ACTOR"},
    {"env": {"BEADS_ACTOR": "lambda"}, "config": "spark", "want": "spark", "source": "config.yaml actor"},
    {"env": {"BEADS_ACTOR": "lambda"}, "want": "lambda", "source": "BEADS_ACTOR"},
    {"env": {}, "dotenv": "BD_ACTOR=spark", "want": "spark", "source": "BD_ACTOR"},
    {"env": {}, "git": "zero", "want": "zero", "source": "git user.name"},
    {"env": {"USER": "observer"}, "want": "observer", "source": "$USER"},
])
def test_the_payee_is_bds_own_actor(beads_repo, txbd, monkeypatch, case):
    """The actor tx-bd pays is the one the bd binary records (the stand-in's created_by, main.go order)."""
    monkeypatch.delenv("USER", raising=False)
    for k, v in case["env"].items():
        monkeypatch.setenv(k, v)
    if case.get("config"):
        (beads_repo / ".beads" / "config.yaml").write_text(f"issue-prefix: tx\nactor: {case['config']}\n")
    if case.get("dotenv"):
        (beads_repo / ".beads" / ".env").write_text(case["dotenv"] + "\n")
    if case.get("git"):
        subprocess.run(["git", "config", "user.name", case["git"]], cwd=beads_repo, check=True)
    flag = ["--actor", case["flag"]] if case.get("flag") else []
    made = json.loads(bd(*flag, "create", "who", "--json").stdout)
    assert made["created_by"] == case["want"]
    assert bd("update", "tx-c02d", "--assignee", "mystery-agent").returncode == 0
    d = txbd("close", "tx-c02d", *flag, "--json").json()["closed"][0]
    assert d["agent"] == case["want"] and d["payee_from"] == "actor"
    assert d["payee_detail"].startswith(f"{case['want']} (bd actor, from {case['source']}")
    (t,) = ledger_txns(beads_repo)
    assert t["breakdown"]["payee_from"] == "actor"


def test_the_hook_pays_bds_actor_from_its_environment(beads_repo, txbd):
    assert txbd("install-hook").code == 0
    assert bd("update", "tx-c02d", "--assignee", "mystery-agent").returncode == 0
    assert bd("close", "tx-c02d", env={"BD_ACTOR": "spark"}).returncode == 0
    assert _paid(beads_repo) == {"tx-c02d": ("spark", "hook")}


# --------------------------------------------------------------------------- the beads dir bd resolves

def test_beads_dir_resolution_follows_bd(beads_repo, tmp_path, monkeypatch):
    from token_exchange.beads import workspace

    main = beads_repo / ".beads"
    sub = beads_repo / "src" / "deep"
    sub.mkdir(parents=True)
    assert workspace.resolve(sub) == workspace.BeadsDir(main.resolve(), True, f".beads in {beads_repo.resolve()}")
    empty = tmp_path / "empty-beads"
    empty.mkdir()
    monkeypatch.setenv("BEADS_DIR", str(empty))  # no database there: bd searches on (FindDatabasePath)
    assert workspace.resolve(sub).path == main.resolve()
    shared = tmp_path / "shared" / ".beads"
    seed_bd_store(shared, SMALL)
    monkeypatch.setenv("BEADS_DIR", str(shared))
    assert workspace.resolve(sub) == workspace.BeadsDir(shared.resolve(), True, "$BEADS_DIR")
    monkeypatch.delenv("BEADS_DIR")
    _redirected(beads_repo, tmp_path)
    found = workspace.resolve(beads_repo)
    assert found is not None and found.path == shared.resolve() and "redirect" in found.how
    outside = tmp_path / "outside"
    outside.mkdir()
    assert workspace.resolve(outside) is None


def test_beads_dir_of_a_worktree_is_the_main_repositorys(beads_repo, txbd, tmp_path, monkeypatch):
    from token_exchange.beads import workspace

    _worktree(beads_repo, tmp_path, monkeypatch)
    found = workspace.resolve(Path.cwd())
    assert found is not None and found.path == (beads_repo / ".beads").resolve() and "worktree" in found.how
    r = txbd("install-hook", "--json").json()
    assert r["beads_dir"] == str((beads_repo / ".beads").resolve()) and "worktree" in r["found_by"]
    assert not (tmp_path / "wt" / ".beads" / "hooks").exists()
    assert bd("update", "tx-b71c", "--status", "closed").returncode == 0
    assert _paid(beads_repo) == {"tx-b71c": ("builder", "hook")}


def test_install_hook_never_writes_through_a_symlink(beads_repo, txbd, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    hooks = beads_repo / ".beads" / "hooks"
    hooks.mkdir()
    (hooks / "on_update").symlink_to(victim)
    assert "not ours" in one_line_error(txbd("install-hook"))
    assert not (hooks / "on_close").exists()  # nothing installed when one hook is refused
    assert txbd("install-hook", "--force").code == 0
    assert victim.read_text() == "keep me\n" and not (hooks / "on_update").is_symlink()


# --------------------------------------------------------------------------- sync: quiet, and honest about stale files

def test_sync_is_one_line_unless_verbose(beads_repo, txbd):
    assert bd("close", "tx-b71c").returncode == 0
    r = txbd("sync")
    assert r.code == 0 and r.out == ""
    (line,) = r.err.splitlines()
    assert line.startswith("tx-bd: synced 3 closed issues from bd (") and "paid 2 (570 tokens)" in line
    assert "1 without an agent (--verbose lists them)" in line
    v = txbd("sync", "--verbose")
    assert "tx-d4e5: not paid (assignee 'mystery-agent' is not an agent" in v.err
    assert len(v.err.splitlines()) == 2
    assert bd("close", "tx-c02d").returncode == 0
    v = txbd("sync", "-v")
    assert "tx-c02d: paid 1000 tokens to claude" in v.err and len(v.err.splitlines()) == 3


def test_sync_from_a_file_without_bd_warns_when_the_database_is_newer(beads_repo, txbd, no_bd):
    export = beads_repo / ".beads" / "issues.jsonl"
    store = beads_repo / ".beads" / "embeddeddolt"
    os.utime(export, (2_000_000_000, 2_000_000_000))  # exported after the last write: no warning
    r = txbd("sync", "--agent", "zero")
    assert r.code == 0 and "warning" not in r.err
    os.utime(store / "bd-standin.json", (2_000_000_100, 2_000_000_100))  # bd wrote after the export
    r = txbd("sync", "--agent", "zero", "--json")
    assert "changed after" in r.json()["warning"] and "bd export" in r.err


# --------------------------------------------------------------------------- hostile input (issue 13)

def _fake_bd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stdout: str, code: int = 0) -> Path:
    """A `bd` that prints what it is told (stands for a broken or hostile bd on BEADS_PATH)."""
    out = tmp_path / "fake-bd.out"
    out.write_text(stdout)
    fake = tmp_path / "fake-bd"
    fake.write_text(f"#!/bin/sh\ncat {str(out)!r}\nexit {code}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("BEADS_PATH", str(fake))
    return out


def test_close_never_pays_an_issue_it_did_not_ask_for(beads_repo, txbd, tmp_path, monkeypatch):
    closed = [{"id": i, "title": "x", "priority": 0, "status": "closed", "closed_at": "2026-01-01T00:00:00Z",
               "assignee": "builder@example.com"} for i in ("tx-1", "tx-2", "tx-12")]
    _fake_bd(tmp_path, monkeypatch, json.dumps(closed))
    r = txbd("close", "tx-1", "--json")
    assert r.code == 0, r.err
    d = r.json()
    assert [c["id"] for c in d["closed"]] == ["tx-1"] and d["ignored"] == ["tx-2", "tx-12"]
    assert {t["id"] for t in ledger_txns(beads_repo)} == {"issue:tx-1"}
    text = txbd("close", "tx-1")
    assert "tx-2: bd returned it but it was not asked for; not paid here" in text.err
    _fake_bd(tmp_path, monkeypatch, json.dumps([{**closed[1], "status": "open"}]))
    r = txbd("close", "tx-2")
    assert r.code == 1 and "tx-2: bd did not close it: bd answered with it open, not closed; not paid" in r.err
    assert {t["id"] for t in ledger_txns(beads_repo)} == {"issue:tx-1"}


def test_two_lines_that_are_json_only_when_joined_are_two_errors(beads_repo, txbd, no_bd):
    path = beads_repo / ".beads" / "issues.jsonl"
    good = path.read_text()
    halves = ['{"id": "tx-x1", "title": "a", "priority": 0, "status": "closed"}, {"id": "tx-x2"',
              '"title": "b", "priority": 0, "status": "closed", "assignee": "builder@example.com"}']
    path.write_text(good + "\n".join(halves) + "\n")
    line = one_line_error(txbd("sync", "--agent", "zero"))
    assert "issues.jsonl line 11: invalid JSON" in line
    assert ledger_txns(beads_repo) == []


HOOK_TEXT = st.one_of(
    st.text(max_size=300),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
                 lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=5),
                 max_leaves=20).map(json.dumps),
    st.fixed_dictionaries({"id": st.sampled_from(["tx-b71c", "tx-c02d", "", "../x", "tx-b71c\n"]),
                           "title": st.one_of(st.text(max_size=10), st.integers()),
                           "priority": st.one_of(st.integers(-3, 12), st.text(max_size=3), st.none()),
                           "status": st.sampled_from(["closed", "open", "tombstone", "review", ""]),
                           "closed_at": st.sampled_from(["2026-01-01T00:00:00Z", "soon", ""]),
                           "assignee": st.sampled_from(["builder@example.com", "", "x" * 400])},
                          optional={"labels": st.lists(st.text(max_size=5), max_size=3) | st.text(max_size=5),
                                    "ephemeral": st.booleans()}).map(json.dumps),
)


def test_hostile_hook_input_is_one_line_and_never_pays_another_issue(beads_repo, txbd):
    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(text=HOOK_TEXT, event=st.sampled_from(["close", "update"]))
    def check(text: str, event: str) -> None:
        before = {t["id"] for t in ledger_txns(beads_repo)}
        r = txbd("hook", "tx-b71c", event, input=text)
        assert "Traceback" not in r.err and r.code in (0, 1), (r.code, r.err)
        after = {t["id"] for t in ledger_txns(beads_repo)}
        if r.code == 1:
            assert len(r.err.strip().splitlines()) == 1 and r.err.startswith("tx-bd: error: "), r.err
            assert after == before
        # a payment, reversal or new payment of the issue bd named, never of another one
        assert {i.removeprefix("reversal:").split(":")[1] for i in after - before} <= {"tx-b71c"}

    check()


BD_OUTPUT = st.one_of(
    st.text(max_size=200),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                 lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=5),
                 max_leaves=20).map(json.dumps),
    st.lists(st.fixed_dictionaries({"id": st.sampled_from(["tx-1", "tx-2", "tx-1.1", "bad id"]),
                                    "title": st.just("t"), "priority": st.integers(-1, 6),
                                    "status": st.sampled_from(["closed", "open", "weird"]),
                                    "assignee": st.just("builder@example.com")}), max_size=3).map(json.dumps),
)


def test_hostile_bd_output_is_one_line_and_pays_only_what_was_asked(beads_repo, txbd, tmp_path, monkeypatch):
    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(output=BD_OUTPUT, code=st.sampled_from([0, 1]), command=st.sampled_from(["close", "preview", "sync"]))
    def check(output: str, code: int, command: str) -> None:
        _fake_bd(tmp_path, monkeypatch, output, code)
        before = {t["id"] for t in ledger_txns(beads_repo)}
        args = {"close": ["close", "tx-1", "--agent", "zero"], "preview": ["preview", "tx-1"],
                "sync": ["sync", "--agent", "zero"]}[command]
        r = txbd(*args)
        assert "Traceback" not in r.err and r.code in (0, 1), (r.code, r.err)
        after = {t["id"] for t in ledger_txns(beads_repo)}
        if r.code == 1 and "error" in r.err:
            assert after == before, r.err
        if command == "close":
            assert after - before <= {"issue:tx-1"}
        if command == "preview":
            assert after == before

    check()


# --------------------------------------------------------------------------- pre_write: no new work when bankrupt

def _pre_write(beads_repo: Path, request: object, raw: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed pre_write as bd runs it (prewrite.go): cwd = the repository root, an environment
    of PATH only, the request on stdin."""
    hook = beads_repo / ".beads" / "hooks" / "pre_write"
    return subprocess.run([str(hook)], input=raw if raw is not None else json.dumps(request), capture_output=True,
                          text=True, cwd=beads_repo, env={"PATH": os.environ["PATH"]}, check=False, timeout=60)


def _claim(beads_repo: Path, operation: str = "issue.claim") -> dict:
    return {"version": 1, "operation": operation,
            "repository": {"root": str(beads_repo.resolve()), "beads_dir": str((beads_repo / ".beads").resolve())}}


def test_pre_write_refuses_a_claim_by_an_agent_below_its_reserve(beads_repo, txbd):
    from token_exchange.ledger.txn import LLM, make_txn
    from token_exchange.services.exchange import Exchange

    r = txbd("install-hook", "--pre-write", "--json")
    assert r.code == 0, r.err
    assert {Path(h).name for h in r.json()["hooks"]} == {"on_close", "on_update", "pre_write"}
    (beads_repo / ".beads" / "config.yaml").write_text("issue-prefix: tx\nactor: builder\n")  # bd's actor here

    def answer(req: object, raw: str | None = None) -> dict:
        p = _pre_write(beads_repo, req, raw)
        assert p.returncode == 0, p.stderr
        (line,) = p.stdout.splitlines()
        d = json.loads(line)
        assert set(d) <= {"allow", "reason"} and isinstance(d["allow"], bool)  # DisallowUnknownFields
        return d

    assert answer(_claim(beads_repo)) == {"allow": True}
    ex = Exchange(beads_repo / ".exchange")
    try:
        ex.ledger.append(make_txn("spend:test-broke", "spend", "builder", LLM, 9_600 * 10_000, agent="builder"))
    finally:
        ex.close()
    d = answer(_claim(beads_repo))
    assert d["allow"] is False and "builder" in d["reason"] and "below its reserve of 500" in d["reason"]
    assert answer(_claim(beads_repo, "issue.close")) == {"allow": True}  # closing work still pays
    assert answer(_claim(beads_repo, "issue.update")) == {"allow": True}
    for bad in ("", "{", "[]", json.dumps({"version": 2, "operation": "issue.claim"}), "x" * 40_000):
        assert answer(None, bad) == {"allow": True}  # our trouble never blocks bd
    (beads_repo / ".beads" / "config.yaml").write_text("issue-prefix: tx\nactor: somebody\n")
    assert answer(_claim(beads_repo)) == {"allow": True}  # not an agent: not ours to gate


def test_the_installed_hook_survives_bytes_that_are_not_utf8(beads_repo, txbd):
    assert txbd("install-hook").code == 0
    hook = beads_repo / ".beads" / "hooks" / "on_close"
    p = subprocess.run([str(hook), "tx-b71c", "close"], input=b"\xff\xfe{\"id\": \"tx-b71c\"", capture_output=True,
                       env={**os.environ, "LC_ALL": "C.UTF-8"}, check=False)
    assert p.returncode == 1 and p.stderr.decode().count("\n") == 1 and b"Traceback" not in p.stderr
    assert b"hook input for tx-b71c is not JSON" in p.stderr
    assert ledger_txns(beads_repo) == []
