"""The CI templates beyond the report: the pinned-install placeholder, the settle jobs (GitHub, GitLab) run
against real repositories with a bare `origin`, and the GitLab sticky note run against a fake notes API.

actionlint cannot be installed here (its PyPI wrapper downloads a binary), so the templates are checked
structurally with PyYAML and their scripts are executed, as in tests/test_report_ci.py.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlparse

import pytest

from tests.conftest import ROOT, git, tx
from tests.test_report_ci import GITLAB, REPORT_WF, load, steps
from token_exchange.report.build import MARKER

SETTLE_WF = ROOT / "integrations" / "github" / "token-exchange-settle.yml"
PLACEHOLDER = re.compile(r"<[^<>]+>")


def bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    full = {**os.environ, "PATH": path, "NO_PROXY": "*", "no_proxy": "*", **env}
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        full.pop(k, None)
    return subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=cwd, capture_output=True, text=True,
                          env=full, check=False)


# --- structure ------------------------------------------------------------------------------------
def test_settle_workflow_shape_and_security_model() -> None:
    doc = load(SETTLE_WF)
    assert doc["on"] == {"push": {"branches": ["main"]}}  # never pull_request, never pull_request_target
    assert doc["permissions"] == {"contents": "write"}  # to push refs/notes; nothing else
    assert doc["concurrency"]["cancel-in-progress"] is False
    job = doc["jobs"]["settle"]
    assert job["if"] == "github.ref == format('refs/heads/{0}', github.event.repository.default_branch)"
    assert job["runs-on"] and job["timeout-minutes"]
    for st in job["steps"]:
        assert ("uses" in st) != ("run" in st), st
        if "uses" in st:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", st["uses"]), st["uses"]
        else:
            assert "${{" not in st["run"], "expressions reach scripts through env only"
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert 'tx settle --branch "$TX_BRANCH" --rev "$TX_SHA" --json' in runs and "tx sync origin" in runs
    assert "pip install ." not in runs


def test_pull_request_jobs_never_write_the_ledger() -> None:
    report = load(REPORT_WF)
    assert report["permissions"] == {"contents": "read"}
    gitlab = load(GITLAB)
    for text in ("\n".join(s.get("run", "") for s in steps(report, "report")),
                 "\n".join(gitlab["token-exchange-report"]["script"])):
        assert "tx settle" not in text and "tx sync" not in text and "git push" not in text
    settle = gitlab["token-exchange-settle"]
    assert settle["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "push" && $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH'}]
    assert settle["variables"]["GIT_DEPTH"] == "0" and settle["resource_group"]
    assert settle["before_script"] == gitlab["token-exchange-report"]["before_script"]


def test_every_install_source_is_a_loud_placeholder() -> None:
    """token-exchange is not on a package index: every template names a pinned source to fill in."""
    values = [load(REPORT_WF)["env"]["TOKEN_EXCHANGE_PIP"], load(SETTLE_WF)["env"]["TOKEN_EXCHANGE_PIP"],
              load(GITLAB)["variables"]["TOKEN_EXCHANGE_PIP"]]
    for value in values:
        assert value.startswith("git+https://") and PLACEHOLDER.search(value), value


# --- the install step: refuses the placeholder, installs a pinned source ----------------------------
def _install_steps() -> list[tuple[str, str, str]]:
    """(name, script, placeholder value) of every install step."""
    out = []
    for wf in (REPORT_WF, SETTLE_WF):
        doc = load(wf)
        job = next(iter(doc["jobs"].values()))
        script = next(s["run"] for s in job["steps"] if "pip install" in s.get("run", ""))
        out.append((wf.name, script, doc["env"]["TOKEN_EXCHANGE_PIP"]))
    gl = load(GITLAB)
    script = "\n".join(line for line in gl[".token-exchange-setup"] if "TOKEN_EXCHANGE_PIP" in line)
    out.append((GITLAB.name, script, gl["variables"]["TOKEN_EXCHANGE_PIP"]))
    return out


@pytest.mark.parametrize("name,script,placeholder", _install_steps(), ids=lambda v: str(v)[:30])
def test_install_step_refuses_the_placeholder_and_installs_a_pinned_source(tmp_path: Path, name: str, script: str,
                                                                           placeholder: str) -> None:
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {tmp_path / 'args'}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, **env, "TOKEN_EXCHANGE_PIP": placeholder}, check=False)
    assert r.returncode == 1 and "set TOKEN_EXCHANGE_PIP" in r.stdout and "not on PyPI" in r.stdout
    assert not (tmp_path / "args").exists()
    pinned = "git+https://github.com/acme/token-exchange@0123456789abcdef0123456789abcdef01234567"
    r = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, **env, "TOKEN_EXCHANGE_PIP": pinned}, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "args").read_text().split() == ["-m", "pip", "install", "--quiet", pinned]


# --- the settle jobs against a real origin ------------------------------------------------------------
@pytest.fixture
def landed(tmp_path: Path) -> tuple[Path, Path, str]:
    """(origin, a developer clone, the pushed main SHA): two provisionally paid commits merged on main."""
    from tests.test_settlement import merge, on_merge, one

    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    dev = tmp_path / "dev"
    git(tmp_path, "clone", "-q", str(origin), str(dev))
    (dev / "README").write_text("hello\n")
    git(dev, "add", "README")
    git(dev, "commit", "-q", "--no-verify", "-m", "initial")
    on_merge(dev, "notes", edits={'project = ""': 'project = "nexushive-setup"'})
    git(dev, "switch", "-q", "-c", "topic")
    one(dev, "a.py", "fix: a")
    one(dev, "b.py", "docs: b")
    merge(dev, "topic", "merge")
    git(dev, "push", "-q", "origin", "main")
    assert tx("sync", cwd=dev).code == 0
    return origin, dev, git(dev, "rev-parse", "main").strip()


def _runner(tmp_path: Path, origin: Path, name: str) -> Path:
    """A CI runner's checkout of main."""
    path = tmp_path / name
    git(tmp_path, "clone", "-q", str(origin), str(path))
    return path


