"""Bounded fuzzing of every input surface (issue 13.10): every command's arguments, the config, the
environment.  Whatever comes in: exit 0, 1 or 2, never a traceback, at most one line of error, and a
refusal changes nothing (ledger and config byte for byte).  The generators live in tests/fuzzgen.py."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import fuzzgen
from tests.conftest import git, tx
from token_exchange.cli import app
from token_exchange.cli import run as run_tx
from token_exchange.rules import config as config_mod

FUZZ = settings(settings.get_profile("fuzz"), suppress_health_check=list(HealthCheck))


@pytest.fixture
def place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository with an exchange that has some history; the current directory (never this checkout)."""
    repo = tmp_path / "nexushive-setup"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README").write_text("x\n")
    git(repo, "add", "README")
    git(repo, "commit", "-q", "--no-verify", "-m", "initial")
    monkeypatch.chdir(repo)
    for args in (["init"], ["award", "claude", "450", "bd", "closed tx-1", "--id", "a-1"],
                 ["llm", "zero", "coding", "1000"], ["pool", "create", "team", "claude", "10"]):
        assert run_quiet(args)[0] == 0
    return repo


def run_quiet(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_tx(args)
    return code, out.getvalue(), err.getvalue()


def state(home: Path) -> dict[str, str]:
    found = {}
    for name in ("ledger.toml", "config.toml"):
        path = home / name
        found[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""
    return found


def check(code: int, out: str, err: str, before: dict[str, str], after: dict[str, str]) -> None:
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err and "Traceback" not in out, err
    if code == 1:
        errors = [ln for ln in err.splitlines() if ": error: " in ln]
        assert len(errors) == 1, err
        assert before == after, f"a refused command changed the ledger or config: {err}"


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_every_command_line(place: Path, data: st.DataObject) -> None:
    args = data.draw(fuzzgen.command_line(app))
    home = place / ".exchange"
    before = state(home)
    try:
        code, out, err = run_quiet(args)
    except BaseException as e:  # noqa: BLE001 - anything escaping the CLI is the failure we look for
        raise AssertionError(f"tx {args!r} raised {type(e).__name__}: {e}") from e
    check(code, out, err, before, state(home))


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_every_command_under_a_hostile_config(place: Path, data: st.DataObject) -> None:
    home = place / ".exchange"
    text = data.draw(fuzzgen.hostile_config(config_mod.default_text()))
    (home / "config.toml").write_text(text, "utf-8", "surrogateescape")
    args = data.draw(fuzzgen.command_line(app))
    before = state(home)
    code, out, err = run_quiet(args)
    check(code, out, err, before, state(home))


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_real_processes_with_hostile_bytes_and_environment(place: Path, data: st.DataObject) -> None:
    """Where only a real process shows it: undecodable argv bytes, stdout encoding, hostile variables."""
    args = data.draw(fuzzgen.command_line(app))
    env = {**os.environ, **data.draw(st.dictionaries(
        st.sampled_from(["TOKEN_EXCHANGE_HOME", "TOKEN_EXCHANGE_AGENT", "TOKEN_EXCHANGE_DEBUG", "BEADS_DIR",
                         "GIT_DIR", "LANG", "LC_ALL", "TOKEN_EXCHANGE_NOW", "HOME"]),
        st.sampled_from(fuzzgen.HOSTILE[:40]).filter(lambda v: "\x00" not in v), max_size=3))}
    env.pop("TOKEN_EXCHANGE_DEBUG", None)  # --debug shows tracebacks on purpose
    raw = [os.fsencode(a.replace("\x00", "")) for a in args]
    home = place / ".exchange"
    before = state(home)
    proc = subprocess.run([sys.executable, "-m", "token_exchange", *raw], cwd=place, env=env, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    check(proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"), before,
          state(home))


def test_a_fuzz_failure_would_be_seen() -> None:
    """The checker itself: a traceback, two error lines or a changed ledger on a refusal all fail."""
    same = {"ledger.toml": "a", "config.toml": "b"}
    for code, err, after in ((1, "Traceback (most recent call last):\n", same),
                             (1, "tx: error: one\ntx: error: two\n", same),
                             (1, "tx: error: refused\n", {**same, "ledger.toml": "changed"}), (3, "", same)):
        with pytest.raises(AssertionError):
            check(code, "", err, same, after)
    check(1, "", "tx: error: refused\n", same, same)
    assert tx("--version").code == 0
