"""Metering wired to the exchange: ``tx meter claude-code | codex | aider``, ``tx guard claude-code``,
``tx meter install|uninstall claude-code`` and the lean ``tx-meter`` / ``tx-guard`` programs.

Fixtures are transcripts and logs written here in the real formats, with the writers of the parser
tests (tests/test_meter_claude_code.py, test_meter_codex.py, test_meter_aider.py cite their
sources).  Expected amounts are worked out by hand from the seed's price table: claude-opus is 15
per 1K input and output tokens, so its cache writes cost 1.25 x 15 = 18.75 and its cache reads
0.1 x 15 = 1.5 per 1K (the documented defaults).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Clock, Result
from tests.test_hooks import READERS, string_annotations
from tests.test_meter_claude_code import agent_result, append, assistant, user, write
from token_exchange.amounts import to_decimal
from token_exchange.ledger.doctor import check as doctor
from token_exchange.meter.guard import allow
from token_exchange.rules import config as config_mod
from token_exchange.services import meter_charge, meter_install, meter_sources, meter_state, prompt_guard
from token_exchange.services.exchange import Exchange

SID = "0b5e3a52-8a8f-4d2c-9a51-3f0d3e1c2b7a"
OPUS = "claude-opus-4-5-20251101"
SONNET = "claude-sonnet-4-5-20250929"
BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _no_agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("TOKEN_EXCHANGE_AGENT", "TOKEN_EXCHANGE_SKIP", "TOKEN_EXCHANGE_DEBUG"):
        monkeypatch.delenv(k, raising=False)


def config_text(default_agent: str = "claude", extra: str = "") -> str:
    text = config_mod.default_text()
    assert text.count('default_agent = ""') == 1
    return text.replace('default_agent = ""', f'default_agent = "{default_agent}"') + "\n" + extra


def exchange(path: Path, clock: Clock, default_agent: str = "claude", extra: str = "") -> Exchange:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.toml").write_text(config_text(default_agent, extra))
    ex = Exchange(path, clock=clock)
    ex.open_all()
    return ex


class Session:
    """A Claude Code session's files: ``projects/<project>/<sid>.jsonl`` and its ``subagents/``."""

    def __init__(self, root: Path, sid: str = SID, cwd: str = "/work/repo") -> None:
        self.dir = root / "projects" / "-work-repo"
        self.sid = sid
        self.cwd = cwd
        self.main = self.dir / f"{sid}.jsonl"

    def sub(self, agent_id: str) -> Path:
        return self.dir / self.sid / "subagents" / f"agent-{agent_id}.jsonl"

    def hook(self, event: str = "Stop", **extra: Any) -> bytes:
        doc: dict[str, Any] = {"session_id": self.sid, "transcript_path": str(self.main), "cwd": self.cwd,
                               "permission_mode": "default", "hook_event_name": event}
        if event in ("Stop", "SubagentStop"):
            doc["stop_hook_active"] = False
        doc.update(extra)
        return json.dumps(doc).encode()


def meters(ex: Exchange, env: dict[str, str] | None = None) -> meter_charge.Meter:
    return meter_charge.Meter.of(ex, env=env or {})


def hook(ex: Exchange, s: Session, event: str = "Stop", env: dict[str, str] | None = None,
         **extra: Any) -> meter_sources.HookRun:
    return meter_sources.claude_code_hook(s.hook(event, **extra), meter=meters(ex, env))


def guard(ex: Exchange, s: Session, env: dict[str, str] | None = None) -> meter_sources.HookRun:
    return prompt_guard.claude_code_guard(s.hook("UserPromptSubmit", prompt="Fix the bug"), meter=meters(ex, env))


def spent(ex: Exchange, agent: str = "claude") -> dict[str, Decimal]:
    """Metered charges in the ledger: transaction id -> tokens."""
    return {t.id: to_decimal(t.amount) for t in ex.ledger.fresh().iter_txns(["spend"])
            if t.agent == agent and t.id.startswith("meter:")}


def balance(ex: Exchange, agent: str = "claude") -> Decimal:
    return to_decimal(ex.ledger.balance(agent).balance)


def one_line(text: str) -> str:
    assert text.endswith("\n") and text.count("\n") == 1 and len(text) < 700, text
    return text


