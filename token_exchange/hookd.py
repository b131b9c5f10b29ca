"""The warm hook server behind ``hookclient``: one per user and per installed copy of the code.

Why: a hook's own work (a ``git log``, one fsynced append) takes ~15 ms, while
starting Python and importing the exchange core takes several times that on
every commit.  The server imports the core once, then forks a child per hook.
Forking keeps every hook isolated: the child takes the client's argv,
environment, umask, working directory and stdin/stdout/stderr, runs
``hooks.main`` exactly as ``tx-hook`` would, and reports its exit status.  The
ledger's own file lock still orders concurrent hooks.

Safety: the socket lives in a directory only its owner can enter (checked by
the client), the server refuses peers of another uid, it answers only clients
whose code stamp (interpreter, package path, file mtimes) equals its own, a
second server for the same socket exits at once (``flock``), and it exits by
itself after ``idle`` seconds without work (``TOKEN_EXCHANGE_HOOK_SERVER_IDLE``,
default 600).  ``tx hooks server status|stop`` shows and stops servers.
"""

from __future__ import annotations

import os
import sys

IDLE_ENV = "TOKEN_EXCHANGE_HOOK_SERVER_IDLE"
DEFAULT_IDLE = 600.0
MAX_REQUEST = 4 << 20
# Everything a hook may import, so a child never reads code from disk (it could have changed since).
PRELOAD = ("token_exchange.hooks", "token_exchange.exchange", "token_exchange.rewardid", "token_exchange.identities",
           "token_exchange.rewards", "token_exchange.ledger", "token_exchange.journal_toml",
           "token_exchange.journal_notes", "token_exchange.amounts", "token_exchange.errors", "token_exchange.storage",
           "token_exchange.config", "tomllib", "json", "sqlite3", "subprocess", "decimal", "datetime", "hashlib")


def idle_seconds() -> float:
    try:
        value = float(os.environ.get(IDLE_ENV, DEFAULT_IDLE))
    except ValueError:
        return DEFAULT_IDLE
    return min(max(value, 1.0), 86400.0) if value == value else DEFAULT_IDLE


def spawn(path: str, stamp: str) -> None:
    """Start a server for ``path`` in the background (never fails, never waits: the commit goes on)."""
    import subprocess

    from token_exchange.hookclient import private_dir

    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        if not private_dir(os.path.dirname(path)):
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "PRE_COMMIT"))}
        # -B: a server writes nothing next to the code it runs (pre-commit's try-repo deletes that environment
        # right after the hook; a .pyc written meanwhile would break its cleanup)
        subprocess.Popen([sys.executable, "-B", "-P", "-c", "from token_exchange.hookd import serve_main; serve_main()",
                          path, stamp, str(idle_seconds())], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, cwd=os.path.dirname(path), env=env, start_new_session=True,
                         close_fds=True)
    except (OSError, ValueError, subprocess.SubprocessError):
        pass  # an optimisation only


def serve_main() -> None:
    path, stamp, idle = sys.argv[1], sys.argv[2], float(sys.argv[3])
    serve(path, stamp, idle)


def serve(path: str, stamp: str, idle: float) -> None:
    """Accept hooks on ``path`` until idle; one forked child per hook."""
    import fcntl
    import importlib
    import select
    import socket
    import time

    lock = os.open(path + ".lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another server owns this socket
    for name in PRELOAD:
        importlib.import_module(name)
    _warm_up()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    ino = os.stat(path).st_ino
    os.ftruncate(lock, 0)
    os.write(lock, f"{os.getpid()}\n".encode())
    children: set[int] = set()
    code_dir = os.path.dirname(os.path.abspath(__file__))
    last = time.monotonic()
    try:
        while True:
            ready, _, _ = select.select([server], [], [], 1.0)
            _reap(children)
            if ready:
                conn, _ = server.accept()
                last = time.monotonic()
                if not _same_user(conn):
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    server.close()
                    _child(conn, stamp)
                children.add(pid)
                conn.close()
            elif time.monotonic() - last > idle and not children:
                break
            if _inode(path) != ino:
                break  # our socket was removed or replaced (`tx hooks server stop`, a newer server)
            if not os.path.isdir(code_dir):
                break  # our code was uninstalled or its environment deleted (pre-commit try-repo, gc)
    finally:
        server.close()
        if _inode(path) == ino:
            os.unlink(path)
        try:
            os.unlink(path + ".lock")  # ours while we hold it: no other server could have started
        except OSError:
            pass


def _warm_up() -> None:
    """Fill the caches children inherit (``re``'s compiled patterns for the default rules and validation)."""
    from token_exchange import config, identities, rewardid, rewards

    message = "fix: warm up the caches\n\nCo-authored-by: x <x@y>\nReward-Id: R0000"
    try:
        cfg = config.load(None)
        rewards.commit_reward(cfg, next(iter(cfg.agents)), "warm-up", message, 1, 0)
        identities.co_author_emails(message)
        rewardid.trailer_ids(message)
    except Exception:  # noqa: BLE001 - an optimisation only
        pass


def _inode(path: str) -> int:
    try:
        return os.stat(path).st_ino
    except OSError:
        return -1


def _reap(children: set[int]) -> None:
    for pid in list(children):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            children.discard(pid)


def _same_user(conn: object) -> bool:
    import socket
    import struct

    if not hasattr(socket, "SO_PEERCRED"):
        return True  # no peer credentials here: the private directory is the guard
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,  # type: ignore[attr-defined]
                                struct.calcsize("3i"))
    except OSError:
        return False
    return struct.unpack("3i", creds)[1] == os.getuid()


