"""The warm hook server (hookd) against real git: same behaviour as in-process, faster, and safe to ignore."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import git, tx
from tests.test_hooks import change, commit, earned, earns
from token_exchange import hookclient, hookd

CLIENT = [sys.executable, "-P", "-c", "from token_exchange.hookclient import main; main()"]


@pytest.fixture
def rt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private runtime directory of this test's own, so each test starts without a server."""
    path = tmp_path / "rt"
    path.mkdir(mode=0o700)
    monkeypatch.setenv("TOKEN_EXCHANGE_RUNTIME_DIR", str(path))
    yield path
    hookd.stop_all()


@pytest.fixture
def hooked(repo: Path, rt: Path) -> Path:
    assert tx("init", cwd=repo).code == 0
    assert tx("hooks", "install", cwd=repo).code == 0
    return repo


def sockets(rt: Path) -> list[Path]:
    return sorted(rt.glob("hookd-*.sock"))


def wait_for(cond, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def served(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the hook client with -X importtime: the hook ran in a server iff the client never imported it."""
    return subprocess.run([sys.executable, "-X", "importtime", *CLIENT[1:], *args], cwd=repo, capture_output=True,
                          text=True, env={**os.environ, **(env or {})})


def imported(proc: subprocess.CompletedProcess[str]) -> set[str]:
    return {ln.split("|")[-1].strip() for ln in proc.stderr.splitlines() if ln.startswith("import time:")}


def start_server(repo: Path, rt: Path) -> None:
    change(repo)
    out = commit(repo, "-m", "fix: first commit starts the server")
    assert "claude 450 tokens" in out
    assert wait_for(lambda: bool(sockets(rt))), "no server started"
    assert wait_for(lambda: hookd.servers() and all(s["running"] for s in hookd.servers()))


def test_first_hook_runs_here_and_starts_a_server_that_serves_the_next(hooked: Path, rt: Path) -> None:
    start_server(hooked, rt)
    change(hooked)
    git(hooked, "commit", "-q", "-m", "feature: second\n\nReward-Id: R" + "1" * 40, env={"TOKEN_EXCHANGE_SKIP": "1"})
    proc = served(hooked, "post-commit")
    assert proc.returncode == 0
    assert "token-exchange: claude 300 tokens" in proc.stdout  # x 2.0 contract, feature x 1.0
    mods = imported(proc)
    assert "token_exchange.hookclient" in mods
    assert not {"token_exchange.hooks", "token_exchange.exchange", "subprocess", "sqlite3"} & mods
    assert earned(hooked) == 450 + 300
    again = served(hooked, "post-commit")
    assert "already paid" in again.stdout and earned(hooked) == 750


def test_server_runs_each_hook_with_the_clients_env_cwd_and_stdio(hooked: Path, rt: Path) -> None:
    start_server(hooked, rt)
    msg = hooked / "msg.txt"
    msg.write_text("docs: explain\n")
    builder = served(hooked, "commit-msg", "--msg-file", str(msg), env={"GIT_AUTHOR_EMAIL": "builder@aygp-dr.ai"})
    stranger = served(hooked, "commit-msg", "--msg-file", str(msg), env={"GIT_AUTHOR_EMAIL": "who@else.org"})
    assert "token_exchange.hooks" not in imported(builder) | imported(stranger)
    assert "will earn builder" in builder.stdout
    assert "who@else.org is not an agent" in stranger.stdout
    assert "Reward-Id: R" in msg.read_text()  # the file the client named, relative to its own cwd
    # a home given by the environment is the one used
    other = hooked / "other-home"
    assert tx("--home", str(other), "init").code == 0
    proc = served(hooked, "commit-msg", "--msg-file", str(msg), env={"TOKEN_EXCHANGE_HOME": str(other)})
    assert "will earn claude" in proc.stdout
    # skipping still works through the client
    skipped = served(hooked, "post-commit", env={"TOKEN_EXCHANGE_SKIP": "1"})
    assert skipped.returncode == 0 and skipped.stdout == ""


def test_results_match_in_process_runs(repo: Path, tmp_path: Path, rt: Path) -> None:
    """The same history (amend, rebase, cherry-pick) pays the same with and without the server."""
    def history(server: str) -> list[tuple[str, str, object]]:
        path = tmp_path / f"clone-{server}"
        git(tmp_path, "clone", "-q", str(repo), str(path))
        assert tx("init", cwd=path).code == 0
        assert tx("hooks", "install", cwd=path).code == 0
        env = {"TOKEN_EXCHANGE_HOOK_SERVER": server}
        for i in range(4):
            change(path, f"f{i}.txt")
            commit(path, "-m", f"fix: change {i}", env=env)
        commit(path, "--amend", "-m", "fix: change 3, amended", env=env)
        git(path, "checkout", "-q", "-b", "side", "HEAD~2")
        git(path, "cherry-pick", "main", env=env)
        return [(agent, str(amount), ref.split(":")[0]) for ref, agent, amount in earns(path)]

    without = history("0")
    assert not sockets(rt)
    with_server = history("1")
    assert with_server == without
    assert sockets(rt)


def test_config_or_env_can_turn_the_server_off(hooked: Path, rt: Path) -> None:
    change(hooked)
    commit(hooked, "-m", "fix: a", env={"TOKEN_EXCHANGE_HOOK_SERVER": "off"})
    time.sleep(0.5)
    assert not sockets(rt)
    cfg = hooked / ".exchange" / "config.toml"
    assert "\nserver = true\n" in cfg.read_text()  # tx init writes the default
    cfg.write_text(cfg.read_text().replace("\nserver = true\n", "\nserver = false\n"))
    change(hooked)
    assert "claude" in commit(hooked, "-m", "fix: b")
    time.sleep(0.5)
    assert not sockets(rt)
    cfg.write_text(cfg.read_text().replace("server = false", "server = 'yes'"))
    r = tx("balance", "claude", cwd=hooked)
    assert r.code == 1 and "hooks.server: expected true or false" in r.err


def test_no_server_in_a_directory_others_can_enter(hooked: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    env = {"TOKEN_EXCHANGE_RUNTIME_DIR": str(shared)}
    for i in range(2):
        change(hooked)
        assert "claude" in commit(hooked, "-m", f"fix: {i}", env=env)
    time.sleep(0.5)
    assert not list(shared.glob("hookd-*"))
    assert not hookclient.private_dir(str(shared))


def test_a_server_of_other_code_is_not_used(hooked: Path, rt: Path) -> None:
    start_server(hooked, rt)
    stamp = hookclient.code_stamp()
    path = hookclient.socket_path(stamp)
    assert Path(path).exists()
    (hooked / "msg.txt").write_text("fix: x\n")
    # same socket, different code stamp: the server says STALE and the hook runs here, silently
    assert hookclient.via_server(["commit-msg", "--msg-file", "msg.txt"], stamp + "-other", path) is None
    assert hookclient.via_server(["commit-msg", "--msg-file", str(hooked / "msg.txt")], stamp, path) == 0


def test_stop_and_idle_exit(hooked: Path, rt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    start_server(hooked, rt)
    r = tx("hooks", "server", "status", "--json", cwd=hooked)
    assert r.code == 0 and r.json()["servers"][0]["running"] is True
    pid = r.json()["servers"][0]["pid"]
    r = tx("hooks", "server", "stop", "--json", cwd=hooked)
    assert r.code == 0 and r.json() == {"stopped": 1}
    assert wait_for(lambda: not hookd._alive(pid) or _zombie(pid), 5)
    assert not sockets(rt)
    # a stale socket file (a killed server) is replaced by the next server
    monkeypatch.setenv(hookd.IDLE_ENV, "1")
    change(hooked)
    commit(hooked, "-m", "fix: restart")
    assert wait_for(lambda: bool(sockets(rt)))
    assert wait_for(lambda: not sockets(rt), 10), "an idle server should exit and remove its socket"
    assert not list(rt.glob("*.lock"))


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_concurrent_hooks_through_one_server(hooked: Path, rt: Path) -> None:
    start_server(hooked, rt)
    msgs = []
    for i in range(8):
        m = hooked / f"m{i}.txt"
        m.write_text(f"fix: parallel {i}\n")
        msgs.append(m)
    procs = [subprocess.Popen([*CLIENT, "commit-msg", "--msg-file", str(m)], cwd=hooked, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for m in msgs]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert all("will earn claude 450 tokens" in o for o, _ in outs)
    assert len({m.read_text() for m in msgs}) == 8  # each message got its own trailer


def test_bootstrap_skips_site_in_a_venv_layout_and_falls_back_elsewhere(tmp_path: Path) -> None:
    """The hooks' `python -S -P -c BOOTSTRAP`: in <venv>/bin/python with the package in
    <venv>/lib/pythonX.Y/site-packages it never imports `site`; anywhere else it runs `site` and still works."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    site_dir = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    site_dir.mkdir(parents=True)
    (site_dir / "token_exchange").symlink_to(Path(hookclient.__file__).parent)
    for exe, site_expected in ((str(venv / "bin" / "python"), False), (sys.executable, True)):
        proc = subprocess.run([exe, "-S", "-P", "-X", "importtime", "-c", hookclient.BOOTSTRAP], cwd=tmp_path,
                              capture_output=True, text=True)
        assert proc.returncode == 2 and "usage: tx-hook" in proc.stderr  # main() ran, without arguments
        assert ("| site" in proc.stderr) is site_expected, exe


def test_a_server_whose_code_is_deleted_exits(tmp_path: Path, rt: Path) -> None:
    """pre-commit try-repo deletes the hook's environment right after the hook: its server must go too
    (and write nothing there meanwhile: -B)."""
    import shutil

    copy = tmp_path / "env" / "token_exchange"
    shutil.copytree(Path(hookclient.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    sock = rt / "hookd-deadbeef.sock"
    proc = subprocess.Popen([sys.executable, "-B", "-P", "-c",
                             f"import sys; sys.path.insert(0, {str(copy.parent)!r}); "
                             "from token_exchange.hookd import serve_main; serve_main()", str(sock), "stamp", "600"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(sock.exists), "server did not start"
        shutil.rmtree(copy.parent)  # nothing was written there: this does not race with the server
        proc.wait(timeout=10)
        assert not sock.exists()
    finally:
        proc.kill()