# --- Claude Code: the meter hook ---------------------------------------------------------------
def test_stop_hook_charges_every_response_once_at_its_final_figures(tmp_path: Path, clock: Clock) -> None:
    ex = exchange(tmp_path / "ex", clock)
    s = Session(tmp_path)
    write(s.main, user(),
          assistant("msg_a", out=1, inp=3, cw=2000, cr=10000, model=OPUS, block="thinking"),   # streaming snapshot
          assistant("msg_a", out=1, inp=3, cw=2000, cr=10000, model=OPUS),
          assistant("msg_a", out=800, inp=3, cw=2000, cr=10000, model=OPUS, stop="tool_use", block="tool_use"),
          agent_result(),                                                 # the Agent tool's summary: not a charge
          assistant("msg_local", out=0, inp=0, model="<synthetic>", stop="stop_sequence"),
          "{not json",
          assistant("msg_b", out=40, inp=10, model=SONNET, stop="end_turn"),
          json.dumps(assistant("msg_c", out=7, model=OPUS, stop="end_turn"))[:60], end="")  # being written
    r = hook(ex, s)
    assert r.reply.exit_code == 0 and r.reply.stdout == ""
    # msg_a: (3 x 15 + 800 x 15 + 2000 x 18.75 + 10000 x 1.5) / 1000 = 64.545; msg_b at sonnet (3/1K): 0.15
    assert spent(ex) == {"meter:cc:msg_a": Decimal("64.545"), "meter:cc:msg_b": Decimal("0.15")}
    assert balance(ex) == Decimal("10000") - Decimal("64.695")
    assert "claude: charged 2 responses 64.695" in r.reply.stderr and "1 transcript line skipped" in r.reply.stderr
    t = ex.ledger.get("meter:cc:msg_a")
    assert t is not None and t.kind == "spend" and t.payee == "world:llm"
    assert (t.source["model"], t.source["price_table"], t.source["input_tokens"], t.source["output_tokens"],
            t.source["cache_write_tokens"], t.source["cache_read_tokens"]) == (OPUS, "claude-opus", 3, 800, 2000, 10000)
    assert t.breakdown["cache_write_per_1k"] == "18.75" and t.breakdown["cache_read_per_1k"] == "1.5"

    assert hook(ex, s).charged is None  # run twice: nothing new
    append(s.main, json.dumps(assistant("msg_c", out=7, model=OPUS, stop="end_turn"))[60:])  # the line completes
    r = hook(ex, s)
    assert r.charged is not None and r.charged.new == 1
    assert spent(ex)["meter:cc:msg_c"] == Decimal("0.15")  # (3 + 7) x 15 / 1000
    assert len(spent(ex)) == 3 and doctor(ex.ledger).ok


def test_subagent_files_and_an_id_seen_twice_are_charged_once(tmp_path: Path, clock: Clock) -> None:
    ex = exchange(tmp_path / "ex", clock)
    s = Session(tmp_path)
    write(s.main, user(), assistant("msg_main", out=100, model=OPUS, stop="tool_use"))
    sub = write(s.sub("a1b2c3"), assistant("msg_main", out=100, model=OPUS, stop="tool_use", side=True, agent="a1b2c3"),
                assistant("msg_side1", out=1, model=SONNET, side=True, agent="a1b2c3"),
                assistant("msg_side1", out=200, model=SONNET, side=True, agent="a1b2c3"))  # never gets stop_reason
    (sub.parent / "agent-a1b2c3.meta.json").write_text('{"agentType": "Explore"}')
    r = hook(ex, s)
    assert set(spent(ex)) == {"meter:cc:msg_main"} and r.read is not None and r.read.pending == 1
    r = hook(ex, s, "SubagentStop", agent_id="a1b2c3", agent_type="Explore", agent_transcript_path=str(sub))
    assert r.charged is not None and r.charged.new == 1
    # (3 + 100) x 15 / 1000 = 1.545; (3 + 200) x 3 / 1000 = 0.609 (the best line of a message without stop_reason)
    assert spent(ex) == {"meter:cc:msg_main": Decimal("1.545"), "meter:cc:msg_side1": Decimal("0.609")}
    assert hook(ex, s, "SessionEnd", reason="prompt_input_exit").charged is None


def test_a_lost_or_damaged_state_file_charges_nothing_twice(tmp_path: Path, clock: Clock) -> None:
    ex = exchange(tmp_path / "ex", clock)
    s = Session(tmp_path)
    write(s.main, assistant("msg_1", out=10, model=OPUS, stop="end_turn"),
          assistant("msg_2", out=1, model=OPUS))  # pending: settled by the next request or the session's end
    hook(ex, s, "SessionEnd")
    before = spent(ex)
    assert before == {"meter:cc:msg_1": Decimal("0.195"), "meter:cc:msg_2": Decimal("0.06")}
    state = tmp_path / "ex" / "meter" / "claude-code" / f"{SID}.json"
    # The streaming message later shows other figures (its final line): a re-read from 0 sees them,
    # the id is in the ledger already, so it counts as charged and nothing is charged again.
    append(s.main, assistant("msg_2", out=900, model=OPUS, stop="end_turn"))
    state.unlink()
    r = hook(ex, s)
    assert r.charged is not None and (r.charged.new, r.charged.duplicates) == (0, 2)
    state.write_bytes(b"\x00garbage")
    r = hook(ex, s, "SessionEnd")
    assert r.reply.exit_code == 0 and "damaged" in r.reply.stderr
    assert spent(ex) == before and doctor(ex.ledger).ok
    json.loads(state.read_text())  # rewritten


def test_a_session_without_an_agent_is_one_line_and_charged_in_full_once_it_has_one(tmp_path: Path,
                                                                                    clock: Clock) -> None:
    ex = exchange(tmp_path / "ex", clock, default_agent="")
    s = Session(tmp_path)
    write(s.main, assistant("msg_1", out=10, model=OPUS, stop="end_turn"))
    r = hook(ex, s)
    assert r.reply.exit_code == 0 and "no agent for this claude-code session" in one_line(r.reply.stderr)
    assert not (tmp_path / "ex" / "meter" / "claude-code" / f"{SID}.json").exists()
    r = hook(ex, s, env={"TOKEN_EXCHANGE_AGENT": "nobody"})
    assert r.reply.exit_code == 0 and "TOKEN_EXCHANGE_AGENT=nobody is not an agent" in one_line(r.reply.stderr)
    append(s.main, assistant("msg_2", out=20, model=OPUS, stop="end_turn"))
    hook(ex, s, env={"TOKEN_EXCHANGE_AGENT": "builder"})
    assert set(spent(ex, "builder")) == {"meter:cc:msg_1", "meter:cc:msg_2"} and spent(ex) == {}


