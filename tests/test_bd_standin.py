"""Tests for the `bd` stand-in (fixtures/bd), seeded from fixtures/beads/small.jsonl.

The stand-in is run as a subprocess, both as `sys.executable fixtures/bd ...` and as plain
`bd` found on PATH, like the adapter runs the real CLI.  Each behaviour names the bd source
it copies (github.com/steveyegge/beads v1.0.5, commit fbcee6c6; paths in that repository).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import GENERATED_CUSTOM_TYPES, from_template, git, seed_bd_store

ROOT = Path(__file__).resolve().parent.parent
BD = ROOT / "fixtures" / "bd"
SMALL = ROOT / "fixtures" / "beads" / "small.jsonl"
GEN = ROOT / "fixtures" / "gen_beads_export.py"
# bd reads DATETIME columns back in UTC with whole seconds (see fixtures/bd_standin.py, "Timestamps")
UTC_SECONDS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def _imported(d):
    shutil.copy(SMALL, d / "issues.jsonl")
    (d / "config.yaml").write_text("issue-prefix: tx\n")
    p = run(d, "import")  # no FILE: <beads dir>/issues.jsonl (import.go configuredImportJSONLPath)
    assert p.returncode == 0, p.stderr


@pytest.fixture
def beads(tmp_path):
    """A beads dir whose database holds small.jsonl; small.jsonl is also its tracked issues.jsonl (imported by
    the stand-in once per worker and copied: conftest.from_template)."""
    return from_template("bd-standin-beads", tmp_path / ".beads", _imported)


def _env(beads_dir, extra=None):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BD_", "BEADS_")) and k not in ("CLAUDE_CODE", "CLAUDE_SESSION_ID")}
    if beads_dir is not None:
        env["BEADS_DIR"] = str(beads_dir)
    env.update(extra or {})
    return env


def run(beads_dir, *args, env=None, cwd=None, input=None):
    """Run the stand-in; beads_dir=None runs it without BEADS_DIR (discovery from cwd)."""
    return subprocess.run([sys.executable, str(BD), *args], capture_output=True, text=True, input=input,
                          env=_env(beads_dir, env), cwd=cwd or (beads_dir.parent if beads_dir else None),
                          timeout=60)


def js(beads_dir, *args, env=None, cwd=None):
    p = run(beads_dir, *args, env=env, cwd=cwd)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def exported(beads_dir, *flags):
    p = run(beads_dir, "export", *flags)
    assert p.returncode == 0, p.stderr
    return [json.loads(x) for x in p.stdout.splitlines()]


def store_doc(beads_dir):
    return json.loads((beads_dir / "embeddeddolt" / "bd-standin.json").read_text())


def set_git_user(name=None, email=None):
    """Global git identity for the stand-in's `git config user.name` (conftest points it into tmp)."""
    cfg = Path(os.environ["GIT_CONFIG_GLOBAL"])
    body = cfg.read_text() if cfg.exists() else ""
    if name or email:
        body += "[user]\n" + (f"\tname = {name}\n" if name else "") + (f"\temail = {email}\n" if email else "")
    cfg.write_text(body)


RECORDER = """#!{python}
import json, os, sys
rec = {{"hook": os.path.basename(sys.argv[0]), "argv": sys.argv[1:], "stdin": sys.stdin.read(),
       "cwd": os.getcwd(), "BEADS_DIR": os.environ.get("BEADS_DIR"), "MARK": os.environ.get("TEST_MARK")}}
with open({out!r}, "a") as fh:
    fh.write(json.dumps(rec) + "\\n")
"""


def install_recorders(beads_dir, out, names=("on_create", "on_update", "on_close")):
    hooks = beads_dir / "hooks"
    hooks.mkdir(exist_ok=True)
    for name in names:
        h = hooks / name
        h.write_text(RECORDER.format(python=sys.executable, out=str(out)))
        h.chmod(0o755)


def fired(out):
    return lines(out) if Path(out).exists() else []


# ----------------------------------------------------------------- show

def test_show_is_a_list_of_details(beads):
    """cmd/bd/show.go: a LIST of types.IssueDetails (types.go), even for one id."""
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
    """cmd/bd/output.go outputJSON: MarshalIndent (2 spaces), Go escapes < > & in strings."""
    p = run(beads, "show", "tx-b71c", "tx-c02d", "--json")
    assert p.returncode == 0
    out = json.loads(p.stdout)
    assert [d["id"] for d in out] == ["tx-b71c", "tx-c02d"]
    assert out[1]["labels"] == ["billing", "security"] and out[1]["priority"] == 0
    assert out[0]["comment_count"] == 1 and "comments" not in out[0]
    assert p.stdout.startswith("[\n  {\n    \"id\"")  # pretty, 2-space indent
    comments = js(beads, "show", "tx-b71c", "--include-comments", "--json")[0]["comments"]
    assert "3 < 5 & odd" in comments[0]["text"]
    assert "\\u003c" in run(beads, "show", "tx-b71c", "--include-comments", "--json").stdout  # Go escapes < > &


def test_show_unknown_id(beads):
    """show.go l.124 per-id "Error fetching" on stderr; l.419 FatalErrorRespectJSON -> stdout JSON."""
    p = run(beads, "show", "tx-nope", "--json")
    assert p.returncode == 1
    assert json.loads(p.stdout) == {"error": "no issues found matching the provided IDs", "schema_version": 1}
    assert 'Error fetching tx-nope: no issue found matching "tx-nope"' in p.stderr


