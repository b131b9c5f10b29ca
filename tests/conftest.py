"""Shared fixtures: isolated git identity and config, temp repos, an exchange home, CLI runners."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import settings

if TYPE_CHECKING:
    from token_exchange.services.exchange import Exchange

ROOT = Path(__file__).resolve().parent.parent

# The budget of the bounded fuzz tests of the input surfaces (the CLI's arguments and config, the meters'
# transcripts, rollouts and logs, hook input), in one place: they use ``settings(settings.get_profile("fuzz"))``.
# 100 examples of each: every CLI command is drawn about 2-3 times a run (42 commands), and each meter
# generator mixes raw bytes with near-valid records, so a run still reaches every parser branch those tests
# were written for; a run draws new inputs (and replays any failure from the example database), so coverage
# grows across runs.  TX_TESTS_FUZZ_EXAMPLES=1000 fuzzes deeper.  (They drew 150 or 300 each before.)
settings.register_profile("fuzz", max_examples=int(os.environ.get("TX_TESTS_FUZZ_EXAMPLES", "100")), deadline=None)
FIXTURES = ROOT / "fixtures"

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def pytest_configure(config: pytest.Config) -> None:
    """Put the tests' scratch (tmp_path and friends) on a tmpfs where the machine has one (/dev/shm), unless a
    --basetemp or PYTEST_DEBUG_TEMPROOT says otherwise.  Every ledger write fsyncs; while other work keeps the
    disk busy, those fsyncs become most of the suite's wall time, on a tmpfs they return at once.  The code
    runs unchanged (in-process code and the real hooks make the same fsyncs); no test can observe durability
    across a power cut, which is all an fsync adds.  Measured (two ledger tests, -n0): with the disk busy
    (load average 7) 201 s with real fsyncs against 67 s with fsync a no-op; on a quiet disk 28-31 s on /tmp
    against 27 s on /dev/shm."""
    shm = Path("/dev/shm")
    if config.option.basetemp is None and not os.environ.get("PYTEST_DEBUG_TEMPROOT") and shm.is_dir() \
            and os.access(shm, os.W_OK | os.X_OK):
        os.environ["PYTEST_DEBUG_TEMPROOT"] = str(shm)
    if not hasattr(config, "workerinput"):  # once a run (the xdist controller, or the only process)
        compile_bytecode()


def compile_bytecode() -> None:
    """Give the package and the bd stand-in the bytecode an installed package has (pip compiles on install).

    The suite starts thousands of Python processes (the real git hooks, `tx` where the process is the point,
    the bd stand-in and the hooks bd runs); from a checkout, with PYTHONDONTWRITEBYTECODE set (as on the CI
    machines) none of them writes a .pyc, so each compiled every module it imports again: 70-130 ms CPU a `tx`
    process, ~40 ms a bd call, measured here.  A stale .pyc is never used (Python checks the source's mtime)."""
    import compileall

    for folder in (ROOT / "token_exchange", FIXTURES):
        compileall.compile_dir(folder, quiet=2, workers=1, rx=None)


class Clock:
    """An injectable clock that tests move by hand (no sleeping in tests)."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


def make_ex(path: Path, clock: Clock, extra: str = "") -> Exchange:
    """An opened exchange at ``path`` with the seed config plus ``extra`` TOML, on ``clock``."""
    from token_exchange.rules import config as config_mod
    from token_exchange.services.exchange import Exchange

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.toml").write_text(config_mod.default_text() + "\n" + extra)
    ex = Exchange(path, clock=clock)
    ex.open_all()
    return ex


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ex(tmp_path: Path, clock: Clock) -> Exchange:
    return make_ex(tmp_path / "ex", clock)


GIT_ENV = {
    "GIT_AUTHOR_NAME": "Claude",
    "GIT_AUTHOR_EMAIL": "claude@aygp-dr.ai",
    "GIT_COMMITTER_NAME": "Claude",
    "GIT_COMMITTER_EMAIL": "claude@aygp-dr.ai",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
}


def run_shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory this run's xdist workers share (the run's base temp; without xdist, this process's own)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def pre_commit_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One pre-commit cache for the whole run, shared by the xdist workers (environments are slow to build;
    pre-commit's own store lock serialises two workers installing at once)."""
    path = run_shared(tmp_path_factory) / "pre-commit-home"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """This checkout's working tree (tracked + untracked, not ignored) as a local hook repository at a commit,
    made once per run for every worker: the same repository and revision let pre-commit build its hook
    environment once (in ``pre_commit_home``) for every test that installs the hooks."""
    import fcntl

    shared = run_shared(tmp_path_factory)
    dest, done = shared / "hook-repo", shared / "hook-repo.sha"
    with open(shared / "hook-repo.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return dest, done.read_text()
        shutil.rmtree(dest, ignore_errors=True)  # a half-made one (a worker that died making it)
        dest.mkdir()
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                               capture_output=True, check=True).stdout.decode().split("\0")
        for name in filter(None, files):
            src = ROOT / name
            if src.is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / name)
        env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
               "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
        for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "--no-verify", "-m", "snapshot"]):
            subprocess.run(["git", *args], cwd=dest, check=True, capture_output=True,
                           env={**env, "PATH": "/usr/bin:/bin"})
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=dest, check=True, capture_output=True,
                             text=True).stdout.strip()
        done.write_text(sha)
        return dest, sha