def _child(conn, stamp: str) -> None:  # type: ignore[no-untyped-def]
    """Runs in the forked child: become the client's hook process, run it, report the status. Never returns."""
    import socket

    reply = b"STALE\n"
    try:
        reply = _run_request(conn, stamp, socket)
    except BaseException as e:  # noqa: BLE001 - report and let the client run the hook itself
        if reply == b"STALE\n":
            os.write(2, f"token-exchange: hook server: {type(e).__name__}: {e}\n".encode(errors="replace")[:300])
    finally:
        try:
            conn.sendall(reply)
        except OSError:
            pass
        os._exit(0)


def _run_request(conn, stamp: str, socket) -> bytes:  # type: ignore[no-untyped-def]
    conn.settimeout(10.0)
    msg, ancdata, _flags, _addr = conn.recvmsg(1 << 16, socket.CMSG_SPACE(4 * 4))
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(int.from_bytes(data[i:i + 4], sys.byteorder, signed=True) for i in range(0, len(data) - 3, 4))
    if len(msg) < 8 or len(fds) != 4:
        return b"STALE\n"
    need = int.from_bytes(msg[:8], "big")
    if need > MAX_REQUEST:
        return b"STALE\n"
    data = msg[8:]
    while len(data) < need:
        chunk = conn.recv(min(1 << 16, need - len(data)))
        if not chunk:
            return b"STALE\n"
        data += chunk
    fields = data.split(b"\0")
    if len(fields) < 4 or fields[0] != b"TXH1" or os.fsdecode(fields[1]) != stamp:
        return b"STALE\n"
    umask, argc = int(fields[2]), int(fields[3])
    argv = [os.fsdecode(a) for a in fields[4:4 + argc]]
    env = fields[4 + argc:]
    # From here on this process is the client's hook.
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    os.fchdir(fds[3])
    for fd in fds:
        if fd > 2:
            os.close(fd)
    os.umask(umask)
    os.environb.clear()
    for item in env:
        key, sep, value = item.partition(b"=")
        if sep and key:
            os.environb[key] = value
    import time

    time.tzset()
    sys.argv = ["tx-hook", *argv]
    from token_exchange import hooks

    try:
        hooks.main(argv)
        code: object = 0
    except SystemExit as e:
        code = e.code
    status = code if isinstance(code, int) else (0 if code is None else 1)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return f"OK {status}\n".encode()


def servers() -> list[dict[str, object]]:
    """The hook servers in this user's runtime directory: socket, pid, and whether the process is alive."""
    from token_exchange.hookclient import runtime_dir

    found: list[dict[str, object]] = []
    base = runtime_dir()
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return found
    for name in names:
        if not (name.startswith("hookd-") and name.endswith(".sock.lock")):
            continue
        lock = os.path.join(base, name)
        sock = lock[:-5]
        try:
            with open(lock, encoding="ascii", errors="replace") as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        alive = pid > 0 and _alive(pid)
        found.append({"socket": sock, "pid": pid, "running": alive and os.path.exists(sock)})
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_all() -> int:
    """Stop every running hook server (removing its socket is enough: it exits within a second)."""
    stopped = 0
    for srv in servers():
        try:
            os.unlink(str(srv["socket"]))
        except OSError:
            pass
        if srv["running"]:
            stopped += 1
    return stopped
