"""Every fenced snippet in README.md and docs/ works as copied, or carries a placeholder that fails loudly.

Each snippet is registered below with the test that exercises it (commands run for real in temporary
repositories, the pre-commit config against this checkout with the real pre-commit CLI, synopses against
the commands' own options, YAML against the action it uses). A snippet without an entry fails
`test_every_snippet_has_a_test`, so a new one cannot go untested.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from tests.conftest import ROOT, git, run, tx, tx_at
from tests.test_hooks import change

PLACEHOLDER = re.compile(r"<[^<>\n]+>")


class Snippet(NamedTuple):
    file: str  # relative to the repository
    line: int
    lang: str
    text: str

    @property
    def key(self) -> tuple[str, str]:
        return self.file, self.text.splitlines()[0].strip() if self.text.strip() else ""


def snippets() -> list[Snippet]:
    """Every fenced block (```), indentation of its fence removed."""
    out = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        lines = path.read_text("utf-8").splitlines()
        i = 0
        while i < len(lines):
            m = re.match(r"^(\s*)```(\w*)\s*$", lines[i])
            if not m:
                i += 1
                continue
            indent, lang, start = m.group(1), m.group(2), i + 1
            i += 1
            body = []
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i].removeprefix(indent))
                i += 1
            i += 1
            out.append(Snippet(str(path.relative_to(ROOT)), start, lang, "\n".join(body) + "\n"))
    return out


def snippet(file: str, first: str) -> Snippet:
    found = [s for s in snippets() if s.file == file and s.key[1].startswith(first)]
    assert len(found) == 1, (file, first, found)
    return found[0]


# (file, how its first line starts) -> the test below that exercises the snippet
REGISTRY: dict[tuple[str, str], str] = {
    ("README.md", "python3 -m pip install -e . && tx simulate"): "test_readme_set_up",
    ("README.md", "python3 -m pip install -e '.[test]'"): "test_readme_test_command",
    ("README.md", "tx init "): "test_readme_using_it_in_a_repository",
    ("README.md", "default_install_hook_types:"): "test_pre_commit_config_snippets",
    ("docs/hooks.md", "default_install_hook_types:"): "test_pre_commit_config_snippets",
    ("README.md", "- uses: actions/checkout@v4"): "test_composite_action_snippets",
    ("docs/ci.md", "on: pull_request"): "test_composite_action_snippets",
    ("docs/ci.md", "tx report --base REF"): "test_synopses",
    ("docs/settlement.md", "tx settle [--branch"): "test_synopses",
    ("docs/simulation.md", "tx simulate [--hours"): "test_synopses",
    ("docs/spending.md", "tx llm AGENT TASK_TYPE TOKENS"): "test_synopses",
    ("docs/spending.md", "tx meter install claude-code"): "test_synopses",
    ("docs/ledger.md", "# token-exchange ledger v2."): "test_toml_journal_layout_is_what_the_journal_writes",
    ("docs/bd.md", "tx-bd rewards "): "test_synopses",
    ("docs/notes.md", "tx init --backend notes "): "test_notes_quick_start",
    ("docs/notes.md", "- uses: actions/checkout@v4"): "test_notes_ci_steps",
    ("docs/settlement.md", "[settlement]"): "test_settlement_config_snippet",
    ("docs/simulation.md", "[00:04:41] WARN"): "test_simulation_log_lines",
    ("docs/simulation.md", "next: put the exchange"): "test_simulation_next_steps",
    ("docs/spending.md", "$ tx llm claude coding 5000"): "test_spending_session",
    ("docs/spending.md", "used(window) ="): "test_window_rule_names_what_the_code_counts",
    ("docs/spending.md", "from token_exchange.services.exchange import Exchange"): "test_spending_agent_code",
    ("README.md", "from token_exchange import api"): "test_api_example_prints_its_output_block",
    ("README.md", "Wallet(agent='claude'"): "test_api_example_prints_its_output_block",
    ("docs/api.md", "claude mcp add token-exchange -- tx mcp"): "test_mcp_registration_names_real_options",
    ("docs/api.md", "# token_exchange_hook.py"): "test_litellm_hook_and_its_proxy_config",
    ("docs/api.md", "# config.yaml"): "test_litellm_hook_and_its_proxy_config",
    ("docs/postgres.md", "pip install 'token-exchange[postgres]'"): "test_postgres_setup",
    ("docs/postgres.md", "tx migrate --to postgres"): "test_synopses",
    ("docs/DEVELOPING.md", "entry points   cli/"): "test_developing_layers_name_real_packages",
}