@pytest.fixture(scope="session")
def template_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this worker keeps the templates ``from_template`` copies (under the run's base temp)."""
    path = tmp_path_factory.mktemp("templates")
    _TEMPLATE_ROOT[:] = [path]
    return path


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pre_commit_home: Path,
                 template_root: Path) -> Iterator[None]:
    """Never touch the developer's HOME, git config or exchange."""
    home = tmp_path / "userhome"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    monkeypatch.setenv("PRE_COMMIT_HOME", str(pre_commit_home))
    for k, v in GIT_ENV.items():
        monkeypatch.setenv(k, v)
    for k in ("TOKEN_EXCHANGE_HOME", "GIT_DIR", "GIT_WORK_TREE", "BEADS_DIR", "BD_ACTOR",
              "BEADS_ACTOR", "BD_JSON_ENVELOPE", "GIT_NOTES_REF", "PRE_COMMIT", "BEADS_DB", "BD_NO_HOOKS",
              "BD_STANDIN_CUT_HOOKS", "BD_STANDIN_HOOK_TIMEOUT", "BD_STANDIN_HOOK_LOG", "CLAUDE_SESSION_ID"):
        monkeypatch.delenv(k, raising=False)
    (home / ".gitconfig").write_text("[init]\n\tdefaultBranch = main\n[commit]\n\tgpgsign = false\n")
    yield


BD_STANDIN = FIXTURES / "bd"
# Custom issue types the generated exports (fixtures/gen_beads_export.py) use: bd refuses to
# import them unless they are declared (types.custom), as real bd does.
GENERATED_CUSTOM_TYPES = "agent,convoy,docs,security"


def seed_bd_store(beads_dir: Path, jsonl: Path, *, custom_types: str = "",
                  env: dict[str, str] | None = None) -> None:
    """Give the bd stand-in a database at ``beads_dir`` holding ``jsonl``, the way a user would:
    a ``config.yaml`` (which makes the directory a beads project) and ``bd import FILE``.

    The stand-in's database is ``<beads_dir>/embeddeddolt/`` (bd's Dolt data), never
    ``issues.jsonl``; ``jsonl`` is only read.  Any earlier database there is replaced.
    """
    beads_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(beads_dir / "embeddeddolt", ignore_errors=True)
    cfg = "issue-prefix: tx\n" + (f"types.custom: {custom_types}\n" if custom_types else "")
    (beads_dir / "config.yaml").write_text(cfg)
    proc = subprocess.run([sys.executable, str(BD_STANDIN), "import", str(jsonl)], capture_output=True,
                          text=True, env={**os.environ, **(env or {}), "BEADS_DIR": str(beads_dir)},
                          cwd=beads_dir.parent)
    assert proc.returncode == 0, proc.stderr