def test_which_agent_a_session_is(tmp_path: Path, clock: Clock) -> None:
    extra = """
[[meter.sessions]]
agent = "spark"
source = "codex"

[[meter.sessions]]
agent = "lambda"
cwd = "/work/lambda-*"

[[meter.sessions]]
agent = "observer"
source = ["claude-code"]
session = "review-*"
"""
    ex = exchange(tmp_path / "ex", clock, default_agent="zero", extra=extra)
    m = meters(ex)
    assert m.agent_for("claude-code", cwd="/work/lambda-api") == "lambda"
    assert m.agent_for("codex", cwd="/work/lambda-api") == "spark"  # first rule that matches
    assert m.agent_for("claude-code", cwd="/elsewhere", session="review-42") == "observer"
    assert m.agent_for("aider", session="review-42") == "zero"  # that rule is for claude-code only
    assert meters(ex, {"TOKEN_EXCHANGE_AGENT": "builder"}).agent_for("claude-code", cwd="/work/lambda-x") == "builder"
    assert meters(ex, {"TOKEN_EXCHANGE_AGENT": "builder"}).agent_for("codex", option="claude") == "claude"


def test_metered_usage_is_never_refused_and_never_goes_below_zero(tmp_path: Path, clock: Clock) -> None:
    ex = exchange(tmp_path / "ex", clock)
    s = Session(tmp_path)
    # 40,000 output tokens of opus cost 600: over the burst (500); three are over the hourly limit (1000).
    write(s.main, *(assistant(f"msg_{i}", out=40_000, inp=0, model=OPUS, stop="end_turn") for i in range(3)))
    hook(ex, s)
    assert sum(spent(ex).values()) == Decimal("1800") and balance(ex) == Decimal("8200")
    # 600,000 output tokens cost 9,000: 8,200 can be taken, 800 is recorded as unbilled.
    append(s.main, assistant("msg_big", out=600_000, inp=0, model=OPUS, stop="end_turn"),
           assistant("msg_after", out=1000, inp=0, model=OPUS, stop="end_turn"))
    r = hook(ex, s)
    assert r.charged is not None and to_decimal(r.charged.unbilled) == Decimal("815")
    assert "815 unbilled" in r.reply.stderr
    big, after = ex.ledger.get("meter:cc:msg_big"), ex.ledger.get("meter:cc:msg_after")
    assert big is not None and to_decimal(big.amount) == Decimal("8200") and big.breakdown["unbilled"] == "800"
    assert big.breakdown["cost"] == "9000"
    assert after is not None and after.amount == 0 and after.breakdown["unbilled"] == "15"
    assert balance(ex) == 0
    report = doctor(ex.ledger)
    assert report.ok, report.problems
    g = guard(ex, s)
    assert g.reply.exit_code == 2 and "Insufficient funds (balance 0.0" in g.reply.stderr


def test_a_model_no_pattern_matches_is_priced_at_the_agents_primary_llm(tmp_path: Path, clock: Clock) -> None:
    ex = exchange(tmp_path / "ex", clock, default_agent="builder")  # builder's primary_llm: qwen2.5-coder, 0.1/1K
    s = Session(tmp_path)
    write(s.main, assistant("msg_1", out=10_000, inp=0, cr=100_000, model="claude-haiku-4-5", stop="end_turn"))
    r = hook(ex, s)
    assert spent(ex, "builder") == {"meter:cc:msg_1": Decimal("2")}  # (10,000 x 0.1 + 100,000 x 0.01) / 1000
    assert r.charged is not None and r.charged.fallback_models == ("claude-haiku-4-5",)
    t = ex.ledger.get("meter:cc:msg_1")
    assert t is not None and t.source["price_table"] == "qwen2.5-coder" and "fallback" in t.breakdown["priced_as"]


def test_configured_cache_prices_and_model_patterns(tmp_path: Path, clock: Clock) -> None:
    text = config_text().replace('claude-opus = { cost_per_1k = 15 }',
                                 'claude-opus = { cost_per_1k = 15, cache_write_per_1k = 20, cache_read_per_1k = 0 }')
    text = text.replace('"*claude-sonnet-*" = "claude-sonnet"', '"*claude-sonnet-*" = "claude-sonnet"\n'
                                                                  '"claude-sonnet-4-5-*" = "gemini-pro"')
    (tmp_path / "ex").mkdir()
    (tmp_path / "ex" / "config.toml").write_text(text)
    ex = Exchange(tmp_path / "ex", clock=clock)
    s = Session(tmp_path)
    write(s.main, assistant("msg_1", out=0, inp=0, cw=1000, cr=50_000, model=OPUS, stop="end_turn"),
          assistant("msg_2", out=1000, inp=0, model=SONNET, stop="end_turn"))
    hook(ex, s)
    # 1000 x 20 / 1000 = 20 (reads free); the more literal pattern sends sonnet 4.5 to gemini-pro (2/1K)
    assert spent(ex) == {"meter:cc:msg_1": Decimal("20"), "meter:cc:msg_2": Decimal("2")}