def test_show_partial_miss_still_succeeds(beads):
    """show.go: misses are reported per id; exit 1 only when nothing was found."""
    p = run(beads, "show", "tx-nope", "tx-b71c", "--json")
    assert p.returncode == 0
    assert [d["id"] for d in json.loads(p.stdout)] == ["tx-b71c"]
    assert "tx-nope" in p.stderr


def test_show_tombstone_is_invisible_and_partial_id(beads):
    """import.go / import_shared.go skip "tombstone" rows: the deleted issue never reaches the database."""
    assert run(beads, "show", "tx-f00d", "--json").returncode == 1
    assert js(beads, "show", "c02d", "--json")[0]["id"] == "tx-c02d"


def test_show_envelope(beads):
    """cmd/bd/output.go wrapWithSchemaVersion: BD_JSON_ENVELOPE=1 -> {"schema_version", "data"}."""
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
    """list.go + issueops/search_counts.go: ORDER BY priority, created_at DESC, id; counts of blocks edges."""
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
    """list.go l.885-900: pinned rows dropped unless --status is exactly pinned/hooked or --all."""
    assert {i["id"] for i in js(beads, "list", "--status", "closed", "--json")} == {"tx-a3f8.1.2", "tx-d4e5"}
    both = js(beads, "list", "--status", "closed,pinned", "--json")
    # list.go compares the whole --status string with "pinned"/"hooked" before it drops
    # pinned=true rows, so a comma list hides the pinned bead; --status pinned shows it.
    assert {i["status"] for i in both} == {"closed"}
    assert [i["id"] for i in js(beads, "list", "--status", "pinned", "--json")] == ["tx_ops-7k2"]
    assert len(js(beads, "list", "--all", "--json")) == 8
    assert len(js(beads, "list", "--status", "all", "--json")) == 7  # pinned field still hides tx_ops-7k2


def test_list_invalid_status_goes_to_stderr(beads):
    """list.go: FatalError (not ...RespectJSON): the JSON error goes to stderr."""
    p = run(beads, "list", "--status", "tombstone", "--json")
    assert p.returncode == 1 and p.stdout == ""
    err = json.loads(p.stderr)
    assert err["schema_version"] == 1 and err["error"].startswith('invalid status "tombstone"')


def test_list_limits(tmp_path):
    """list.go l.1236 default --limit 50 (20 in agent mode, ui.IsAgentMode), list_output.go hint;
    ready.go default limit 100."""
    d = tmp_path / ".beads"
    export = tmp_path / "generated.jsonl"
    subprocess.run([sys.executable, str(GEN), "--seed", "3", "--count", "200", "--out", str(export)], check=True)
    seed_bd_store(d, export, custom_types=GENERATED_CUSTOM_TYPES, env=_env(d))
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
    """ready.go Status "open"; issueops/ready_work.go is_blocked = 0 (blocked_state.go)."""
    ids = [i["id"] for i in js(beads, "ready", "--json")]
    assert ids == ["tx-c02d", "tx-a3f8", "tx-b71c", "tx-a3f8.1"]
    assert "tx-e9f0" not in ids
    env = js(beads, "ready", "--json", env={"BD_JSON_ENVELOPE": "1"})
    assert env["schema_version"] == 1 and [i["id"] for i in env["data"]] == ids


def test_wisps_are_in_list_closed_ones_too_and_in_ready(beads):
    """cmd/bd/list.go l.1060 (--json) -> issueops/search_counts.go SearchIssuesWithCountsInTx (l.12-76):
    the wisps table is searched with the same filter and merged (`out = append(out, w)`); ready_work.go
    getReadyWispsInTx merges open wisps too.  create.go: a wisp's id is <prefix>-wisp-<hash>."""
    w = js(beads, "create", "Patrol the queue", "-p", "1", "--ephemeral", "--assignee", "builder@example.com",
           "--json")
    assert w["ephemeral"] is True and w["id"].startswith("tx-wisp-")
    assert w["id"] in [i["id"] for i in js(beads, "list", "--json")]
    assert w["id"] not in run(beads, "list").stdout  # list.go l.1098: text output sets SkipWisps
    assert w["id"] in [i["id"] for i in js(beads, "ready", "--json")]
    closed = js(beads, "close", w["id"], "--json")[0]
    assert closed["ephemeral"] is True and closed["status"] == "closed"
    listed = js(beads, "list", "--status", "closed", "--json")
    assert {i["id"] for i in listed} == {"tx-a3f8.1.2", "tx-d4e5", w["id"]}
    assert next(i for i in listed if i["id"] == w["id"])["ephemeral"] is True
    assert w["id"] not in {i["id"] for i in exported(beads)}  # ...but never exported


# ----------------------------------------------------------------- close / reopen / update

def test_close_returns_list_and_persists(beads):
    """close.go: list of re-fetched issues; the write goes to the database (Dolt), not issues.jsonl."""
    seed_file = (beads / "issues.jsonl").read_bytes()
    p = run(beads, "close", "tx-b71c", "--reason", "Fixed", "--json", "--actor", "builder")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert isinstance(out, list) and len(out) == 1
    c = out[0]
    assert c["status"] == "closed" and c["close_reason"] == "Fixed" and UTC_SECONDS.match(c["closed_at"])
    assert "dependency_count" not in c and "schema_version" not in c
    # persisted in bd's database...
    shown = js(beads, "show", "tx-b71c", "--json")[0]
    assert shown["status"] == "closed" and shown["closed_at"] == c["closed_at"]
    # ...and NOT in issues.jsonl, which only `bd export` writes (bd >= 1.0.4: stale until then)
    assert (beads / "issues.jsonl").read_bytes() == seed_file
    old = next(x for x in lines(beads / "issues.jsonl") if x.get("id") == "tx-b71c")
    assert old["status"] == "open"
    assert any(x.get("_type") == "memory" for x in lines(beads / "issues.jsonl"))
    assert any(x.get("status") == "tombstone" for x in lines(beads / "issues.jsonl"))
    rec = next(x for x in exported(beads) if x.get("id") == "tx-b71c")
    assert rec["_type"] == "issue" and rec["status"] == "closed" and rec["closed_at"] == c["closed_at"]
    assert any(x.get("_type") == "memory" for x in exported(beads, "--include-memories"))
    assert not any(x.get("status") == "tombstone" for x in exported(beads, "--all"))
    # tx-e9f0 was blocked by tx-b71c and is now ready
    assert "tx-e9f0" in [i["id"] for i in js(beads, "ready", "--json")]


