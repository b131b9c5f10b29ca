"""`tx simulate`: the seed's findings as properties over many seeds, determinism, the real engine, output."""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from token_exchange.sim.result import LIMIT_KINDS
from token_exchange.sim.run import simulate

SEEDS = range(20)
LOG_RE = re.compile(r"^\[\d\d:\d\d:\d\d\] WARN: (Transaction exceeds burst limit \(\d+\.\d+ > \d+\)|"
                    r"Hourly limit reached \(\d+(\.\d+)?/\d+ used, need \d+\.\d+\)|Daily limit reached .*|"
                    r"Would breach emergency reserve .*|Insufficient funds .*)  \(.+\)$")


@pytest.fixture(scope="module")
def runs() -> list:
    return [simulate(hours=24, seed=s) for s in SEEDS]


def test_seed_findings_hold_for_most_seeds(runs: list) -> None:
    tally: Counter[str] = Counter()
    for r in runs:
        f = r.findings()
        for k in ("only_claude_negative", "claude_hits_burst", "claude_hits_hourly", "zero_spends_least",
                  "no_reserve_breach"):
            tally[k] += bool(f[k])
    need = 0.8 * len(runs)
    for k, n in tally.items():
        assert n >= need, (k, n, len(runs))
    # the reserve is a rule, not a tendency: it holds for every seed
    assert tally["no_reserve_breach"] == len(runs)


def test_default_seed_shows_every_finding() -> None:
    r = simulate()
    f = r.findings()
    assert f["net_negative"] == ["claude"]
    assert f["claude_hits_burst"] and f["claude_hits_hourly"]
    assert f["least_spender"] == "zero"
    assert f["reserve_breaches"] == []


def test_accounts_add_up_and_models_follow_strategies(runs: list) -> None:
    for r in runs[:5]:
        for a in r.agents:
            b = r.balances[a]
            assert b["start"] + b["earned"] - b["spent"] - b["pooled"] == b["final"], a
            assert b["net"] == b["final"] - b["start"]
            assert r.stats[a].min_balance is None or r.stats[a].min_balance >= r.cfg.agents[a].limits.reserve
        models = {a: set(r.stats[a].by_model) for a in r.agents}
        assert models["claude"] <= {"claude-opus"}
        assert models["zero"] <= {"llama3.2"}
        assert models["observer"] <= {"gemini-pro"}
        assert models["builder"] <= {"qwen2.5-coder", "claude-sonnet"}
        assert models["spark"] <= {"claude-sonnet", "llama3.2"}
        assert r.stats["lambda"].requests < r.stats["builder"].requests


def test_time_of_day_shape(runs: list) -> None:
    per_hour = Counter()  # type: Counter[str]
    for r in runs:
        for b in r.bands():
            per_hour[b["hours"]] += b["commits"]
    width = {"0-4": 5, "5-12": 8, "13-18": 6, "19-23": 5}
    rate = {k: v / width[k] for k, v in per_hour.items()}
    assert rate["0-4"] > rate["5-12"] > rate["13-18"]
    assert rate["19-23"] > rate["13-18"]


def test_deterministic_per_seed() -> None:
    a, b, c = simulate(hours=6, seed=7), simulate(hours=6, seed=7), simulate(hours=6, seed=8)
    assert a.to_json() == b.to_json()
    assert a.to_json() != c.to_json()