def registered(s: Snippet) -> list[tuple[str, str]]:
    return [k for k in REGISTRY if k[0] == s.file and s.key[1].startswith(k[1])]


def test_every_snippet_has_a_test() -> None:
    found = snippets()
    missing = [(s.file, s.line, s.key[1][:60]) for s in found if len(registered(s)) != 1]
    assert not missing, f"snippets without exactly one test (add one to REGISTRY): {missing}"
    used = {k for s in found for k in registered(s)}
    assert used == set(REGISTRY), f"REGISTRY names snippets that are gone: {sorted(set(REGISTRY) - used)}"
    for name in REGISTRY.values():
        assert callable(globals().get(name)), name


def commands(text: str) -> list[tuple[str, str]]:
    """(command, comment) per line of a shell snippet."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cmd, _, comment = line.partition("  #")
        out.append((cmd.strip(), comment.strip()))
    return out


# --- README ---------------------------------------------------------------------------------------
def test_readme_set_up(tmp_path: Path) -> None:
    [(cmd, _)] = commands(snippet("README.md", "python3 -m pip install -e .").text)
    install, _, rest = cmd.partition(" && ")
    assert shlex.split(install) == ["python3", "-m", "pip", "install", "-e", "."]  # this checkout, as tested
    assert (ROOT / "pyproject.toml").is_file() and 'name = "token-exchange"' in (ROOT / "pyproject.toml").read_text()
    args = shlex.split(rest)
    assert args[0] == "tx"
    r = tx(*args[1:], cwd=tmp_path)
    assert r.code == 0, r.err
    assert "claude" in r.out and "WARN" in r.out


def test_readme_test_command() -> None:
    """The suite this very test belongs to: the `test` extra has the runner and what the suite imports."""
    import tomllib

    [(cmd, _)] = commands(snippet("README.md", "python3 -m pip install -e '.[test]'").text)
    assert cmd == "python3 -m pip install -e '.[test]' && python3 -m pytest -q"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extra = " ".join(project["project"]["optional-dependencies"]["test"])
    for needed in ("pytest", "hypothesis", "pre-commit", "pyyaml"):
        assert needed in extra
    assert project["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]


def test_readme_using_it_in_a_repository(repo: Path) -> None:
    """Run the block line by line in a repository named nexushive-setup; each comment says what to see."""
    lines = commands(snippet("README.md", "tx init ").text)
    assert [c for c, _ in lines] == ["tx init", "tx hooks install", 'git commit -m "fix: parser"', "tx balance",
                                     "tx balance claude --json"]
    outputs = {}
    for cmd, _ in lines:
        args = shlex.split(cmd)
        if args[0] == "git":
            change(repo, "parser.py")  # something to commit
            proc = subprocess.run(args, cwd=repo, capture_output=True, text=True, check=False)
            assert proc.returncode == 0, proc.stderr
            outputs[cmd] = proc.stdout + proc.stderr
        else:
            r = tx(*args[1:], cwd=repo)
            assert r.code == 0, r.err
            outputs[cmd] = r.out + r.err
    assert (repo / ".exchange" / "config.toml").is_file()
    said = dict(lines)['git commit -m "fix: parser"'].removesuffix("...").strip()
    assert said.startswith("token-exchange: claude 450 tokens on nexushive-setup")
    assert said in outputs['git commit -m "fix: parser"']
    assert "claude" in outputs["tx balance"] and "10450" in outputs["tx balance"]
    shown = dict(lines)["tx balance claude --json"].replace(", ...}", "}")
    expected = json.loads(shown)
    got = json.loads(outputs["tx balance claude --json"], parse_float=Decimal)
    assert {k: got[k] for k in expected} == expected


# --- pre-commit: against this checkout, with the real CLI -------------------------------------------
@pytest.mark.skipif(shutil.which("pre-commit") is None, reason="pre-commit is not installed")
@pytest.mark.parametrize("file", ["README.md", "docs/hooks.md"])
def test_pre_commit_config_snippets(repo: Path, file: str, pre_commit_home: Path, monkeypatch: pytest.MonkeyPatch,
                                    request: pytest.FixtureRequest) -> None:
    monkeypatch.setenv("PIP_CACHE_DIR", str(pre_commit_home / "pip-cache"))
    text = snippet(file, "default_install_hook_types").text
    config = yaml.safe_load(text)
    [entry] = config["repos"]
    assert entry["repo"] == "https://github.com/<org>/token-exchange"
    assert PLACEHOLDER.fullmatch(entry["rev"]), "rev must be a placeholder: no tag is published"
    manifest = {h["id"] for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    assert {h["id"] for h in entry["hooks"]} == manifest  # every hook this repository publishes
    assert set(config["default_install_hook_types"]) >= {"commit-msg", "post-commit", "post-rewrite"}
    # this checkout's working tree, committed: the module fixture of tests/test_hooks_precommit.py
    path, sha = request.getfixturevalue("snapshot")
    assert tx("init", cwd=repo).code == 0
    # 1. as copied, but with a reachable repository: the placeholder rev fails loudly, naming itself
    (repo / ".pre-commit-config.yaml").write_text(text.replace("https://github.com/<org>/token-exchange", str(path)))
    r = run(["pre-commit", "install"], cwd=repo)
    assert r.code == 0, r.out + r.err
    change(repo, "a.py")
    proc = subprocess.run(["git", "commit", "-q", "-m", "fix: a"], cwd=repo, capture_output=True, text=True,
                          check=False)
    assert proc.returncode != 0 and entry["rev"] in proc.stdout + proc.stderr
    # 2. with the placeholders filled in (this checkout at a commit): it installs and pays
    (repo / ".pre-commit-config.yaml").write_text(
        text.replace("https://github.com/<org>/token-exchange", str(path)).replace(entry["rev"], sha))
    r = run(["pre-commit", "install"], cwd=repo)
    assert r.code == 0, r.out + r.err
    for hook in ("commit-msg", "post-commit", "post-rewrite"):
        assert f".git/hooks/{hook}" in r.out
    proc = subprocess.run(["git", "commit", "-q", "-m", "fix: a"], cwd=repo, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "token-exchange: claude 450 tokens on nexushive-setup" in proc.stdout + proc.stderr


# --- the composite action snippets ------------------------------------------------------------------------
@pytest.mark.parametrize("file,first", [("README.md", "- uses: actions/checkout@v4"),
                                        ("docs/ci.md", "on: pull_request")])
def test_composite_action_snippets(file: str, first: str) -> None:
    doc = yaml.safe_load(snippet(file, first).text)
    steps = doc if isinstance(doc, list) else doc["jobs"]["earnings"]["steps"]
    checkout = next(s for s in steps if s["uses"].startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # the report needs the merge base
    ours = next(s for s in steps if "token-exchange@" in s["uses"])
    repo_part, _, ref = ours["uses"].partition("@")
    assert repo_part == "<org>/token-exchange" and PLACEHOLDER.fullmatch(ref)  # no tag is published: pin one
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"  # `uses: OWNER/REPO@REF` runs this repository's action.yml
    text = snippet(file, first).text
    for name in re.findall(r"steps\.tx\.outputs\.([\w-]+)", text):
        assert name in action["outputs"] and ours.get("id") == "tx"
    commented = re.search(r"# with: \{(.*)\}", text)  # the inputs the snippet mentions
    for key in re.findall(r"([\w-]+):", commented.group(1) if commented else ""):
        assert key in action["inputs"], key


# --- synopses: every option they show exists ----------------------------------------------------------------
def _click(prog: str) -> Any:
    import typer.main

    if prog == "tx-bd":
        from token_exchange.cli.bd import app
    else:
        from token_exchange.cli import app
    return typer.main.get_command(app)


def _check_synopsis(line: str) -> None:
    words = line.split()
    prog, rest = words[0], words[1:]
    cmd = _click(prog)
    while rest and hasattr(cmd, "commands"):
        name = rest[0]
        if name in cmd.commands:
            cmd = cmd.commands[name]
            rest = rest[1:]
        elif name.isupper() and "spend" in cmd.commands:  # `tx llm AGENT ...` is `tx llm spend AGENT ...`
            cmd = cmd.commands["spend"]
        else:
            raise AssertionError(f"{line!r}: no command {name!r}")
    opts = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    for word in rest:
        for opt in re.findall(r"--[\w-]+", word):
            assert opt in opts, f"{line!r}: {opt} is not an option of {prog} (has {sorted(opts)})"


@pytest.mark.parametrize("file,first", [(f, k) for (f, k), name in REGISTRY.items() if name == "test_synopses"])
def test_synopses(file: str, first: str) -> None:
    text = snippet(file, first).text
    joined = re.sub(r"\n\s+(?=\[)", " ", text)  # continuation lines of a long synopsis
    seen = 0
    for raw in joined.splitlines():
        line = raw.split("  #")[0].strip()
        for part in line.split(" | "):
            if part.startswith(("tx ", "tx-bd ")):
                _check_synopsis(part.strip())
                seen += 1
    assert seen


# --- docs/notes.md -------------------------------------------------------------------------------------------
def _with_origin(tmp_path: Path, repo: Path) -> Path:
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "main")
    return origin


def test_notes_quick_start(tmp_path: Path, repo: Path) -> None:
    origin = _with_origin(tmp_path, repo)
    for cmd, _ in commands(snippet("docs/notes.md", "tx init --backend notes").text):
        r = tx(*shlex.split(cmd)[1:], cwd=repo)
        assert r.code == 0, (cmd, r.err)
    assert git(repo, "config", "--get-all", "notes.rewriteRef", check=False) == ""  # records live on anchors
    assert git(origin, "rev-parse", "refs/notes/token-exchange").strip()  # tx sync pushed the notes
    r = tx("balance", "claude", "--json", cwd=repo)
    assert json.loads(r.out, parse_float=Decimal)["balance"] == 10005


def test_notes_ci_steps(tmp_path: Path, repo: Path) -> None:
    steps = yaml.safe_load(snippet("docs/notes.md", "- uses: actions/checkout@v4").text)
    assert steps[0]["uses"] == "actions/checkout@v4" and steps[0]["with"]["fetch-depth"] == 0
    install, _, balance = steps[2]["run"].partition(" && ")
    assert PLACEHOLDER.search(install) and install.startswith("pip install \"git+https://")  # pin it: not on PyPI
    # the rest, against a runner's clone of an origin that has notes
    origin = _with_origin(tmp_path, repo)
    assert tx("init", "--backend", "notes", cwd=repo).code == 0
    git(repo, "add", ".exchange/config.toml", ".exchange/.gitignore")
    git(repo, "commit", "-q", "--no-verify", "-m", "chore: the exchange (notes backend)")
    git(repo, "push", "-q", "origin", "main")
    assert tx("award", "claude", "5", "review", "good review", cwd=repo).code == 0
    assert tx("sync", cwd=repo).code == 0
    runner = tmp_path / "runner"  # actions/checkout: the committed config, no notes
    git(tmp_path, "clone", "-q", str(origin), str(runner))
    fetch = steps[1]["run"].split("  #")[0]
    proc = subprocess.run(["bash", "-c", fetch], cwd=runner, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    r = tx(*shlex.split(balance)[1:], cwd=runner)
    assert r.code == 0 and {b["agent"]: b["balance"] for b in json.loads(r.out, parse_float=Decimal)}["claude"] == 10005


# --- docs/settlement.md ---------------------------------------------------------------------------------------
def test_settlement_config_snippet() -> None:
    from token_exchange.amounts import SCALE
    from token_exchange.rules import config as config_mod

    text = snippet("docs/settlement.md", "[settlement]").text
    defaults = config_mod.default_text()
    base = defaults[:defaults.index("\n# Who pays for commits")]  # the defaults without [settlement] and [caps]
    cfg = config_mod.parse(base + "\n" + text, None)
    assert cfg.settlement == config_mod.Settlement("on-merge", "main", 2592000, False)
    caps = {(a, c.source, c.window): c.amount for a in ("claude", "zero") for c in cfg.agents[a].caps}
    assert caps == {("claude", "commits", "daily"): 3000 * SCALE, ("claude", "issues", "weekly"): 5000 * SCALE,
                    ("zero", "commits", "daily"): 500 * SCALE, ("zero", "issues", "weekly"): 5000 * SCALE}


# --- docs/simulation.md and docs/spending.md ------------------------------------------------------------------
def test_simulation_log_lines(tmp_path: Path) -> None:
    r = tx("simulate", "--hours", "24", "--seed", "1", cwd=tmp_path)
    assert r.code == 0, r.err
    for line in snippet("docs/simulation.md", "[00:04:41] WARN").text.splitlines():
        assert line in r.out.splitlines(), line


def test_simulation_next_steps(tmp_path: Path) -> None:
    """The "next:" block is what `tx simulate` prints; its commands, run in order in a fresh repository
    (real git, the real hooks, `tx` in a subprocess, a developer who is not an agent), do what they say."""
    from token_exchange.cli.sim import NEXT_STEPS

    text = snippet("docs/simulation.md", "next: put the exchange").text
    assert text.splitlines() == list(NEXT_STEPS)
    lines = commands(text)[1:]
    assert [c.split()[0] for c, _ in lines] == ["tx", "tx", "git", "tx"]
    repo = tmp_path / "myproject"  # no contract pattern matches: the default contract (1.0x)
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    assert Path(os.environ["HOME"]).is_relative_to(tmp_path) and "TOKEN_EXCHANGE_HOME" not in os.environ
    env = {"GIT_AUTHOR_NAME": "Dev", "GIT_AUTHOR_EMAIL": "dev@example.com",
           "GIT_COMMITTER_NAME": "Dev", "GIT_COMMITTER_EMAIL": "dev@example.com"}
    outputs = []
    for cmd, _ in lines:
        args = shlex.split(cmd)
        r = tx(*args[1:], cwd=repo, env=env) if args[0] == "tx" else run(args, cwd=repo, env=env)
        assert r.code == 0, (cmd, r.out, r.err)
        outputs.append(r.out + r.err)
    comments = [c for _, c in lines]
    assert comments[0].startswith(".exchange/config.toml") and (repo / ".exchange" / "config.toml").is_file()
    assert (repo / ".git" / "hooks" / "post-commit").is_file()
    m = re.fullmatch(r"claude has earned (\d+) = (\d+) base x ([\d.]+) \(default contract\) x ([\d.]+) \(fix\)",
                     comments[3])
    assert m, comments[3]
    earned = int(m.group(1))
    assert Decimal(m.group(2)) * Decimal(m.group(3)) * Decimal(m.group(4)) == earned
    assert f"token-exchange: claude {earned} tokens on myproject" in outputs[2]  # the post-commit hook paid it
    assert "claude" in outputs[3] and str(10000 + earned) in outputs[3]  # tx balance shows it
    balance = tx("balance", "claude", "--json", cwd=repo).json()
    assert balance["earned"] == earned and balance["balance"] == 10000 + earned
    assert git(repo, "log", "--format=%ae %ce").split() == ["claude@example.com", "dev@example.com"]


def test_spending_session(tmp_path: Path) -> None:
    """The session, replayed with a clock: 12:50 the first spend, 13:00 two more (not shown: 735 in all,
    under the burst limit each), 13:05 the refused one."""
    home = tmp_path / "home"
    assert tx("--home", str(home), "init").code == 0
    at = {0: "2026-01-01T12:50:00Z", 1: "2026-01-01T12:55:00Z", 2: "2026-01-01T13:05:00Z"}
    text = snippet("docs/spending.md", "$ tx llm claude coding 5000").text.splitlines()
    session = [(text[i][2:], text[i + 1]) for i in range(0, len(text), 2)]
    for n, (cmd, shown) in enumerate(session):
        if n == 2:
            for k in range(2):
                r = tx_at("2026-01-01T13:00:00Z", "--home", str(home), "llm", "claude", "coding", "24500", "--id",
                          f"hidden{k}")
                assert r.code == 0, r.err
        r = tx_at(at[n], "--home", str(home), *shlex.split(cmd)[1:])
        assert (r.out + r.err).strip() == shown, (cmd, r.out + r.err)


def test_window_rule_names_what_the_code_counts() -> None:
    from token_exchange.rules import limits

    text = snippet("docs/spending.md", "used(window)").text
    counted = re.search(r"sum of ([\w +]+) entries", text)
    assert counted and tuple(w.strip() for w in counted.group(1).split("+")) == limits.WINDOW_KINDS
    assert "every reservation that is still open" in text and "still open" in (limits.__doc__ or "")


def test_spending_agent_code(tmp_path: Path) -> None:
    """The agent code as written, with a stand-in for the model call: the reservation settles what was used."""
    home = tmp_path / "home"
    assert tx("--home", str(home), "init").code == 0
    code = snippet("docs/spending.md", "from token_exchange.services.exchange import Exchange").text
    script = tmp_path / "agent.py"
    script.write_text(textwrap.dedent('''
        class Usage: total_tokens = 6000
        class Reply: usage = Usage()
        def call_the_model(max_tokens): return Reply()
    ''') + code + textwrap.dedent('''
        import json
        print(json.dumps({"state": r.state.state, "cost": str(r.state.cost), "tokens": r.state.tokens}))
    '''))
    env = {**os.environ, "TOKEN_EXCHANGE_HOME": str(home)}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"state": "settled", "cost": str(90 * 10_000), "tokens": 6000}  # 6000 x 15/1K


# --- the README's Python API example, verbatim ---------------------------------------------------------
def test_api_example_prints_its_output_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """As tests/test_api.py runs it: in this process, on an injected clock (the environment moves no clock)."""
    from tests.conftest import Clock
    from token_exchange import clock

    home = tmp_path / "home"
    assert tx("--home", str(home), "init").code == 0
    code = snippet("README.md", "from token_exchange import api").text
    expected = snippet("README.md", "Wallet(agent='claude'").text
    monkeypatch.setenv("TOKEN_EXCHANGE_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    with clock.injected(Clock()):
        exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})
    assert capsys.readouterr().out == expected


def test_mcp_registration_names_real_options() -> None:
    """`claude mcp add NAME -- COMMAND` registers COMMAND: it must be a `tx` command line that exists."""
    [(cmd, _)] = commands(snippet("docs/api.md", "claude mcp add").text)
    client, _, server = cmd.partition(" -- ")
    assert shlex.split(client) == ["claude", "mcp", "add", "token-exchange"]
    _check_synopsis(server)


def test_litellm_hook_and_its_proxy_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    code = snippet("docs/api.md", "# token_exchange_hook.py").text
    config = yaml.safe_load(snippet("docs/api.md", "# config.yaml").text)
    module = re.match(r"# (\w+)\.py", code)
    assert module and config["litellm_settings"]["callbacks"] == f"{module.group(1)}.hook"  # module.variable
    assert re.search(r"^hook = ", code, re.MULTILINE)
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # as tests/test_litellm.py: never fetch the price map
    pytest.importorskip("litellm", reason="the [litellm] extra is not installed (tests/test_litellm.py skips too)")
    path = tmp_path / f"{module.group(1)}.py"
    path.write_text(code)
    # The module the proxy would import, loaded from the file in this process (litellm is imported here
    # already; a new process only paid for importing it again).
    spec = importlib.util.spec_from_file_location(module.group(1), path)
    assert spec and spec.loader
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    assert type(m.hook).__name__ == "TokenExchangeLogger"


# --- docs/ledger.md ----------------------------------------------------------------------------------------
def test_toml_journal_layout_is_what_the_journal_writes(home: Path) -> None:
    """The layout shown (``...`` and ``<...>`` stand for values) matches a real ledger.toml line by line:
    the header, a batch comment, then blocks whose keys are the ones shown."""
    text = snippet("docs/ledger.md", "# token-exchange ledger v2.").text
    assert tx("--home", str(home), "award", "claude", "5", "review", "good review").code == 0
    real = (home / "ledger.toml").read_text("utf-8").splitlines()
    shown = [ln for ln in text.splitlines() if ln.strip() and ln.strip() != "..."]
    assert real[0] == shown[0]  # the header, verbatim
    assert any(re.fullmatch(r"# batch \d+", ln) for ln in real) and re.fullmatch(r"# batch \d+", shown[1])
    keys = {m.group(1) for ln in shown if (m := re.match(r"(\w+) = ", ln))}
    real_keys = {m.group(1) for ln in real if (m := re.match(r"(\w+) = ", ln))}
    assert keys and keys <= real_keys, keys - real_keys
    assert "[[transaction]]" in shown and "[[transaction]]" in real


# --- docs/postgres.md ----------------------------------------------------------------------------------------
def test_postgres_setup(tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The setup block against the real server: the extra exists, and with the DSN pointed at a test schema
    (the host in the snippet is an example) `tx init --backend postgres` creates the schema and the wallets."""
    from tests import pgtools

    lines = [ln.split("  #")[0].strip() for ln in snippet("docs/postgres.md", "pip install").text.splitlines()]
    assert lines[0] == "pip install 'token-exchange[postgres]'"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.startswith("psycopg") for dep in extras["postgres"])
    assert lines[1].startswith("export TOKEN_EXCHANGE_DSN=") and lines[2] == "tx init --backend postgres"
    server = pgtools.server_dsn()
    schema = pgtools.Schema(server, f"te_snippet_{os.getpid()}_{abs(hash(str(tmp_path))) % 10**8}")
    monkeypatch.setenv("TOKEN_EXCHANGE_DSN", schema.dsn)
    try:
        r = tx(*shlex.split(lines[2])[1:], cwd=repo)
        assert r.code == 0, r.err
        r = tx("balance", "claude", "--json", cwd=repo)
        assert r.code == 0 and json.loads(r.out, parse_float=Decimal)["balance"] == 10000
    finally:
        import psycopg

        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema.name}" CASCADE')


# --- docs/DEVELOPING.md -----------------------------------------------------------------------------
def test_developing_layers_name_real_packages() -> None:
    """The layer diagram names packages and modules that exist (tests/test_layout.py checks the arrows)."""
    text = snippet("docs/DEVELOPING.md", "entry points   cli/").text
    names = re.findall(r"([a-z_]+)(/|\.py)", text)
    assert len(names) >= 12
    for name, kind in names:
        path = ROOT / "token_exchange" / (name + (".py" if kind == ".py" else ""))
        assert path.exists(), f"docs/DEVELOPING.md names {name}{kind}, which is not in token_exchange/"
    from tests.test_layout import RANK

    ranks = [{RANK[n] for n, _ in re.findall(r"([a-z_]+)(/|\.py)", line) if n in RANK} for line in text.splitlines()]
    ranks = [r for r in ranks if r]
    assert all(len(r) == 1 for r in ranks), "each row of the diagram is one layer"
    assert [r.pop() for r in ranks] == list(range(len(ranks)))[::-1], "the rows are tests/test_layout.py's layers"