@pytest.mark.parametrize("flag", ["--reason", "-r", "--resolution", "-m", "--message"])
def test_close_reason_aliases(beads, flag):
    """close.go resolveCloseReasons: --reason/-r, --resolution, -m/--message."""
    out = js(beads, "close", "tx-c02d", flag, "Patched", "--json")
    assert out[0]["close_reason"] == "Patched"


def test_close_default_reason_and_reclose_overwrites(beads):
    """close.go l.363 default "Closed"; issueops/close.go re-sets closed_at/close_reason when re-closing."""
    first = js(beads, "close", "tx-c02d", "--json", env={"BD_STANDIN_NOW": "2026-02-01T10:00:00Z"})
    assert first[0]["close_reason"] == "Closed"
    second = js(beads, "close", "tx-c02d", "-r", "again", "--json",
                env={"BD_STANDIN_NOW": "2026-02-02T10:00:00.5Z"})
    assert second[0]["close_reason"] == "again"
    assert second[0]["closed_at"] != first[0]["closed_at"]
    assert second[0]["closed_at"].startswith(("2026-02-02", "2026-02-01", "2026-02-03"))


def test_close_refusals_are_plain_stderr(beads):
    """close.go l.105-140: template/pinned/epic/blocked refusals printed to stderr; exit 1 only if none closed."""
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
    """close.go resolveCloseTargets resolves every id first: one unknown id -> fatal, nothing closed."""
    p = run(beads, "close", "tx-c02d", "tx-nope", "--json")
    assert p.returncode == 1
    assert json.loads(p.stdout) == {"error": 'resolving ID tx-nope: no issue found matching "tx-nope"',
                                    "schema_version": 1}
    assert js(beads, "show", "tx-c02d", "--json")[0]["status"] == "open"


def test_reopen_and_update(beads):
    """reopen.go ("already open" is not an error); update.go + issueops/update.go ManageStartedAt."""
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
    assert UTC_SECONDS.match(u["started_at"])
    p = run(beads, "update", "tx-b71c", "--priority", "high", "--json")
    assert p.returncode == 1 and "invalid priority" in json.loads(p.stdout)["error"]


def test_update_status_closed_closes_without_reason_or_checks(beads):
    """issueops/update.go ManageClosedAt sets closed_at; no close_reason, and update.go runs no
    blocker check (unlike close.go): the blocked tx-e9f0 closes."""
    u = js(beads, "update", "tx-e9f0", "--status", "closed", "--json")[0]
    assert u["status"] == "closed" and UTC_SECONDS.match(u["closed_at"]) and "close_reason" not in u
    r = js(beads, "update", "tx-e9f0", "--status", "open", "--json")[0]
    assert "closed_at" not in r and r["status"] == "open"


def test_create_is_an_object_with_sorted_keys(beads):
    """create.go outputJSON(issue): an object, re-marshalled through a map (sorted keys + schema_version)."""
    out = js(beads, "create", "--title", "New thing", "-p", "1", "-t", "bug", "--assignee", "a@b.c",
             "--json", "--actor", "tester")
    assert isinstance(out, dict) and out["schema_version"] == 1
    assert list(out) == sorted(out)
    assert out["id"].startswith("tx-") and out["created_by"] == "tester" and out["priority"] == 1
    assert out["owner"] == os.environ["GIT_AUTHOR_EMAIL"]  # main.go getOwner: $GIT_AUTHOR_EMAIL first
    assert js(beads, "show", out["id"], "--json")[0]["title"] == "New thing"


def test_create_rejects_unknown_types_unless_declared(beads):
    """types.go IsValidWithCustom: built-in types, plus types.custom (config.yaml overlay)."""
    p = run(beads, "create", "Agent bead", "-t", "agent", "--json")
    assert p.returncode == 1 and "invalid issue type: agent" in p.stderr
    (beads / "config.yaml").write_text("issue-prefix: tx\ntypes:\n  custom: [agent, convoy]\n")
    assert js(beads, "create", "Agent bead", "-t", "agent", "--json")["issue_type"] == "agent"


# ----------------------------------------------------------------- the database vs issues.jsonl