@pytest.mark.parametrize("toml, fragment", [
    ('[meter]\nfoo = 1\n', "meter.foo: unknown key"),
    ('[meter]\ndefault_agent = "ghost"\n', "meter.default_agent: unknown agent 'ghost'"),
    ('[meter]\nfallback_model = "gpt-9"\n', "meter.fallback_model: unknown model 'gpt-9'"),
    ('[meter]\nguard_headroom = 0\n', "meter.guard_headroom"),
    ('[meter.models]\n"claude-*" = "nope"\n', "meter.models.claude-*: unknown model 'nope'"),
    ('[[meter.sessions]]\ncwd = "/w/*"\n', "meter.sessions[0].agent: missing"),
    ('[[meter.sessions]]\nagent = "claude"\nsource = "cursor"\n', "meter.sessions[0].source"),
    ('[[meter.sessions]]\nagent = "claude"\nwhere = "x"\n', "meter.sessions[0].where: unknown key"),
    ('[models]\nm = { cost_per_1k = 1, cache_read_per_1k = -1 }\n', "models.m.cache_read_per_1k"),
])
def test_bad_meter_config_is_one_line_naming_the_key(toml: str, fragment: str) -> None:
    base = config_mod.default_text()
    if toml.startswith("[models]"):
        text = base.replace("[models]\n", toml.replace("[models]\n", "[models]\n", 1), 1)
    else:
        start = base.index("[meter]")
        text = base[:start] + toml
    with pytest.raises(config_mod.ConfigError) as e:
        config_mod.parse(text, None)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_an_older_config_without_meter_gets_the_default_patterns(tmp_path: Path) -> None:
    base = config_mod.default_text()
    text = base[:base.index("# Metering real LLM usage: `tx meter")]
    text = text.replace('"qwen2.5-coder" = { cost_per_1k = 0.1 }\n', "")  # and a table the defaults point at is gone
    text = text.replace('primary_llm = "qwen2.5-coder"', 'primary_llm = "llama3.2"')
    text = text.replace('coding = "qwen2.5-coder"', 'coding = "llama3.2"')
    m = config_mod.meter_config(config_mod.parse(text, None))
    assert m.models["*claude-opus-*"] == "claude-opus" and "*qwen2.5-coder*" not in m.models
    assert m.default_agent == "" and m.sessions == () and m.guard_headroom == 1