def _settled_in(dev: Path) -> dict[str, Any]:
    assert tx("sync", cwd=dev).code == 0
    r = tx("balance", "claude", "--json", cwd=dev)
    data = json.loads(r.out, parse_float=Decimal)
    assert isinstance(data, dict)
    return data


def test_github_settle_workflow_settles_and_pushes_the_notes(tmp_path: Path, landed: tuple[Path, Path, str]) -> None:
    origin, dev, sha = landed
    runner = _runner(tmp_path, origin, "runner")
    summary = tmp_path / "summary.md"
    job = load(SETTLE_WF)["jobs"]["settle"]
    for st in job["steps"]:
        if "run" not in st or "pip install" in st["run"]:
            continue
        env = {"TX_BRANCH": "main", "TX_SHA": sha, "GITHUB_STEP_SUMMARY": str(summary)}
        r = bash(st["run"], runner, env)
        assert r.returncode == 0, (st["name"], r.stdout, r.stderr)
    data = json.loads((runner / "token-exchange-settlement.json").read_text(), parse_float=Decimal)
    assert data["totals"]["settled"] == 780 and data["totals"]["provisional_released"] == 780
    assert "token-exchange settled main up to" in summary.read_text() and "settled 780" in summary.read_text()
    w = _settled_in(dev)  # the developer's clone gets the settlement through the notes
    assert (w["balance"], w["settled"], w["provisional"], w["earned"]) == (10780, 10780, 0, 780)
    # a second runner (the next push, nothing new) settles nothing and pushes nothing new
    again = _runner(tmp_path, origin, "runner2")
    for st in job["steps"][1:]:
        if "run" in st and "pip install" not in st["run"]:
            assert bash(st["run"], again, {"TX_BRANCH": "main", "TX_SHA": sha,
                                           "GITHUB_STEP_SUMMARY": str(summary)}).returncode == 0
    assert json.loads((again / "token-exchange-settlement.json").read_text())["written"] == 0


def test_gitlab_settle_job_settles_and_pushes_or_says_what_is_missing(tmp_path: Path,
                                                                      landed: tuple[Path, Path, str]) -> None:
    origin, dev, sha = landed
    runner = _runner(tmp_path, origin, "runner")
    job = load(GITLAB)["token-exchange-settle"]
    before = [line for line in job["before_script"] if "apt-get" not in line and "pip install" not in line]
    env = {"CI_DEFAULT_BRANCH": "main", "CI_COMMIT_SHA": sha, "CI_SERVER_HOST": "gitlab.invalid",
           "CI_PROJECT_PATH": "acme/nexushive-setup", "TOKEN_EXCHANGE_PIP": "git+https://x/y.git@v1"}
    for line in before:
        assert bash(line, runner, env).returncode == 0
    r = bash(job["script"][0], runner, env)  # no push token: refuse, saying what to set
    assert r.returncode == 1 and "TOKEN_EXCHANGE_PUSH_TOKEN" in r.stdout
    env["TOKEN_EXCHANGE_PUSH_URL"] = str(origin)
    for line in job["script"]:
        r = bash(line, runner, env)
        assert r.returncode == 0, (line, r.stdout, r.stderr)
    assert json.loads((runner / "token-exchange-settlement.json").read_text())["totals"]["settled"] == 780
    assert _settled_in(dev)["earned"] == 780