def test_database_lives_apart_from_the_export(beads):
    """bd 1.0 keeps data in Dolt under .beads/embeddeddolt (beads.go findDatabaseInBeadsDir);
    issues.jsonl is an export: no write command touches it, `bd export -o` writes it atomically."""
    db = beads / "embeddeddolt" / "bd-standin.json"
    assert db.exists()
    seed = (beads / "issues.jsonl").read_bytes()
    mtime = (beads / "issues.jsonl").stat().st_mtime_ns
    created = js(beads, "create", "Fresh", "--json")["id"]
    js(beads, "update", "tx-b71c", "--status", "in_progress", "--json")
    js(beads, "close", "tx-c02d", "--json")
    js(beads, "reopen", "tx-c02d", "--json")
    assert (beads / "issues.jsonl").read_bytes() == seed
    assert (beads / "issues.jsonl").stat().st_mtime_ns == mtime
    assert created in {i["id"] for i in store_doc(beads)["issues"]}
    # export.go: stdout by default; -o FILE writes the file and says so on stderr
    p = run(beads, "export", "-o", str(beads / "issues.jsonl"))
    assert p.returncode == 0 and p.stdout == ""
    assert f"Exported 9 issues to {beads / 'issues.jsonl'}" in p.stderr
    recs = lines(beads / "issues.jsonl")
    assert [r["_type"] for r in recs] == ["issue"] * 9  # no memory lines by default (GH#3650)
    assert created in {r["id"] for r in recs}
    assert {"dependency_count", "dependent_count", "comment_count"} <= set(recs[0])
    assert all("parent" not in r for r in recs)  # IssueWithCounts.Parent is not set by export
    b71c = next(r for r in recs if r["id"] == "tx-b71c")
    assert b71c["labels"] == ["billing"] and b71c["comments"][0]["author"] == "claude"


def test_export_leaves_out_wisps_templates_infra_and_memories(beads):
    """cmd/bd/export.go runExport: ExcludeTypes = DefaultInfraTypes (agent, rig, role, message) unless
    --include-infra/--all (l.97-112), IsTemplate=false unless --all (l.116), Ephemeral=false unless
    --all (l.124, GH#3649), memories only with --include-memories/--all (l.203).  Gates stay."""
    (beads / "config.yaml").write_text("issue-prefix: tx\ntypes.custom: agent\n")
    extra = beads.parent / "extra.jsonl"
    extra.write_text("\n".join(json.dumps(r) for r in [
        {"id": "tx-tmpl", "title": "Template", "priority": 2, "is_template": True},
        {"id": "tx-agent1", "title": "Agent bead", "priority": 2, "issue_type": "agent"},
        {"id": "tx-gate1", "title": "Wait for CI", "priority": 2, "issue_type": "gate"},
        {"id": "tx-old-wisp", "title": "Legacy wisp", "priority": 2, "wisp": True},
        {"id": "tx-nohist", "title": "No history", "priority": 2, "no_history": True},
    ]) + "\n")
    assert run(beads, "import", str(extra)).returncode == 0
    wisp = js(beads, "create", "A wisp", "--ephemeral", "--json")["id"]
    default = {r["id"] for r in exported(beads)}
    assert {"tx-gate1", "tx-nohist", "tx-b71c"} <= default
    assert not default & {"tx-tmpl", "tx-agent1", "tx-old-wisp", wisp}
    assert not any(r.get("_type") == "memory" for r in exported(beads))
    assert "tx-agent1" in {r["id"] for r in exported(beads, "--include-infra")}
    mem = [r for r in exported(beads, "--include-memories") if r.get("_type") == "memory"]
    assert mem == [{"_type": "memory", "key": "payout-policy", "value": "P0 security bugs pay double"}]
    everything = {r.get("id") for r in exported(beads, "--all")}
    assert {"tx-tmpl", "tx-agent1", "tx-old-wisp", wisp, None} <= everything
    order = [r["id"] for r in exported(beads)]
    assert order[-1] == "tx-nohist"  # search.go: no-history beads live in the wisps table, merged last


def test_import_upserts_skips_stale_and_tombstones_and_fires_no_hooks(beads, tmp_path):
    """import.go runImportFromReader + import_shared.go importIssuesCore / filterStaleImportIssues;
    hook_decorator.go wraps CreateIssue(s) but not CreateIssuesWithFullOptions: no hooks."""
    install_recorders(beads, tmp_path / "hooks.log")
    newer = {"id": "tx-b71c", "title": "Renamed", "priority": 1, "status": "open",
             "created_at": "2026-01-08T19:02:03Z", "updated_at": "2026-03-01T00:00:00Z"}
    older = {"id": "tx-c02d", "title": "Should not apply", "priority": 4,
             "updated_at": "2020-01-01T00:00:00Z"}
    tomb = {"id": "tx-new-tomb", "title": "Deleted", "priority": 2, "status": "tombstone"}
    fresh = {"_type": "issue", "id": "tx-zz9", "title": "From elsewhere", "priority": 3, "status": "closed",
             "closed_at": "2026-02-03T04:05:06.789+01:00", "updated_at": "2026-02-03T04:05:06+01:00",
             "created_at": "2026-02-01T00:00:00-05:00", "dependency_count": 9, "parent": "tx-x",
             "unknown_field": "dropped"}
    mem = {"_type": "memory", "key": "k", "value": "v"}
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [newer, older, tomb, fresh, mem]))
    out = js(beads, "import", str(path), "--json")
    assert out == {"created": 2, "ids": ["tx-b71c", "tx-zz9"], "memories": 1, "schema_version": 1,
                   "skipped": 1, "source": str(path), "stale_skipped_ids": ["tx-c02d"]}
    assert js(beads, "show", "tx-b71c", "--json")[0]["title"] == "Renamed"
    assert js(beads, "show", "tx-c02d", "--json")[0]["priority"] == 0
    assert run(beads, "show", "tx-new-tomb", "--json").returncode == 1
    z = js(beads, "show", "tx-zz9", "--json")[0]
    # create.go PrepareIssueForInsert: UTC; DATETIME columns keep whole seconds
    assert (z["created_at"], z["closed_at"]) == ("2026-02-01T05:00:00Z", "2026-02-03T03:05:06Z")
    assert "unknown_field" not in store_doc(beads)["issues"][-1]
    assert store_doc(beads)["memories"]["k"] == "v"
    assert fired(tmp_path / "hooks.log") == []
    p = run(beads, "import", str(path))
    assert p.returncode == 0 and "Imported 2 issues and 1 memories from" in p.stderr