# --- safety of the state in the home ----------------------------------------------------------
def test_state_is_never_written_through_a_symlink(tmp_path: Path, clock: Clock) -> None:
    ex = exchange(tmp_path / "ex", clock)
    s = Session(tmp_path)
    write(s.main, assistant("msg_1", out=10, model=OPUS, stop="end_turn"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "ex" / "meter").symlink_to(outside)
    r = hook(ex, s)
    assert r.reply.exit_code == 1 and "is a symlink; refusing" in one_line(r.reply.stderr)
    assert list(outside.iterdir()) == [] and spent(ex) == {}
    (tmp_path / "ex" / "meter").unlink()
    (tmp_path / "ex" / "meter" / "claude-code").mkdir(parents=True)
    (tmp_path / "ex" / "meter" / "claude-code" / f"{SID}.json").symlink_to(outside / "state.json")
    r = hook(ex, s)
    assert r.reply.exit_code == 1 and "symlink" in one_line(r.reply.stderr) and list(outside.iterdir()) == []
    assert spent(ex) == {}  # refused before charging, so the next good run charges it


def test_home_is_found_from_the_sessions_cwd_like_git_does(tmp_path: Path, repo: Path) -> None:
    from tests.conftest import git
    from token_exchange import git as git_mod

    wt = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", str(wt), "-b", "side")
    (repo / "sub" / "dir").mkdir(parents=True)
    for start in (repo, repo / "sub" / "dir", wt):
        w = git_mod.where(start)
        assert w is not None
        found = meter_state.repo_main_worktree(start)
        assert found is not None and found.resolve() == git_mod.main_worktree(w) == repo.resolve()
    assert meter_state.find_home(None, str(wt), {}).resolve() == repo.resolve() / ".exchange"
    assert meter_state.find_home(None, str(wt), {"TOKEN_EXCHANGE_HOME": "/x/h"}) == Path("/x/h")
    assert meter_state.repo_main_worktree(Path("/")) is None
    from token_exchange.rules import limits
    from token_exchange.services import home

    assert (meter_state.HOME_ENV, meter_state.HOME_DIR) == (home.HOME_ENV, home.HOME_DIR)
    for moment in (clock_t0 := Clock().now, clock_t0.replace(microsecond=123456)):
        assert meter_charge.micros(moment) == limits.micros(moment)


def test_opening_a_wallet_is_the_same_transaction_as_the_exchanges(tmp_path: Path, clock: Clock) -> None:
    a = exchange(tmp_path / "a", clock)
    b_home = tmp_path / "b"
    b_home.mkdir()
    (b_home / "config.toml").write_text(config_text())
    b = Exchange(b_home, clock=clock)
    with b.ledger.locked() as idx:
        meters(b).ensure_open(idx, "claude")
    ta, tb = a.ledger.get("open:claude"), b.ledger.get("open:claude")
    assert ta is not None and tb is not None and ta.fingerprint() == tb.fingerprint()


# --- the guard ------------------------------------------------------------------------------------
def test_guard_lets_a_prompt_through_silently(tmp_path: Path, clock: Clock) -> None:
    ex = exchange(tmp_path / "ex", clock)
    s = Session(tmp_path)
    write(s.main, user())
    r = guard(ex, s)
    assert r.reply == allow()  # exit 0, nothing on stdout (it would go into Claude's context) or stderr


def test_guard_blocks_over_the_hourly_limit_until_it_frees_up(tmp_path: Path, clock: Clock) -> None:
    ex = exchange(tmp_path / "ex", clock)
    s = Session(tmp_path)
    write(s.main, assistant("msg_1", out=40_000, inp=0, model=OPUS, stop="end_turn"))  # 600
    assert guard(ex, s).reply.exit_code == 0  # the guard charges what is new first: 600 of 1000 used
    assert set(spent(ex)) == {"meter:cc:msg_1"}
    clock.advance(minutes=15)
    append(s.main, assistant("msg_2", out=26_666, inp=0, model=OPUS, stop="end_turn"))  # 399.99
    assert guard(ex, s).reply.exit_code == 0  # 999.99 used: 0.0001 still fits
    clock.advance(minutes=1)
    append(s.main, assistant("msg_3", out=1, inp=0, model=OPUS, stop="end_turn"))  # 0.015
    r = guard(ex, s)
    assert r.reply.exit_code == 2 and r.reply.stdout == ""  # Claude Code's block: exit 2, reason on stderr
    assert one_line(r.reply.stderr) == (
        "token-exchange: claude: Hourly limit reached (1000.005/1000 used, need 0.0001); "
        "enough frees up at 2026-01-01T13:00:00Z (in 44m 00s)\n")
    clock.advance(minutes=44)
    assert guard(ex, s).reply.exit_code == 0


def test_guard_blocks_at_the_reserve_and_over_the_daily_limit(tmp_path: Path, clock: Clock) -> None:
    extra = "\n[agents.spark.limits]\nhourly = 100000\ndaily = 1500\n"
    ex = exchange(tmp_path / "ex", clock, default_agent="spark", extra=extra)
    s = Session(tmp_path)
    write(s.main, *(assistant(f"msg_{i}", out=100_000, inp=0, model=SONNET, stop="end_turn") for i in range(5)))
    r = guard(ex, s)  # 5 x 300 = 1500 of a daily 1500
    assert r.reply.exit_code == 2 and "Daily limit reached (1500.0/1500 used, need 0.0001)" in r.reply.stderr
    clock.advance(hours=24)
    assert guard(ex, s).reply.exit_code == 0
    # Below the reserve (500): 10000 - 1500 - 2,666,667 x 3 / 1000 = 499.999 (the reserve is checked first)
    append(s.main, assistant("msg_r", out=2_666_667, inp=0, model=SONNET, stop="end_turn"))
    clock.advance(hours=25)
    r = guard(ex, s)
    assert balance(ex, "spark") == Decimal("499.999")
    assert r.reply.exit_code == 2
    assert "Would breach emergency reserve (499.999 - 0.0001 = 499.9989 < 500)" in one_line(r.reply.stderr)


def test_guard_without_an_agent_or_an_exchange_lets_the_prompt_through(tmp_path: Path, clock: Clock) -> None:
    ex = exchange(tmp_path / "ex", clock, default_agent="")
    s = Session(tmp_path)
    write(s.main, user())
    r = guard(ex, s)
    assert r.reply.exit_code == 0 and r.reply.stdout == "" and "no agent" in one_line(r.reply.stderr)
    r = prompt_guard.claude_code_guard(s.hook("UserPromptSubmit"), home=tmp_path / "nowhere", env={})
    assert r.reply.exit_code == 0 and "no exchange at" in one_line(r.reply.stderr)
    r = prompt_guard.claude_code_guard(b"{oops", home=tmp_path / "ex", env={})
    assert r.reply.exit_code == 0 and "not valid JSON" in one_line(r.reply.stderr)


# --- the real programs ------------------------------------------------------------------------
def program(name: str, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(BIN / name), *args], input=stdin, capture_output=True, cwd=cwd,
                          env={**os.environ, **(env or {})})


def test_tx_meter_and_tx_guard_processes(tmp_path: Path, repo: Path) -> None:
    home = repo / ".exchange"
    home.mkdir()
    (home / "config.toml").write_text(config_text())
    s = Session(tmp_path, cwd=str(repo / "sub"))
    write(s.main, assistant("msg_1", out=40_000, inp=0, model=OPUS, stop="end_turn"),
          assistant("msg_2", out=30_000, inp=0, model=OPUS, stop="end_turn"))
    now: dict[str, str] = {}  # real processes run on the real clock (nothing in the environment moves it)
    p = program("tx-meter", "claude-code", stdin=s.hook(), env=now)  # the home: from the session's cwd
    assert p.returncode == 0 and p.stdout == b"" and b"charged 2 responses 1050" in p.stderr
    p = program("tx-guard", "claude-code", stdin=s.hook("UserPromptSubmit", prompt="more"), env=now)
    assert p.returncode == 2 and p.stdout == b""
    assert p.stderr.decode().startswith("token-exchange: claude: Hourly limit reached (1050.0/1000 used")
    # (an hour later the guard lets the prompt through: in-process with an injected clock, test_guard_*)
    assert program("tx-meter", "claude-code", stdin=b"", env=now).returncode == 1  # one line, never 2
    p = program("tx-meter", "nonsense")
    assert p.returncode == 2 and b"unknown command" in p.stderr
    assert program("tx-meter", "claude-code", stdin=b"garbage", env={"TOKEN_EXCHANGE_SKIP": "1"}).returncode == 0