def test_real_engine_ledger_is_kept_and_consistent(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user_home = tmp_path / "mine"
    assert cli("--home", str(user_home), "init").code == 0
    state = ("ledger.toml", "config.toml")  # the source of truth (index.sqlite is derived, WAL-checkpointed)
    before = [(user_home / n).read_bytes() for n in state]
    monkeypatch.setenv("TOKEN_EXCHANGE_HOME", str(user_home))
    out = tmp_path / "sim"
    r = cli("simulate", "--hours", "12", "--seed", "3", "--out", str(out), "--json")
    assert r.code == 0, r.err
    data = r.json()
    # the user's exchange was not touched
    assert [(user_home / n).read_bytes() for n in state] == before
    # the kept home is a normal exchange: doctor passes, balances equal the simulation's
    assert cli("--home", str(out), "doctor").code == 0
    bal = cli("--home", str(out), "balance", "--json").json()
    by_agent = {b["agent"]: b for b in bal}
    for b in data["balances"]:
        assert by_agent[b["agent"]]["balance"] == b["final"]
        assert by_agent[b["agent"]]["earned"] == b["earned"]
    # spends really are LLM charges with model and tokens, priced by the config
    hist = cli("--home", str(out), "history", "claude", "--limit", "500", "--json").json()
    spends = [t for t in hist if t["kind"] == "spend"]
    assert spends and all(t["source"]["model"] == "claude-opus" for t in spends)
    assert all(Decimal(t["source"]["tokens"]) * 15 / 1000 == t["amount"] for t in spends)
    # a second run refuses a non-empty --out
    r = cli("simulate", "--hours", "1", "--out", str(out))
    assert r.code == 1 and "not empty" in r.err


def test_json_output_is_complete_and_exact(cli) -> None:
    r = cli("simulate", "--json")
    assert r.code == 0, r.err
    d = r.json()
    assert {"balances", "model_usage", "limit_events", "hourly", "bands", "pools", "findings"} <= set(d)
    for b in d["balances"]:
        assert isinstance(b["final"], (Decimal, int)) and not isinstance(b["final"], (bool, float))
        assert b["start"] + b["earned"] - b["spent"] - b["pooled"] == b["final"]
    assert any(isinstance(b["final"], Decimal) for b in d["balances"])  # fractional amounts: exact decimals
    assert len(d["hourly"]) == 24
    assert sum(h["commits"] for h in d["hourly"]) == sum(u["commits"] for u in d["model_usage"])
    counts = d["limit_events"]["counts"]
    assert set(counts["claude"]) >= set(LIMIT_KINDS)
    assert counts["claude"]["burst"] > 0 and counts["claude"]["hourly"] > 0
    assert d["limit_events"]["log"]
    for line in d["limit_events"]["log"]:
        assert LOG_RE.match(line), line
    assert any(line.split("] WARN: ")[1].startswith("Transaction exceeds burst limit")
               for line in d["limit_events"]["log"]) or counts["claude"]["burst"] > 0
    assert d["start"] == "2025-01-01T00:00:00Z"  # a simulated clock, not the wall clock
    assert d["home"] is None


def test_text_output_has_the_seed_tables(cli) -> None:
    r = cli("simulate", "--hours", "24")
    assert r.code == 0, r.err
    for title in ("Final balances", "Model usage patterns", "Rate-limit events", "Hourly activity",
                  "Time-of-day effects", "Findings"):
        assert title in r.out, title
    assert re.search(r"^\[\d\d:\d\d:\d\d\] WARN: ", r.out, re.M)
    assert r.err == ""  # no progress bar when stderr is not a terminal


def test_generated_agents(cli, tmp_path: Path) -> None:
    out = tmp_path / "many"
    r = cli("simulate", "--agents", "14", "--hours", "3", "--out", str(out), "--json")
    assert r.code == 0, r.err
    names = [b["agent"] for b in r.json()["balances"]]
    assert len(names) == 14 and "claude-2" in names and "zero-2" in names and "claude-3" in names
    agents = cli("--home", str(out), "agents", "--json").json()
    assert {a["agent"] for a in agents} == set(names)
    assert next(a for a in agents if a["agent"] == "builder-2")["preferred_llm"]["planning"] == "claude-sonnet"


def test_custom_config_and_bad_input(cli, tmp_path: Path) -> None:
    from token_exchange.rules.config import default_text

    cfg = tmp_path / "c.toml"
    cfg.write_text(default_text().replace("burst = 500", "burst = 2000"))
    r = cli("simulate", "--config", str(cfg), "--json")
    assert r.code == 0, r.err
    assert r.json()["limit_events"]["counts"]["claude"]["burst"] == 0  # rules come from the config
    r = cli("simulate", "--config", str(tmp_path / "missing.toml"))
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1
    assert cli("simulate", "--hours", "0").code == 2
    assert cli("simulate", "--agents", "0").code == 2


def test_dashboard_from_a_simulation(cli, tmp_path: Path) -> None:
    page = tmp_path / "sim.html"
    r = cli("dashboard", "--simulate", "--out", str(page), "--json")
    assert r.code == 0, r.err
    text = page.read_text("utf-8")
    assert 'id="limit-events"' in text and "Transaction exceeds burst limit" in text
    assert 'id="hourly"' in text and "<script" not in text
    assert r.json()["simulated"] is True


def test_plot_option(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    png = tmp_path / "s.png"
    if importlib.util.find_spec("matplotlib") is not None:
        r = cli("simulate", "--hours", "6", "--plot", str(png), "--json")
        assert r.code == 0, r.err
        assert png.read_bytes()[:4] == b"\x89PNG"
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    r = cli("simulate", "--plot", str(tmp_path / "t.png"))
    assert r.code == 1 and "matplotlib" in r.err and r.out == ""