def test_import_validates_every_line_first(beads, tmp_path):
    """create.go PrepareIssueForInsert -> types.go ValidateWithCustom: one bad line, nothing imported."""
    before = store_doc(beads)["issues"]
    cases = [
        ('{"id": "tx-1", "title": "ok", "priority": 1}\n{"id": "tx-2", "title": "x", "priority": 7}',
         "validation failed for issue tx-2: priority must be between 0 and 4 (got 7)"),
        ('{"id": "tx-1", "title": "ok", "priority": 1}\n{"id": "tx-3", "priority": 1}', "title is required"),
        ('{"id": "tx-4", "title": "x", "priority": 1, "status": "review"}', "invalid status: review"),
        ('{"id": "tx-5", "title": "x", "priority": 1, "issue_type": "docs"}', "invalid issue type: docs"),
        ('{"id": "tx-6", "title": "x", "priority": 1, "closed_at": "2026-01-01T00:00:00Z"}',
         "non-closed issues cannot have closed_at timestamp"),
        ('{"id": "tx-7", "title": "x", "priority": 1', "failed to parse JSONL line"),
        # bd import does not skip the "_schema" header (only parseJSONLFile does, for init/auto-import)
        ('{"_schema": "beads-jsonl/1"}\n{"id": "tx-8", "title": "x", "priority": 1}',
         "validation failed for issue : title is required"),
    ]
    for n, (text, expect) in enumerate(cases):
        path = tmp_path / f"bad{n}.jsonl"
        path.write_text(text + "\n")
        p = run(beads, "import", str(path))
        assert p.returncode == 1 and expect in p.stderr, (text, p.stderr)
    assert store_doc(beads)["issues"] == before
    (beads / "config.yaml").write_text("issue-prefix: tx\nstatus.custom: review\ntypes.custom: docs\n")
    for n in (2, 3):
        assert run(beads, "import", str(tmp_path / f"bad{n}.jsonl")).returncode == 0


def test_no_database_until_import_or_init(tmp_path):
    """main.go: no database -> "no beads database found", exit 1, except for import, which may
    run without one (and creates it); a beads dir has a database once embeddeddolt/ exists."""
    d = tmp_path / ".beads"
    d.mkdir()
    shutil.copy(SMALL, d / "issues.jsonl")  # a tracked export alone is not a database
    (d / "config.yaml").write_text("issue-prefix: tx\n")
    for cmd in (["list", "--json"], ["show", "tx-b71c", "--json"], ["close", "tx-b71c", "--json"]):
        p = run(d, *cmd)
        assert p.returncode == 1 and "Error: no beads database found" in p.stderr and p.stdout == ""
    assert not (d / "embeddeddolt").exists()
    p = run(d, "import")
    assert p.returncode == 0 and "Imported 8 issues" in p.stderr
    assert (d / "embeddeddolt").is_dir() and len(js(d, "list", "--json")) == 5


def test_init_creates_an_empty_database_and_refuses_twice(tmp_path):
    """cmd/bd/init.go: BEADS_DIR or ./.beads; metadata.json + config.yaml + database; an existing
    database is refused (checkExistingBeadsDataAt); --from-jsonl imports issues.jsonl, skipping a
    "_schema" header (import_shared.go parseJSONLFile)."""
    project = tmp_path / "proj"
    project.mkdir()
    p = run(None, "init", "--prefix", "pj", "--quiet", cwd=project)
    assert p.returncode == 0, p.stderr
    d = project / ".beads"
    assert (d / "metadata.json").exists() and (d / "config.yaml").exists() and (d / "embeddeddolt").is_dir()
    assert js(None, "list", "--json", cwd=project) == []
    assert js(None, "create", "First", "--json", cwd=project)["id"].startswith("pj-")
    again = run(None, "init", "--prefix", "pj", cwd=project)
    assert again.returncode == 1 and "already initialized" in again.stderr
    other = tmp_path / "other-beads"
    other.mkdir()
    (other / "issues.jsonl").write_text('{"_schema": "beads-jsonl/1"}\n' + SMALL.read_text())
    p = run(other, "init", "--from-jsonl", "--prefix", "tx", cwd=tmp_path)
    assert p.returncode == 0 and "Imported 8 issues" in p.stdout, p.stderr
    assert len(js(other, "list", "--json", cwd=tmp_path)) == 5


def test_auto_import_into_an_empty_database_once(tmp_path):
    """cmd/bd/auto_import_upgrade.go maybeAutoImportJSONL, called for non-read-only commands
    (main.go l.1102): an EMPTY database takes issues.jsonl once per file version."""
    project = tmp_path / "proj"
    project.mkdir()
    assert run(None, "init", "--prefix", "tx", "--quiet", cwd=project).returncode == 0
    shutil.copy(SMALL, project / ".beads" / "issues.jsonl")
    assert js(None, "list", "--json", cwd=project) == []  # list is read-only: no auto-import
    p = run(None, "update", "tx-b71c", "--status", "in_progress", "--json", cwd=project)
    assert p.returncode == 0, p.stderr
    assert "auto-imported 8 issues from" in p.stderr
    assert json.loads(p.stdout)[0]["status"] == "in_progress"
    assert len(js(None, "list", "--json", cwd=project)) == 5
    p = run(None, "close", "tx-b71c", "--json", cwd=project)
    assert p.returncode == 0 and "auto-imported" not in p.stderr


# ----------------------------------------------------------------- discovery

def test_discovery_by_walking_up_and_on_path(beads, tmp_path):
    """beads.go findDatabaseInTree: .beads with a database in the cwd or an ancestor."""
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