def test_concurrent_hooks_charge_each_response_once(tmp_path: Path, clock: Clock) -> None:
    ex = exchange(tmp_path / "ex", clock)
    s = Session(tmp_path)
    write(s.main, *(assistant(f"msg_{i}", out=100 + i, model=OPUS, stop="end_turn") for i in range(50)))
    write(s.sub("x1"), *(assistant(f"msg_s{i}", out=10, model=OPUS, stop="end_turn", side=True, agent="x1")
                         for i in range(20)))
    events = [s.hook("Stop"), s.hook("SubagentStop", agent_id="x1", agent_transcript_path=str(s.sub("x1"))),
              s.hook("Stop"), s.hook("SessionEnd", reason="other"), s.hook("UserPromptSubmit")]
    procs = [subprocess.Popen([str(BIN / ("tx-guard" if b"UserPrompt" in e else "tx-meter")), "claude-code",
                               "--home", str(tmp_path / "ex")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for e in events]
    for p, e in zip(procs, events, strict=True):
        p.communicate(e, timeout=60)
    assert [p.returncode for p in procs] == [0] * len(events)
    charged = spent(ex)
    assert len(charged) == 70 and sum(charged.values()) == sum(
        (Decimal(3 + 100 + i) * 15 / 1000 for i in range(50)), Decimal(0)) + 20 * Decimal("0.195")
    assert doctor(ex.ledger).ok


# Costly on every hook: the CLI stack, GitPython, tomlkit, the reward engine and the git runner.
HEAVY = ("typer", "rich", "click", "tomlkit", "git", "filelock", "regex", "subprocess", "tomllib",
         "token_exchange.cli", "token_exchange.rules.engine", "token_exchange.services.exchange")


@pytest.mark.parametrize("prog", ["tx-meter", "tx-guard"])
def test_hook_programs_import_nothing_heavy(tmp_path: Path, clock: Clock, prog: str) -> None:
    ex = exchange(tmp_path / "ex", clock)
    config_mod.load(tmp_path / "ex" / "config.toml")  # the config cache exists after the first hook
    s = Session(tmp_path)
    write(s.main, assistant("msg_1", out=10, model=OPUS, stop="end_turn"))
    name = "meter_main" if prog == "tx-meter" else "guard_main"
    ev = "Stop" if prog == "tx-meter" else "UserPromptSubmit"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c",
                           f"from token_exchange.hooks.meter import {name}; {name}()", "claude-code", "--home",
                           str(tmp_path / "ex")], input=s.hook(ev), capture_output=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = {ln.split("|")[-1].strip() for ln in proc.stderr.decode().splitlines() if ln.startswith("import time:")}
    assert "token_exchange.services.meter_charge" in modules and "token_exchange.ledger.ledger" in modules
    # The meter hook (after every response) also does without dataclasses/inspect and orjson (its import
    # pulls in dataclasses, uuid, platform); the guard needs rules.limits, which uses dataclasses.
    banned = HEAVY + READERS + (("dataclasses", "inspect", "orjson", "uuid", "token_exchange.rules.limits")
                                if prog == "tx-meter" else ())
    heavy = {m for m in modules if m in banned or m.split(".")[0] in banned}
    assert not heavy, heavy
    assert not string_annotations(modules)
    assert set(spent(ex)) == {"meter:cc:msg_1"}


# --- Codex and aider --------------------------------------------------------------------------
def test_tx_meter_codex_charges_new_token_counts_once(tmp_path: Path, clock: Clock, cli: Any) -> None:
    from tests.test_meter_codex import NAME, count, meta, rate_only, turn, usage
    from tests.test_meter_codex import write as write_rollout

    exchange(tmp_path / "ex", clock, default_agent="")
    day = tmp_path / "sessions" / "2026" / "03" / "01"
    day.mkdir(parents=True)
    t1, t2 = usage(12000, 10000, 900, 600), usage(30000, 27000, 1500, 1000)
    p = write_rollout(day / NAME, meta(), turn(), count(t1, t1), rate_only())
    home = str(tmp_path / "ex")
    r: Result = cli("--home", home, "meter", "codex", str(p))
    assert r.code == 1 and "no agent for this codex session" in r.err
    r = cli("--home", home, "meter", "codex", str(tmp_path / "sessions"), "--agent", "builder", "--json")
    assert r.code == 0, r.err
    # gpt-5.1-codex matches no pattern: builder's primary_llm (qwen2.5-coder, 0.1/1K; cached input 0.01/1K):
    # (2000 x 0.1 + 10000 x 0.01 + 900 x 0.1) / 1000 = 0.39
    doc = r.json()
    assert isinstance(doc, list) and doc[0]["charge"]["charged"] == Decimal("0.39")
    assert cli("--home", home, "meter", "codex", str(p), "--agent", "builder").err.endswith("nothing new\n")
    with p.open("a") as f:
        f.write(json.dumps(count(usage(42000, 37000, 2400, 1600), t2)) + "\n" + json.dumps(rate_only()) + "\n")
    r = cli("--home", home, "meter", "codex", str(p), "--agent", "builder", "--json")
    doc = r.json()
    # (3000 x 0.1 + 27000 x 0.01 + 1500 x 0.1) / 1000 = 0.72
    assert isinstance(doc, list) and doc[0]["charge"]["charged"] == Decimal("0.72")
    ex = Exchange(tmp_path / "ex", clock=clock)
    ids = [t for t in spent(ex, "builder")]
    assert len(ids) == 2 and all(i.startswith("meter:cx:019a2b3c-") for i in ids)


def test_tx_meter_aider_charges_message_send_events_once(tmp_path: Path, clock: Clock, cli: Any) -> None:
    from tests.test_meter_aider import launched, send, starting
    from tests.test_meter_aider import write as write_log

    exchange(tmp_path / "ex", clock, default_agent="observer")
    log = write_log(tmp_path / "analytics.jsonl", launched(), starting(), send(10006, 81), "{truncat")
    home = str(tmp_path / "ex")
    r = cli("--home", home, "meter", "aider", str(log))
    assert r.code == 0, r.err
    # gemini/gemini-2.5-pro -> gemini-pro (2/1K): (10006 + 81) x 2 / 1000 = 20.174
    ex = Exchange(tmp_path / "ex", clock=clock)
    assert list(spent(ex, "observer").values()) == [Decimal("20.174")]
    assert cli("--home", home, "meter", "aider", str(log)).code == 0
    assert len(spent(ex, "observer")) == 1


# --- install / uninstall --------------------------------------------------------------------------
EXISTING = {
    "permissions": {"allow": ["Bash(npm run lint)"]},
    "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "notify-send done", "timeout": 5}]}],
              "UserPromptSubmit": [{"hooks": [{"type": "command", "command": "./inject-context.sh"}]}]},
}