def git(repo: Path, *args: str, check: bool = True, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


_TEMPLATES: dict[tuple[str, ...], Path] = {}
_TEMPLATE_ROOT: list[Path] = []  # set once a run by the template_root fixture
_TEMPLATE_ENV = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_AUTHOR_DATE", "GIT_COMMITTER_NAME",
                 "GIT_COMMITTER_EMAIL", "GIT_COMMITTER_DATE", "PATH", "TOKEN_EXCHANGE_HOME")


def from_template(name: str, dest: Path, build: Callable[[Path], None]) -> Path:
    """``dest`` as ``build`` makes it, built once per worker process and copied (shutil.copytree, symlinks
    kept) for every later test: a repository with its commits, an initialised exchange, a seeded bd store
    cost git and Python processes each time, a copy costs a few file writes.  Nothing the tests build this
    way records its own absolute path (the git repository, the exchange home and the bd store are all
    relative to where they are); the copy is made under ``dest``'s name, which the contract rules read.

    The template is keyed by ``name``, ``dest``'s name and what the building processes read from the
    environment (identity, dates, PATH, the git config's text), so a test that changed any of those gets a
    fresh build, never another test's copy."""
    gitconfig = Path(os.environ.get("GIT_CONFIG_GLOBAL", "/dev/null"))
    key = (name, dest.name, *(os.environ.get(k, "") for k in _TEMPLATE_ENV),
           gitconfig.read_text() if gitconfig.is_file() else "")
    src = _TEMPLATES.get(key)
    if src is None:
        src = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_TEMPLATE_ROOT[0])) / dest.name
        src.mkdir()
        build(src)
        _TEMPLATES[key] = src
    shutil.copytree(src, dest, symlinks=True)
    return dest


def initial_repo(path: Path) -> None:
    git(path, "init", "-q", "-b", "main")
    (path / "README").write_text("hello\n")
    git(path, "add", "README")
    git(path, "commit", "-q", "--no-verify", "-m", "initial")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fresh git repository on branch main with one commit (a copy of one made once per worker)."""
    return from_template("repo", tmp_path / "nexushive-setup", initial_repo)


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out, parse_float=Decimal)


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
        input: str | None = None) -> Result:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, input=input,
                          env={**os.environ, **(env or {})})
    return Result(proc.returncode, proc.stdout, proc.stderr)


def tx(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, real: bool = False) -> Result:
    """Run `tx` as a user would: in this process, in ``cwd`` with ``env`` over the environment (the same
    entry point, exit codes and streams as the console script, without a Python start-up per call);
    ``real=True`` (or TX_TESTS_REAL_PROCESS=1 for the whole suite) runs a real process instead, where the
    process is the point."""
    if real or os.environ.get("TX_TESTS_REAL_PROCESS") == "1":
        return run([sys.executable, "-m", "token_exchange", *args], cwd=cwd, env=env)
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    try:
        os.environ.update(env or {})
        if cwd is not None:
            os.chdir(cwd)
        return tx_inproc(*args)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def tx_inproc(*args: str) -> Result:
    """Run `tx` in this process (much faster than a subprocess; same exit-code conventions)."""
    import contextlib
    import io

    from token_exchange.cli import run as run_tx

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_tx(list(args))
    return Result(code, out.getvalue(), err.getvalue())


def tx_at(when: str, *args: str) -> Result:
    """`tx` in this process with "now" fixed at ``when`` (ISO 8601).  No production path reads a time from
    the environment (an agent could move it), so tests inject the clock in-process instead."""
    from token_exchange import clock

    moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
    with clock.injected(lambda: moment):
        return tx_inproc(*args)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An initialised exchange home (TOML backend, seed defaults)."""
    path = tmp_path / "exchange"
    r = tx("--home", str(path), "init")
    assert r.code == 0, r.err
    return path


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run `tx` in-process (fast) with our exit-code conventions; returns Result."""
    from token_exchange.cli import run as run_tx

    def invoke(*args: str) -> Result:
        capsys.readouterr()
        code = run_tx(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke
