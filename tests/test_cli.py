"""The `tx` CLI: conventions (stdout/stderr, --json, exact amounts, exit codes) and hostile input."""

from __future__ import annotations

import json
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
import tomlkit

from tests.conftest import git, tx, tx_inproc


def test_init_writes_commented_seed_config_and_ignores_the_ledger(repo: Path) -> None:
    r = tx("init", cwd=repo)
    assert r.code == 0, r.err
    assert r.out == "" and "created" in r.err  # messages on stderr
    cfg = (repo / ".exchange" / "config.toml").read_text()
    assert "# Tokens every agent's wallet opens with." in cfg and "[agents.claude]" in cfg
    tx("commit", "claude@aygp-dr.ai", "nexushive-setup", "fix: x", cwd=repo)
    status = git(repo, "status", "--porcelain", "--untracked-files=all")
    assert ".exchange/config.toml" in status and ".exchange/.gitignore" in status
    assert "ledger" not in status and "index" not in status
    again = tx("init", cwd=repo)
    assert again.code == 0 and "already" in again.err


def test_home_resolution_order(tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "nowhere"
    outside.mkdir()
    r = tx("balance", cwd=outside)
    assert r.code == 1 and "no exchange home" in r.err and "Traceback" not in r.err
    env_home = tmp_path / "envhome"
    assert tx("init", cwd=outside, env={"TOKEN_EXCHANGE_HOME": str(env_home)}).code == 0
    assert (env_home / "config.toml").exists()
    opt_home = tmp_path / "opthome"
    assert tx("--home", str(opt_home), "init", cwd=repo, env={"TOKEN_EXCHANGE_HOME": str(env_home)}).code == 0
    assert (opt_home / "config.toml").exists() and not (repo / ".exchange").exists()


def test_commit_json_has_agent_amount_and_breakdown(home: Path) -> None:
    r = tx_inproc("--home", str(home), "commit", "claude@aygp-dr.ai", "nexushive-setup", "fix: bug", "--sha", "abc",
                  "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out, parse_float=Decimal)
    assert (data["agent"], data["amount"], data["contract"], data["keyword"]) == ("claude", 450, "nexushive-setup",
                                                                                  "fix")
    assert data["multiplier"] == Decimal("2.0") and data["bonus"] == Decimal("1.5")
    again = json.loads(tx_inproc("--home", str(home), "commit", "claude@aygp-dr.ai", "nexushive-setup", "fix: bug",
                                 "--sha", "abc", "--json").out)
    assert again["already_paid"] and not again["paid"]
    bal = json.loads(tx_inproc("--home", str(home), "balance", "claude", "--json").out)
    assert (bal["balance"], bal["earned"], bal["spent"]) == (10450, 450, 0)


def test_json_amounts_are_exact_decimals(home: Path) -> None:
    assert tx_inproc("--home", str(home), "award", "builder", "178.2", "bd", "closed").code == 0
    assert tx_inproc("--home", str(home), "award", "builder", "0.1", "bd", "closed again").code == 0
    out = tx_inproc("--home", str(home), "balance", "builder", "--json").out
    assert '"earned": 178.3' in out and '"balance": 10178.3' in out
    assert "00000000" not in out


def test_undecodable_argument_bytes_come_back_as_replacement_characters_in_json(home: Path) -> None:
    # The bytes b"\xff\xfe" of a real argv arrive as lone surrogates, which UTF-8 JSON cannot carry.
    r = tx_inproc("--home", str(home), "meter", "claude-code", "\udcff\udcfe", "--json")
    assert r.code == 1 and "Traceback" not in r.err
    (result,) = json.loads(r.out)
    assert result["transcript"] == "\ufffd\ufffd" and result["ok"] is False


def test_an_unexpected_error_is_one_line_exit_3_and_debug_shows_it(home: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from token_exchange.services.exchange import Exchange

    def broken(self: Exchange, agent: str) -> None:
        raise RuntimeError("the disk said no")

    monkeypatch.setattr(Exchange, "balance", broken)
    r = tx_inproc("--home", str(home), "balance", "claude", "--json")
    assert r.code == 3 and "Traceback" not in r.err
    assert r.err.strip() == "tx: error: unexpected RuntimeError: the disk said no (a bug: rerun with --debug and " \
                            "report it)"
    assert json.loads(r.out) == {"error": r.err.strip()[len("tx: error: "):]}
    with pytest.raises(RuntimeError, match="the disk said no"):
        tx_inproc("--debug", "--home", str(home), "balance", "claude")


def test_unknown_author_is_reported_not_paid(home: Path) -> None:
    r = tx_inproc("--home", str(home), "commit", "stranger@example.com", "p", "fix: x", "--json")
    assert r.code == 0
    assert json.loads(r.out)["unmatched"] == "stranger@example.com"


def test_agent_add_keeps_comments_and_layout(home: Path) -> None:
    path = home / "config.toml"
    path.write_text(path.read_text().replace("[agents.zero]", "# our frugal agent\n[agents.zero]"))
    r = tx_inproc("--home", str(home), "agent", "add", "delta", "--base-rate", "80", "--primary-llm", "llama3.2",
                  "--email", "d@corp.example")
    assert r.code == 0, r.err
    text = path.read_text()
    assert "# our frugal agent" in text and "# Tokens every agent's wallet opens with." in text
    assert tomlkit.parse(text)["agents"]["delta"]["base_rate"] == 80
    commit = json.loads(tx_inproc("--home", str(home), "commit", "d@corp.example", "p", "x", "--json").out)
    assert (commit["agent"], commit["amount"]) == ("delta", 80)
    dup = tx_inproc("--home", str(home), "agent", "add", "delta", "--base-rate", "1", "--primary-llm", "llama3.2")
    assert dup.code == 1 and "already exists" in dup.err


@pytest.mark.parametrize("args,needle", [
    (["award", "../../x", "5", "s", "d"], "unknown agent"),
    (["award", "builder", "NaN", "s", "d"], "not a finite number"),
    (["award", "builder", "1e999", "s", "d"], "larger than the maximum"),
    (["award", "builder", "0", "s", "d"], "greater than 0"),
    (["award", "--json", "builder", "--", "-5", "s", "d"], "negative"),
    (["award", "builder", "5", "s", "d", "--id", "../../etc"], "invalid transaction id"),
    (["history", "nobody"], "unknown agent"),
    (["agent", "add", "../x", "--base-rate", "1", "--primary-llm", "llama3.2"], "invalid agent name"),
    (["agent", "add", "ok", "--base-rate", "inf", "--primary-llm", "llama3.2"], "not a finite"),
    (["export", "--format", "xml"], "csv or json"),
    (["import", "/nonexistent/file.json"], "cannot read"),
])
def test_bad_input_is_one_line_exit_1_and_changes_nothing(home: Path, args: list[str], needle: str) -> None:
    before = (home / "ledger.toml").read_bytes(), (home / "config.toml").read_bytes()
    r = tx("--home", str(home), *args, *([] if "--json" in args else ["--json"]))
    assert r.code == 1, (r.out, r.err)
    assert needle in r.err and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    assert json.loads(r.out)["error"]
    assert ((home / "ledger.toml").read_bytes(), (home / "config.toml").read_bytes()) == before


def test_usage_errors_exit_2(home: Path) -> None:
    assert tx("--home", str(home), "no-such-command").code == 2
    assert tx("--home", str(home), "award", "builder").code == 2


def test_hostile_messages_are_stored_safely(home: Path) -> None:
    huge = "fix: " + "A" * 200_000
    r = subprocess.run(["python3", "-m", "token_exchange", "--home", str(home), "commit", "claude@aygp-dr.ai",
                        "p", b"fix: caf\xe9 \xff\xfe".decode("utf-8", "surrogateescape"), "--json"],
                       capture_output=True)
    assert r.returncode == 0, r.stderr
    assert tx_inproc("--home", str(home), "commit", "zero@x", "p", huge, "--json").code == 0
    assert tx_inproc("--home", str(home), "commit", "zero@x", "p" * 10_000, "docs", "--json").code == 0
    assert tx("--home", str(home), "doctor").code == 0
    hist = json.loads(tx_inproc("--home", str(home), "history", "zero", "--json").out)
    assert all(len(t["description"]) <= 500 and len(t["project"]) <= 200 for t in hist)


def test_bad_config_is_one_line(home: Path) -> None:
    (home / "config.toml").write_text((home / "config.toml").read_text() + "\n[exchange.oops]\n")
    r = tx("--home", str(home), "balance")
    assert r.code == 1 and "config.toml" in r.err and "Traceback" not in r.err


def test_doctor_and_export(home: Path) -> None:
    tx_inproc("--home", str(home), "award", "zero", "12.5", "bd", "closed", "--id", "issue:bd-1")
    d = json.loads(tx_inproc("--home", str(home), "doctor", "--json").out)
    assert d["ok"] and d["transactions"] == 7
    csv = tx_inproc("--home", str(home), "export", "--format", "csv").out.splitlines()
    assert csv[0].startswith("id,ts,kind") and any(line.startswith("issue:bd-1,") and ",12.5," in line for line in csv)
    since = tx_inproc("--home", str(home), "export", "--since", "2999-01-01").out
    assert json.loads(since) == {"transactions": []}


def _commands(app):
    import typer.main

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, [*path, name])
        else:
            yield path, cmd

    return list(walk(typer.main.get_command(app), []))


def test_every_command_accepts_json_and_documents_every_parameter() -> None:
    from token_exchange.cli import app
    from token_exchange.cli.bd import app as bd_app

    for application in (app, bd_app):
        commands = _commands(application)
        assert len(commands) >= 7
        missing = [" ".join(p) for p, c in commands
                   if not any("--json" in o.opts for o in c.params if hasattr(o, "opts"))]
        assert missing == []
        undocumented = [f"{' '.join(p)} {o.name}" for p, c in commands for o in c.params
                        if not (getattr(o, "help", None) or "").strip()]
        assert undocumented == []


@pytest.mark.parametrize("args", [["-h"], ["report", "-h"], ["llm", "reserve", "-h"], ["pool", "show", "-h"],
                                  ["hooks", "install", "--help"]])
def test_short_help_everywhere(args: list[str]) -> None:
    r = tx_inproc(*args)
    assert r.code == 0 and "Usage:" in r.out and "--help" in r.out


def test_version() -> None:
    from token_exchange import __version__

    r = tx_inproc("--version")
    assert r.code == 0 and r.out.strip() == f"tx {__version__}"


def test_doctor_exits_1_when_inconsistent(home: Path) -> None:
    tx_inproc("--home", str(home), "award", "zero", "5", "bd", "x", "--id", "a-1")
    tx_inproc("--home", str(home), "award", "zero", "6", "bd", "y", "--id", "a-2")
    path = home / "ledger.toml"
    path.write_text(path.read_text().replace('amount = "5"', 'amount = "50000"'))
    r = tx_inproc("--home", str(home), "doctor", "--json")
    assert r.code == 1
    report = json.loads(r.out)
    assert not report["ok"] and any("hash" in p for p in report["problems"])


def test_config_cache_never_serves_a_stale_config(home: Path) -> None:
    assert tx_inproc("--home", str(home), "agents").code == 0  # parses and caches
    assert (home / ".config-cache.json").exists()
    cfg = home / "config.toml"
    text = cfg.read_text()
    cfg.write_text(text.replace("base_rate = 150", "base_rate = 151"))  # same size class of edit
    data = json.loads(tx_inproc("--home", str(home), "agents", "--json").out, parse_float=Decimal)
    assert {d["agent"]: d["base_rate"] for d in data}["claude"] == 151
    cfg.write_text(text + "\n[exchange.oops]\n")
    assert tx_inproc("--home", str(home), "agents").code == 1  # invalid edits are caught, not masked by the cache
    (home / ".config-cache.json").write_text("{not json")
    cfg.write_text(text)
    assert tx_inproc("--home", str(home), "agents").code == 0