# --- the GitLab sticky note against a fake notes API -------------------------------------------------------
class FakeGitLab:
    """GitLab's notes API as documented (doc/api/notes.md: notes carry author {id, username, ...} and
    `system`, no bot flag; paginated with per_page/page) and GET /user (doc/api/users.md)."""

    TOKEN = "glpat-test"
    ME = 4242

    def __init__(self, notes: list[dict[str, Any]]) -> None:
        self.notes = notes
        self.calls: list[tuple[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def _reply(self, code: int, doc: Any) -> None:
                body = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _route(self, method: str) -> None:
                url = urlparse(self.path)
                fake.calls.append((method, url.path))
                if self.headers.get("PRIVATE-TOKEN") != fake.TOKEN:
                    return self._reply(401, {"message": "401 Unauthorized"})
                data = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
                base = "/api/v4/projects/77/merge_requests/5/notes"
                if method == "GET" and url.path == "/api/v4/user":
                    return self._reply(200, {"id": fake.ME, "username": "project_77_bot", "name": "bot"})
                if method == "GET" and url.path == base:
                    q = parse_qs(url.query)
                    per, page = int(q.get("per_page", ["20"])[0]), int(q.get("page", ["1"])[0])
                    return self._reply(200, fake.notes[(page - 1) * per:page * per])
                if method == "POST" and url.path == base:
                    note = {"id": 9000 + len(fake.notes), "body": data["body"], "system": False,
                            "author": {"id": fake.ME, "username": "project_77_bot"}}
                    fake.notes.append(note)
                    return self._reply(201, note)
                m = re.fullmatch(re.escape(base) + r"/(\d+)", url.path)
                if method == "PUT" and m:
                    note = next(n for n in fake.notes if n["id"] == int(m.group(1)))
                    if note["author"]["id"] != fake.ME:
                        return self._reply(403, {"message": "403 Forbidden"})
                    note["body"] = data["body"]
                    return self._reply(200, note)
                return self._reply(404, {"message": "404 Not Found"})

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_PUT(self) -> None:
                self._route("PUT")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def __enter__(self) -> Self:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *a: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/v4"


def _note(id: int, body: str, author: int, system: bool = False) -> dict[str, Any]:
    return {"id": id, "body": body, "system": system, "author": {"id": author, "username": f"u{author}"}}


@pytest.fixture
def note_script() -> Iterator[str]:
    script = load(GITLAB)["token-exchange-report"]["script"]
    yield next(line for line in script if "TOKEN_EXCHANGE_GITLAB_TOKEN" in line)


@pytest.mark.parametrize("case", ["create", "update-on-page-2", "forged"])
def test_gitlab_note_is_found_by_its_marker_and_author(tmp_path: Path, note_script: str, case: str) -> None:
    others = [_note(1, MARKER + "\nsomeone else's copy", author=7), _note(2, MARKER + " system", FakeGitLab.ME, True)]
    others += [_note(10 + n, f"review comment {n}", author=8) for n in range(105)]  # our note is on page 2
    mine = [_note(500, MARKER + "\nold report", FakeGitLab.ME)] if case == "update-on-page-2" else []
    body = MARKER + "\nnew report for @octocat\n" if case != "forged" else "no marker @octocat\n"
    (tmp_path / "token-exchange-report.md").write_text(body)
    with FakeGitLab(others + mine) as api:
        r = bash(note_script, tmp_path, {"TOKEN_EXCHANGE_GITLAB_TOKEN": FakeGitLab.TOKEN, "CI_API_V4_URL": api.url,
                                         "CI_PROJECT_ID": "77", "CI_MERGE_REQUEST_IID": "5"})
        writes = [c for c in api.calls if c[0] in ("POST", "PUT")]
        if case == "forged":
            assert r.returncode != 0 and "marker" in r.stderr and writes == []
            return
        assert r.returncode == 0, r.stderr
        assert api.notes[0]["body"] == MARKER + "\nsomeone else's copy"  # never someone else's note
        assert api.notes[1]["body"] == MARKER + " system"  # nor a system note
        ours = [n for n in api.notes if n["author"]["id"] == FakeGitLab.ME and not n["system"]]
        assert [n["body"] for n in ours] == [MARKER + "\nnew report for @\u200doctocat\n"]
        if case == "create":
            assert writes == [("POST", "/api/v4/projects/77/merge_requests/5/notes")]
        else:
            assert writes == [("PUT", "/api/v4/projects/77/merge_requests/5/notes/500")]
