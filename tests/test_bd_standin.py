"""Tests for the `bd` stand-in (fixtures/bd) against fixtures/beads/small.jsonl.

The stand-in is run as a subprocess, both as `sys.executable fixtures/bd ...` and
as plain `bd` found on PATH, like the adapter will run the real CLI.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BD = ROOT / "fixtures" / "bd"
SMALL = ROOT / "fixtures" / "beads" / "small.jsonl"
GEN = ROOT / "fixtures" / "gen_beads_export.py"
GO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")


@pytest.fixture
def beads(tmp_path):
    d = tmp_path / ".beads"
    d.mkdir()
    shutil.copy(SMALL, d / "issues.jsonl")
    return d


def _env(beads_dir, extra=None):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BD_", "BEADS_")) and k not in ("CLAUDE_CODE", "CLAUDE_SESSION_ID")}
    env["BEADS_DIR"] = str(beads_dir)
    env.update(extra or {})
    return env


def run(beads_dir, *args, env=None, cwd=None):
    return subprocess.run([sys.executable, str(BD), *args], capture_output=True, text=True,
                          env=_env(beads_dir, env), cwd=cwd or beads_dir.parent, timeout=30)


def js(beads_dir, *args, env=None):
    p = run(beads_dir, *args, env=env)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def lines(beads_dir):
    return [json.loads(x) for x in (beads_dir / "issues.jsonl").read_text().splitlines() if x.strip()]


# ----------------------------------------------------------------- show

def test_show_is_a_list_of_details(beads):
    out = js(beads, "show", "tx-a3f8.1", "--json")
    assert isinstance(out, list) and len(out) == 1
    d = out[0]
    assert "schema_version" not in d  # arrays pass through unchanged
    assert d["id"] == "tx-a3f8.1" and d["priority"] == 2
    assert d["parent"] == "tx-a3f8"
    assert d["dependencies"][0]["id"] == "tx-a3f8"
    assert d["dependencies"][0]["dependency_type"] == "parent-child"
    assert (d["dependent_count"], d["dependency_count"], d["comment_count"]) == (1, 1, 0)
    keys = list(d)
    assert keys[:2] == ["id", "title"]
    assert keys[-4:] == ["parent", "dependent_count", "dependency_count", "comment_count"]


def test_show_multiple_and_html_escaping(beads):
    p = run(beads, "show", "tx-b71c", "tx-c02d", "--json")
    assert p.returncode == 0
    out = json.loads(p.stdout)
    assert [d["id"] for d in out] == ["tx-b71c", "tx-c02d"]
    assert out[1]["labels"] == ["billing", "security"] and out[1]["priority"] == 0
    assert out[0]["comment_count"] == 1 and "comments" not in out[0]
    assert p.stdout.startswith("[\n  {\n    \"id\"")  # pretty, 2-space indent


def test_show_unknown_id(beads):
    p = run(beads, "show", "tx-nope", "--json")
    assert p.returncode == 1
    assert json.loads(p.stdout) == {"error": "no issues found matching the provided IDs", "schema_version": 1}
    assert 'Error fetching tx-nope: no issue found matching "tx-nope"' in p.stderr


def test_show_partial_miss_still_succeeds(beads):
    p = run(beads, "show", "tx-nope", "tx-b71c", "--json")
    assert p.returncode == 0
    assert [d["id"] for d in json.loads(p.stdout)] == ["tx-b71c"]
    assert "tx-nope" in p.stderr


def test_show_tombstone_is_invisible_and_partial_id(beads):
    assert run(beads, "show", "tx-f00d", "--json").returncode == 1
    assert js(beads, "show", "c02d", "--json")[0]["id"] == "tx-c02d"


def test_show_envelope(beads):
    out = js(beads, "show", "tx-b71c", "--json", env={"BD_JSON_ENVELOPE": "1"})
    assert set(out) == {"schema_version", "data"} and out["schema_version"] == 1
    assert isinstance(out["data"], list) and out["data"][0]["id"] == "tx-b71c"
    p = run(beads, "show", "tx-nope", "--json", env={"BD_JSON_ENVELOPE": "1"})
    assert json.loads(p.stdout) == {"schema_version": 1,
                                    "data": {"error": "no issues found matching the provided IDs"}}


def test_show_legacy_object(beads):
    out = js(beads, "show", "tx-b71c", "--json", env={"BD_STANDIN_LEGACY_SHOW": "1"})
    assert isinstance(out, dict) and out["id"] == "tx-b71c" and "schema_version" not in out


# ----------------------------------------------------------------- list / ready

def test_list_default_excludes_closed_pinned_tombstone(beads):
    out = js(beads, "list", "--json")
    ids = [i["id"] for i in out]
    assert ids == ["tx-c02d", "tx-e9f0", "tx-a3f8", "tx-b71c", "tx-a3f8.1"]  # priority asc, created desc
    item = out[0]
    assert list(item)[-3:] == ["dependency_count", "dependent_count", "comment_count"]
    e9 = next(i for i in out if i["id"] == "tx-e9f0")
    assert e9["dependencies"][0] == {"issue_id": "tx-e9f0", "depends_on_id": "tx-b71c", "type": "blocks",
                                     "created_at": "2026-01-10T03:00:00Z", "created_by": "aygp-dr",
                                     "metadata": "{}"}
    assert e9["dependency_count"] == 1
    child = next(i for i in out if i["id"] == "tx-a3f8.1")
    assert child["parent"] == "tx-a3f8" and child["dependency_count"] == 0  # only 'blocks' counted


def test_list_status_and_all(beads):
    assert {i["id"] for i in js(beads, "list", "--status", "closed", "--json")} == {"tx-a3f8.1.2", "tx-d4e5"}
    both = js(beads, "list", "--status", "closed,pinned", "--json")
    # list.go compares the whole --status string with "pinned"/"hooked" before it drops
    # pinned=true rows, so a comma list hides the pinned bead; --status pinned shows it.
    assert {i["status"] for i in both} == {"closed"}
    assert [i["id"] for i in js(beads, "list", "--status", "pinned", "--json")] == ["tx_ops-7k2"]
    assert len(js(beads, "list", "--all", "--json")) == 8
    assert len(js(beads, "list", "--status", "all", "--json")) == 7  # pinned field still hides tx_ops-7k2


def test_list_invalid_status_goes_to_stderr(beads):
    p = run(beads, "list", "--status", "tombstone", "--json")
    assert p.returncode == 1 and p.stdout == ""
    err = json.loads(p.stderr)
    assert err["schema_version"] == 1 and err["error"].startswith('invalid status "tombstone"')


def test_list_limits(tmp_path):
    d = tmp_path / ".beads"
    d.mkdir()
    subprocess.run([sys.executable, str(GEN), "--seed", "3", "--count", "200", "--out",
                    str(d / "issues.jsonl")], check=True)
    p = run(d, "list", "--json")
    assert len(json.loads(p.stdout)) == 50 and "--limit 0" in p.stderr
    everything = js(d, "list", "--limit", "0", "--json")
    assert len(everything) > 50 and all(i["status"] not in ("closed", "pinned") for i in everything)
    assert len(js(d, "list", "-n", "7", "--json")) == 7
    assert len(js(d, "list", "--all", "--json")) > len(everything)  # --all alone = unlimited
    assert len(js(d, "list", "--json", env={"BD_AGENT_MODE": "1"})) == 20
    r = run(d, "ready", "--json")
    ready = json.loads(r.stdout)
    assert 0 < len(ready) <= 100 and all(i["status"] == "open" for i in ready)
    assert len(js(d, "ready", "--limit", "3", "--json")) == 3


def test_ready_excludes_blocked(beads):
    ids = [i["id"] for i in js(beads, "ready", "--json")]
    assert ids == ["tx-c02d", "tx-a3f8", "tx-b71c", "tx-a3f8.1"]
    assert "tx-e9f0" not in ids
    env = js(beads, "ready", "--json", env={"BD_JSON_ENVELOPE": "1"})
    assert env["schema_version"] == 1 and [i["id"] for i in env["data"]] == ids


# ----------------------------------------------------------------- close / reopen / update

def test_close_returns_list_and_persists(beads):
    p = run(beads, "close", "tx-b71c", "--reason", "Fixed", "--json", "--actor", "builder")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert isinstance(out, list) and len(out) == 1
    c = out[0]
    assert c["status"] == "closed" and c["close_reason"] == "Fixed" and GO_TIME.match(c["closed_at"])
    assert "dependency_count" not in c and "schema_version" not in c
    rec = next(x for x in lines(beads) if x.get("id") == "tx-b71c")
    assert rec["_type"] == "issue" and rec["status"] == "closed" and rec["closed_at"] == c["closed_at"]
    assert any(x.get("_type") == "memory" for x in lines(beads))
    assert any(x.get("status") == "tombstone" for x in lines(beads))
    # tx-e9f0 was blocked by tx-b71c and is now ready
    assert "tx-e9f0" in [i["id"] for i in js(beads, "ready", "--json")]


@pytest.mark.parametrize("flag", ["--reason", "-r", "--resolution", "-m", "--message"])
def test_close_reason_aliases(beads, flag):
    out = js(beads, "close", "tx-c02d", flag, "Patched", "--json")
    assert out[0]["close_reason"] == "Patched"


def test_close_default_reason_and_reclose_overwrites(beads):
    first = js(beads, "close", "tx-c02d", "--json", env={"BD_STANDIN_NOW": "2026-02-01T10:00:00Z"})
    assert first[0]["close_reason"] == "Closed"
    second = js(beads, "close", "tx-c02d", "-r", "again", "--json",
                env={"BD_STANDIN_NOW": "2026-02-02T10:00:00.5Z"})
    assert second[0]["close_reason"] == "again"
    assert second[0]["closed_at"] != first[0]["closed_at"]
    assert second[0]["closed_at"].startswith(("2026-02-02", "2026-02-01", "2026-02-03"))


def test_close_refusals_are_plain_stderr(beads):
    p = run(beads, "close", "tx-e9f0", "tx-a3f8", "tx_ops-7k2", "tx-c02d", "--json")
    assert p.returncode == 0
    assert [i["id"] for i in json.loads(p.stdout)] == ["tx-c02d"]
    assert "cannot close tx-e9f0: blocked by open issues [tx-b71c] (use --force to override)" in p.stderr
    assert "cannot close epic tx-a3f8: 1 open child issue(s)" in p.stderr
    assert "cannot modify pinned issue tx_ops-7k2 (use --force to override)" in p.stderr
    p = run(beads, "close", "tx-e9f0", "--json")
    assert p.returncode == 1 and p.stdout == ""
    assert js(beads, "close", "tx-e9f0", "--force", "--json")[0]["status"] == "closed"


def test_close_unknown_id_closes_nothing(beads):
    p = run(beads, "close", "tx-c02d", "tx-nope", "--json")
    assert p.returncode == 1
    assert json.loads(p.stdout) == {"error": 'resolving ID tx-nope: no issue found matching "tx-nope"',
                                    "schema_version": 1}
    assert next(x for x in lines(beads) if x.get("id") == "tx-c02d")["status"] == "open"


def test_reopen_and_update(beads):
    out = js(beads, "reopen", "tx-d4e5", "--json")
    assert out[0]["status"] == "open" and "closed_at" not in out[0] and "close_reason" not in out[0]
    p = run(beads, "reopen", "tx-d4e5", "--json")
    assert p.returncode == 0 and "tx-d4e5 is already open" in p.stderr
    up = js(beads, "update", "tx-b71c", "--priority", "P0", "--type", "feature", "--assignee",
            "claude@aygp-dr.ai", "--status", "in_progress", "--json")
    assert isinstance(up, list)
    u = up[0]
    assert (u["priority"], u["issue_type"], u["assignee"], u["status"]) == (0, "feature", "claude@aygp-dr.ai",
                                                                           "in_progress")
    assert GO_TIME.match(u["started_at"])
    p = run(beads, "update", "tx-b71c", "--priority", "high", "--json")
    assert p.returncode == 1 and "invalid priority" in json.loads(p.stdout)["error"]


def test_create_is_an_object_with_sorted_keys(beads):
    out = js(beads, "create", "--title", "New thing", "-p", "1", "-t", "bug", "--assignee", "a@b.c",
             "--json", "--actor", "tester")
    assert isinstance(out, dict) and out["schema_version"] == 1
    assert list(out) == sorted(out)
    assert out["id"].startswith("tx-") and out["created_by"] == "tester" and out["priority"] == 1
    assert js(beads, "show", out["id"], "--json")[0]["title"] == "New thing"


# ----------------------------------------------------------------- misc / env controls

def test_version_and_global_flags_anywhere(beads):
    p = run(beads, "--version")
    assert p.returncode == 0 and re.match(r"bd version \d+\.\d+\.\d+ \(dev\)", p.stdout)
    assert "0.9.2" in run(beads, "version", env={"BD_STANDIN_VERSION": "0.9.2"}).stdout
    assert js(beads, "--json", "--actor", "x", "show", "tx-b71c")[0]["id"] == "tx-b71c"


def test_error_modes(beads):
    p = run(beads, "show", "tx-nope", "--json", env={"BD_STANDIN_ERROR_MODE": "stderr-json"})
    assert p.stdout == "" and p.returncode == 1
    assert json.loads(p.stderr[p.stderr.index("{"):])["error"] == "no issues found matching the provided IDs"
    p = run(beads, "list", "--status", "bogus", "--json", env={"BD_STANDIN_ERROR_MODE": "stdout-json"})
    assert json.loads(p.stdout)["error"].startswith("invalid status") and p.returncode == 1
    p = run(beads, "show", "tx-nope", "--json", env={"BD_STANDIN_ERROR_MODE": "plain"})
    assert p.stdout == "" and "Error: no issues found matching the provided IDs" in p.stderr


def test_fail_and_log(beads, tmp_path):
    log = tmp_path / "calls.log"
    p = run(beads, "list", "--json", env={"BD_STANDIN_FAIL": "database is locked", "BD_STANDIN_LOG": str(log)})
    assert p.returncode == 1 and p.stdout == "" and p.stderr.strip() == "database is locked"
    run(beads, "close", "tx-c02d", "--reason", "r", "--json", env={"BD_STANDIN_LOG": str(log)})
    calls = [json.loads(x) for x in log.read_text().splitlines()]
    assert calls == [["list", "--json"], ["close", "tx-c02d", "--reason", "r", "--json"]]


def test_discovery_by_walking_up_and_on_path(beads, tmp_path):
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    env = _env(beads)
    del env["BEADS_DIR"]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "bd").symlink_to(BD)
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    p = subprocess.run(["bd", "show", "tx-b71c", "--json"], capture_output=True, text=True, env=env, cwd=sub)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)[0]["id"] == "tx-b71c"
    outside = tmp_path.parent / "no-beads-here"
    outside.mkdir(exist_ok=True)
    p = subprocess.run(["bd", "list", "--json"], capture_output=True, text=True, env=env, cwd=outside)
    if p.returncode == 1:  # (unless some ancestor of tmp happens to hold a .beads dir)
        assert "no beads database found" in p.stderr


def test_generator_is_deterministic_and_consistent(tmp_path):
    a = subprocess.run([sys.executable, str(GEN), "--seed", "11", "--count", "120"], capture_output=True,
                       text=True, check=True).stdout
    b = subprocess.run([sys.executable, str(GEN), "--seed", "11", "--count", "120"], capture_output=True,
                       text=True, check=True).stdout
    assert a == b
    recs = [json.loads(x) for x in a.splitlines()]
    issues = [r for r in recs if r.get("_type") != "memory"]
    assert len(issues) == 120 and any(r.get("_type") == "memory" for r in recs)
    assert all((r.get("closed_at") is not None) == (r["status"] == "closed") for r in issues)
    committed = [json.loads(x) for x in (ROOT / "fixtures" / "beads" / "issues.jsonl").read_text().splitlines()]
    assert len([r for r in committed if r.get("_type") != "memory"]) == 300
    assert {"open", "in_progress", "blocked", "deferred", "closed", "pinned", "hooked", "tombstone"} <= \
        {r.get("status") for r in committed}