def test_beads_dir_without_a_database_falls_back_to_the_cwd_search(beads, tmp_path):
    """internal/beads/beads.go FindDatabasePath: BEADS_DIR is used only when it holds a
    database; otherwise the search goes on from the cwd ("BEADS_DIR is set but no database
    found ... let the caller handle it" and falls through to findDatabaseInTree)."""
    empty = tmp_path / "empty-beads"
    empty.mkdir()
    out = js(empty, "show", "tx-b71c", "--json", cwd=tmp_path)
    assert out[0]["id"] == "tx-b71c"
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    p = run(empty, "list", "--json", cwd=elsewhere)
    if p.returncode == 1:
        assert "no beads database found" in p.stderr


def test_redirect_is_followed_for_the_database_and_the_hooks(tmp_path):
    """beads.go FollowRedirect (one level, relative to the project root); the hook runner uses the
    resolved dir (main.go l.1117 `hooks.NewRunner(filepath.Join(beadsDir, "hooks"))`)."""
    shared = tmp_path / "shared" / ".beads"
    seed_bd_store(shared, SMALL, env=_env(shared))
    install_recorders(shared, tmp_path / "shared-hooks.log")
    project = tmp_path / "project"
    (project / ".beads").mkdir(parents=True)
    (project / ".beads" / "redirect").write_text("# shared tracker\n../shared/.beads\n")
    install_recorders(project / ".beads", tmp_path / "local-hooks.log")
    out = js(None, "close", "tx-b71c", "--json", cwd=project)
    assert out[0]["status"] == "closed"
    (rec,) = fired(tmp_path / "shared-hooks.log")
    assert rec["hook"] == "on_close" and rec["BEADS_DIR"] == str(shared.resolve())
    assert fired(tmp_path / "local-hooks.log") == []


def test_git_worktree_uses_the_main_repository_database_and_hooks(tmp_path):
    """beads.go findDatabaseInTree: in a linked worktree whose .beads holds only tracked files
    (no database), bd uses the main repository's .beads (via git-common-dir) -- and fires the
    hooks there, not in the worktree's .beads/hooks."""
    main = tmp_path / "main"
    main.mkdir()
    git(main, "init", "-q", "-b", "main")
    (main / ".beads").mkdir()
    (main / ".beads" / "config.yaml").write_text("issue-prefix: tx\n")
    (main / ".gitignore").write_text(".beads/embeddeddolt/\n.beads/hooks/\n")
    git(main, "add", ".")
    git(main, "commit", "-q", "--no-verify", "-m", "beads config")
    seed_bd_store(main / ".beads", SMALL, env=_env(main / ".beads"))
    install_recorders(main / ".beads", tmp_path / "main-hooks.log")
    wt = tmp_path / "wt"
    git(main, "worktree", "add", "-q", str(wt), "-b", "feature")
    assert (wt / ".beads" / "config.yaml").exists() and not (wt / ".beads" / "embeddeddolt").exists()
    install_recorders(wt / ".beads", tmp_path / "wt-hooks.log")
    (wt / "src").mkdir()
    out = js(None, "close", "tx-c02d", "--json", cwd=wt / "src")
    assert out[0]["status"] == "closed"
    (rec,) = fired(tmp_path / "main-hooks.log")
    assert rec["BEADS_DIR"] == str((main / ".beads").resolve()) and rec["cwd"] == str((wt / "src").resolve())
    assert fired(tmp_path / "wt-hooks.log") == []


# ----------------------------------------------------------------- hooks

def test_close_fires_on_close_only_with_bds_arguments_stdin_env_and_cwd(beads, tmp_path):
    """internal/hooks/hooks_unix.go runHook: `exec.CommandContext(ctx, hookPath, issue.ID, event)`,
    stdin = json.Marshal(issue) (compact; labels included: store.GetIssue), env and cwd inherited
    (cmd.Env/cmd.Dir unset) -- with BEADS_DIR, which main.go l.387 exports; hook_decorator.go
    CloseIssue fires EventClose only."""
    log = tmp_path / "hooks.log"
    install_recorders(beads, log)
    work = tmp_path / "somewhere"
    work.mkdir()
    p = run(beads, "close", "tx-c02d", "--reason", "patched", "--json", env={"TEST_MARK": "inherited"}, cwd=work)
    assert p.returncode == 0, p.stderr
    closed = json.loads(p.stdout)[0]
    (rec,) = fired(log)
    assert rec["hook"] == "on_close" and rec["argv"] == ["tx-c02d", "close"]
    assert json.loads(rec["stdin"]) == closed
    assert json.loads(rec["stdin"])["labels"] == ["billing", "security"]
    assert rec["stdin"] == json.dumps(closed, separators=(",", ":"))  # compact, one line
    assert rec["cwd"] == str(work.resolve()) and rec["MARK"] == "inherited"
    assert rec["BEADS_DIR"] == str(beads.resolve())


def test_update_status_closed_fires_only_on_update(beads, tmp_path):
    """hook_decorator.go UpdateIssue fires EventUpdate, whatever the update; `bd update --status
    closed` goes through UpdateIssue (cmd/bd/update.go l.373), so on_close never runs (v1.x)."""
    log = tmp_path / "hooks.log"
    install_recorders(beads, log)
    assert run(beads, "update", "tx-b71c", "--status", "closed", "--json").returncode == 0
    (rec,) = fired(log)
    assert rec["hook"] == "on_update" and rec["argv"] == ["tx-b71c", "update"]
    assert json.loads(rec["stdin"])["status"] == "closed"
    assert run(beads, "update", "tx-c02d", "--priority", "1", "--add-label", "urgent").returncode == 0
    recs = fired(log)[1:]  # hooks run concurrently (one goroutine each): order them by content
    assert [r["hook"] for r in recs] == ["on_update", "on_update"]  # UpdateIssue, then AddLabel
    assert sorted(json.loads(r["stdin"])["labels"] for r in recs) == [["billing", "security"],
                                                                     ["billing", "security", "urgent"]]