def test_install_and_uninstall_round_trip(tmp_path: Path, cli: Any) -> None:
    settings = tmp_path / "proj" / ".claude" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps(EXISTING, indent=4))
    r = cli("meter", "install", "claude-code", "--settings", str(settings))
    assert r.code == 0 and "Stop, SubagentStop, SessionEnd, UserPromptSubmit" in r.err
    doc = json.loads(settings.read_text())
    meter_cmd, guard_cmd = meter_install.hook_commands()
    assert meter_cmd == f"{BIN / 'tx-meter'} claude-code" and guard_cmd == f"{BIN / 'tx-guard'} claude-code"
    assert [h["command"] for g in doc["hooks"]["Stop"] for h in g["hooks"]] == ["notify-send done", meter_cmd]
    assert [h["command"] for g in doc["hooks"]["UserPromptSubmit"] for h in g["hooks"]] == \
           ["./inject-context.sh", guard_cmd]
    text = settings.read_text()
    assert cli("meter", "install", "claude-code", "--settings", str(settings)).err.endswith("nothing to change\n")
    assert settings.read_text() == text
    # Another install (other options) replaces ours: no hook runs twice.
    r = cli("--home", str(tmp_path / "h"), "meter", "install", "claude-code", "--settings", str(settings), "--no-guard")
    assert r.code == 0
    doc = json.loads(settings.read_text())
    cmds = [h["command"] for ev in doc["hooks"].values() for g in ev for h in g["hooks"]]
    assert sum(meter_install.is_our_command(c) for c in cmds) == 3 and all("--home" in c for c in cmds
                                                                       if meter_install.is_our_command(c))
    assert cli("meter", "install", "claude-code", "--settings", str(settings), "--on-path").code == 0
    doc = json.loads(settings.read_text())
    assert [h["command"] for g in doc["hooks"]["SessionEnd"] for h in g["hooks"]] == ["tx-meter claude-code"]
    r = cli("meter", "uninstall", "claude-code", "--settings", str(settings))
    assert r.code == 0 and json.loads(settings.read_text()) == EXISTING
    assert cli("meter", "uninstall", "claude-code", "--settings", str(settings)).err.endswith("nothing to change\n")


def test_install_keeps_a_symlinked_settings_file_a_symlink(tmp_path: Path, cli: Any) -> None:
    dotfiles = tmp_path / "dotfiles" / "claude-settings.json"
    dotfiles.parent.mkdir()
    dotfiles.write_text("{}")
    dotfiles.chmod(0o600)
    link = tmp_path / "userhome" / ".claude" / "settings.json"
    link.parent.mkdir(parents=True)
    link.symlink_to(dotfiles)
    assert cli("meter", "install", "claude-code", "--scope", "user").code == 0
    assert link.is_symlink() and "tx-meter" in dotfiles.read_text() and (dotfiles.stat().st_mode & 0o777) == 0o600


def test_install_refuses_bad_settings_and_targets(tmp_path: Path, cli: Any) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text('{"hooks": {"Stop": {}}}')
    r = cli("meter", "install", "claude-code", "--settings", str(settings))
    assert r.code == 1 and "hooks.Stop must be a list" in r.err and settings.read_text() == '{"hooks": {"Stop": {}}}'
    assert cli("meter", "install", "cursor", "--settings", str(settings)).code == 1