def test_create_and_reopen_hooks(beads, tmp_path):
    """hook_decorator.go createHookEvents: on_create with a label-free snapshot, then one
    on_update per initial label, cumulative; ReopenIssue -> on_update; re-close -> on_close."""
    log = tmp_path / "hooks.log"
    install_recorders(beads, log)
    new = js(beads, "create", "Labelled", "-l", "b,a", "--json")
    recs = fired(log)  # concurrent, so compared without their order
    assert sorted((r["hook"], json.loads(r["stdin"]).get("labels") or []) for r in recs) == [
        ("on_create", []), ("on_update", ["a", "b"]), ("on_update", ["b"])]
    assert all(r["argv"][0] == new["id"] for r in recs)
    js(beads, "close", "tx-d4e5", "--json")  # already closed: closes again, fires again
    assert [r["hook"] for r in fired(log)[3:]] == ["on_close"]
    js(beads, "reopen", "tx-d4e5", "--json")
    assert [r["hook"] for r in fired(log)[3:]] == ["on_close", "on_update"]


@pytest.mark.parametrize("how", [{"BD_NO_HOOKS": "1"}, {"BD_NO_HOOKS": "true"}, "config"])
def test_no_hooks(beads, tmp_path, how):
    """main.go l.1125 `!config.GetBool("no-hooks")`: viper binds BD_NO_HOOKS (any ParseBool true
    value) and `no-hooks:` in config.yaml."""
    log = tmp_path / "hooks.log"
    install_recorders(beads, log)
    env = how if isinstance(how, dict) else {}
    if how == "config":
        (beads / "config.yaml").write_text("issue-prefix: tx\nno-hooks: true\n")
    assert run(beads, "close", "tx-b71c", "--json", env=env).returncode == 0
    assert fired(log) == []
    assert js(beads, "show", "tx-b71c", "--json")[0]["status"] == "closed"
    assert run(beads, "close", "tx-c02d", "--json", env={"BD_NO_HOOKS": "0"} if env else {}).returncode == 0
    assert len(fired(log)) == (0 if how == "config" else 1)


def test_hooks_that_are_not_executable_or_are_directories_are_skipped(beads, tmp_path):
    """internal/hooks/hooks.go Run: a missing hook, a directory or a file without an x bit is skipped."""
    log = tmp_path / "hooks.log"
    install_recorders(beads, log, names=("on_close",))
    (beads / "hooks" / "on_close").chmod(0o644)
    (beads / "hooks" / "on_update").mkdir()
    assert run(beads, "close", "tx-b71c", "--json").returncode == 0
    assert run(beads, "update", "tx-c02d", "--priority", "1", "--json").returncode == 0
    assert fired(log) == []


def test_hook_timeout_kills_the_whole_process_group(beads, tmp_path):
    """hooks_unix.go: Setpgid, and on the timeout (10 s; here BD_STANDIN_HOOK_TIMEOUT=1)
    syscall.Kill(-pid, SIGKILL) kills the hook and the children it started; bd carries on."""
    pids = tmp_path / "pids"
    hook = beads / "hooks" / "on_close"
    hook.parent.mkdir()
    hook.write_text(f"#!/bin/sh\nsleep 300 &\necho $$ $! > {pids}\nwait\n")
    hook.chmod(0o755)
    log = tmp_path / "hooks.log"
    p = run(beads, "close", "tx-b71c", "--json", env={"BD_STANDIN_HOOK_TIMEOUT": "1", "BD_STANDIN_HOOK_LOG": str(log)})
    assert p.returncode == 0 and json.loads(p.stdout)[0]["status"] == "closed"
    (rec,) = lines(log)
    assert rec["outcome"] == "killed" and rec["exit_code"] == -9
    _hook_pid, child = (int(x) for x in pids.read_text().split())
    deadline = time.monotonic() + 20
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_cut_hooks_never_run(beads, tmp_path):
    """BD_STANDIN_CUT_HOOKS=1: bd exits without waiting and the hook is cut off before it runs
    (hooks.go Run: `go func() { r.runHook(...) }()`; nothing waits for it).  The write stands."""
    log = tmp_path / "hooks.log"
    install_recorders(beads, log)
    standin_log = tmp_path / "standin.log"
    p = run(beads, "close", "tx-b71c", "--json", env={"BD_STANDIN_CUT_HOOKS": "1",
                                                      "BD_STANDIN_HOOK_LOG": str(standin_log)})
    assert p.returncode == 0 and json.loads(p.stdout)[0]["status"] == "closed"
    assert fired(log) == []
    assert [r["outcome"] for r in lines(standin_log)] == ["cut"]
    assert js(beads, "show", "tx-b71c", "--json")[0]["status"] == "closed"


DETACHED = """#!{python}
import sys
data = sys.stdin.read()
try:  # more than a pipe holds: blocks until a reader takes it -- or fails once bd has gone
    sys.stderr.write("x" * (1 << 20))
    sys.stderr.flush()
    result = "wrote"
except BrokenPipeError:
    result = "EPIPE"
with open({out!r}, "w") as fh:
    fh.write(result + " " + data)
"""


def test_detached_hooks_outlive_bd_with_closed_pipes(beads, tmp_path):
    """BD_STANDIN_CUT_HOOKS=detach: bd starts the hook and exits; like a child a Go program leaves
    behind, the hook runs on, but nobody reads its stdout/stderr any more: writing there fails."""
    out = tmp_path / "detached.out"
    hook = beads / "hooks" / "on_close"
    hook.parent.mkdir()
    hook.write_text(DETACHED.format(python=sys.executable, out=str(out)))
    hook.chmod(0o755)
    p = run(beads, "close", "tx-b71c", "--json", env={"BD_STANDIN_CUT_HOOKS": "detach"})
    assert p.returncode == 0 and json.loads(p.stdout)[0]["status"] == "closed"
    deadline = time.monotonic() + 60
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    result, _, data = out.read_text().partition(" ")
    assert result == "EPIPE" and json.loads(data)["id"] == "tx-b71c"


# ----------------------------------------------------------------- the actor

@pytest.mark.parametrize("case", [
    dict(flag="flagged", env={"BEADS_ACTOR": "beads", "BD_ACTOR": "bd", "USER": "u"}, git=True, want="flagged"),
    # main.go l.422/l.710 pre-fill `actor` from viper's "actor" key = $BD_ACTOR before
    # getActorWithGit (l.925) looks at BEADS_ACTOR: with both set, BD_ACTOR wins
    dict(env={"BEADS_ACTOR": "beads", "BD_ACTOR": "bd"}, git=True, want="bd"),
    dict(env={"BEADS_ACTOR": "beads", "USER": "u"}, git=True, want="beads"),
    dict(env={"BD_ACTOR": "bd", "USER": "u"}, git=True, want="bd"),
    dict(env={"BEADS_ACTOR": "beads"}, config="from-config", git=True, want="from-config"),
    dict(env={"USER": "u"}, git=True, want="Git Name"),  # user.name, never user.email
    dict(env={"USER": "u"}, want="u"),
    dict(env={}, want="unknown"),
])
def test_actor_order(beads, case):
    """main.go getActorWithGit: --actor, BEADS_ACTOR, BD_ACTOR, git user.name, $USER, "unknown";
    with viper's "actor" key (BD_ACTOR, config.yaml `actor:`) read before BEADS_ACTOR."""
    if case.get("git"):
        set_git_user("Git Name", "git@example.com")
    if case.get("config"):
        (beads / "config.yaml").write_text(f"issue-prefix: tx\nactor: {case['config']}\n")
    env = dict(case["env"])
    base = _env(beads, env)
    if "USER" not in env:
        base.pop("USER", None)
    flag = ["--actor", case["flag"]] if case.get("flag") else []
    p = subprocess.run([sys.executable, str(BD), *flag, "create", "Who made me", "--json"], capture_output=True,
                       text=True, env=base, cwd=beads.parent)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["created_by"] == case["want"]


def test_the_closer_is_in_events_and_audit_never_on_the_issue(beads):
    """types.go has no closed_by (only closed_by_session); issueops/close.go records an EventClosed
    with the actor (l.76) and cmd/bd/close.go l.152 appends an audit field_change to
    .beads/interactions.jsonl (audit.go); update --status closed records event "closed" too."""
    c = js(beads, "close", "tx-b71c", "-r", "done", "--session", "sess-1", "--json", env={"BEADS_ACTOR": "spark"})[0]
    assert "closed_by" not in c and c["closed_by_session"] == "sess-1"
    shown = js(beads, "show", "tx-b71c", "--json")[0]
    assert not any(k.startswith("closed_by") and k != "closed_by_session" for k in shown)
    js(beads, "update", "tx-c02d", "--status", "closed", "--json", env={"BD_ACTOR": "lambda"})
    events = [e for e in store_doc(beads)["events"] if e["event_type"] == "closed"]
    assert [(e["issue_id"], e["actor"]) for e in events] == [("tx-b71c", "spark"), ("tx-c02d", "lambda")]
    assert events[0]["comment"] == "done"
    audit = lines(beads / "interactions.jsonl")
    assert [(a["issue_id"], a["actor"], a["extra"]["new_value"]) for a in audit] == [
        ("tx-b71c", "spark", "closed"), ("tx-c02d", "lambda", "closed")]
    assert audit[0]["kind"] == "field_change" and audit[0]["extra"]["reason"] == "done"
    assert audit[0]["id"].startswith("int-") and audit[0]["created_at"].endswith("Z")


def test_new_timestamps_are_utc(beads):
    """issueops/close.go `now := time.Now().UTC()`, update.go ManageClosedAt/ManageStartedAt UTC,
    stored as DATETIME: read back as "...Z" with whole seconds, whatever the local offset."""
    env = {"BD_STANDIN_NOW": "2026-03-04T05:06:07.891+02:00", "TZ": "America/New_York"}
    made = js(beads, "create", "Now", "--json", env=env)
    assert made["created_at"] == made["updated_at"] == "2026-03-04T03:06:07Z"
    started = js(beads, "update", made["id"], "--status", "in_progress", "--json", env=env)[0]
    assert started["started_at"] == "2026-03-04T03:06:07Z"
    closed = js(beads, "close", made["id"], "--json", env=env)[0]
    assert closed["closed_at"] == closed["updated_at"] == "2026-03-04T03:06:07Z"
    imported = js(beads, "show", "tx-a3f8", "--json")[0]  # small.jsonl said 09:00:00.123456789-08:00
    assert imported["created_at"] == "2026-01-05T17:00:00Z"


# ----------------------------------------------------------------- misc / env controls

def test_version_and_global_flags_anywhere(beads):
    """cmd/bd/version.go "bd version X (Build)"; cobra persistent flags are accepted anywhere."""
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