def test_is_our_command() -> None:
    assert meter_install.is_our_command("/v/bin/tx-meter claude-code --home '/a b/.exchange'")
    assert meter_install.is_our_command("tx-guard claude-code")
    assert meter_install.is_our_command("tx meter claude-code")
    assert not meter_install.is_our_command("tx-meter codex ~/.codex")
    assert not meter_install.is_our_command("my-tx-meter claude-code")
    assert not meter_install.is_our_command("echo tx-meter claude-code")
    assert not meter_install.is_our_command("tx-meter 'claude-code")
    assert not meter_install.is_our_command(None)


def test_tx_meter_claude_code_with_transcripts_backfills(tmp_path: Path, clock: Clock, cli: Any) -> None:
    exchange(tmp_path / "ex", clock)
    s = Session(tmp_path)
    write(s.main, assistant("msg_1", out=10, model=OPUS, stop="end_turn"), assistant("msg_2", out=1, model=OPUS))
    r = cli("--home", str(tmp_path / "ex"), "meter", "claude-code", str(s.main), "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert isinstance(doc, list) and doc[0]["charge"]["charged_responses"] == 2  # as if the session ended
    assert cli("--home", str(tmp_path / "ex"), "meter", "claude-code", str(s.main)).err.endswith("nothing new\n")



def test_expired_reservations_are_released_before_metered_usage_is_charged(tmp_path: Path, clock: Clock) -> None:
    from token_exchange.services import reservations

    ex = exchange(tmp_path / "ex", clock)
    for i in range(2):  # 2 x 495 held (33,000 tokens at 15/1K)
        reservations.reserve(ex, "claude", "coding", 33_000, id=f"r{i}", ttl=60)
    assert balance(ex) == Decimal("9010")
    clock.advance(minutes=2)  # both holds have expired, neither is released yet
    s = Session(tmp_path)
    write(s.main, assistant("msg_1", out=601_000, inp=0, model=OPUS, stop="end_turn"))  # 9,015
    r = hook(ex, s)
    assert r.charged is not None and r.charged.unbilled == 0  # paid in full: the holds came back first
    assert spent(ex) == {"meter:cc:msg_1": Decimal("9015")} and balance(ex) == Decimal("985")
    assert reservations.show(ex, "r0").state == "expired" and reservations.show(ex, "r1").state == "expired"


def test_one_unreadable_file_does_not_stop_the_others(tmp_path: Path, clock: Clock, cli: Any) -> None:
    from tests.test_meter_aider import send
    from tests.test_meter_aider import write as write_log

    exchange(tmp_path / "ex", clock, default_agent="observer")
    good = write_log(tmp_path / "analytics.jsonl", send(1000, 0))
    os.mkfifo(tmp_path / "fifo.jsonl")  # not a regular file: never opened for a blocking read
    for argv in (["tx-meter"], ["tx"]):
        home = ["--home", str(tmp_path / "ex")]
        paths = [str(tmp_path / "missing.jsonl"), str(tmp_path / "fifo.jsonl"), str(good)]
        if argv == ["tx"]:
            r = cli(*home, "meter", "aider", *paths)
            code, err = r.code, r.err
        else:
            p = program("tx-meter", "aider", *home, *paths)
            code, err = p.returncode, p.stderr.decode()
        assert code == 1 and "missing.jsonl: no such file" in err and "Traceback" not in err
        assert "fifo.jsonl: not a regular file" in err
    ex = Exchange(tmp_path / "ex", clock=clock)
    assert list(spent(ex, "observer").values()) == [Decimal("2")]  # charged once, by the first of the two runs


def test_tx_guard_claude_code_json_for_scripts(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch,
                                              cli: Any) -> None:
    import io

    exchange(tmp_path / "ex", clock)
    s = Session(tmp_path)
    write(s.main, *(assistant(f"msg_{i}", out=40_000, inp=0, model=OPUS, stop="end_turn") for i in range(2)))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(s.hook("UserPromptSubmit"))))
    r = cli("--home", str(tmp_path / "ex"), "guard", "claude-code", "--json")
    doc = r.json()
    assert r.code == 2 and isinstance(doc, dict) and doc["blocked"] is True and doc["agent"] == "claude"
    assert doc["message"].startswith("token-exchange: claude: Hourly limit reached (1200.0/1000 used")


def test_tx_meter_failures_end_with_one_error_line(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch,
                                                   cli: Any) -> None:
    import io

    exchange(tmp_path / "ex", clock, default_agent="")
    home = ["--home", str(tmp_path / "ex")]
    for extra in ([], ["--json"]):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"{not json")))
        r = cli(*home, "meter", "claude-code", *extra)
        assert r.code == 1 and [ln for ln in r.err.splitlines() if ": error: " in ln] == [
            "tx: error: hook input is not valid JSON"]
        if extra:
            assert isinstance(r.json(), dict)  # stdout: still one document
    s = Session(tmp_path)
    write(s.main, assistant("msg_1", out=10, model=OPUS, stop="end_turn"))
    r = cli(*home, "meter", "claude-code", str(s.main), "--json")
    assert r.code == 1 and r.err.splitlines()[-1] == "tx: error: 1 of 1 transcripts not charged"
    doc = r.json()
    assert isinstance(doc, list) and doc[0]["ok"] is False and "no agent" in doc[0]["message"]
