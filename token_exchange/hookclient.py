"""The hook entry point (``tx-hook``): hand the hook to a warm hook server, else run it here.

Git and pre-commit start a fresh interpreter for every hook, and importing the
exchange core costs more than the hook's own work.  A per-user hook server
(``hookd``) keeps the core imported and forks one child per hook.  The child
gets this process's argv, environment, umask, working directory and stdio (the
descriptors travel over a Unix socket), so it prints and behaves exactly as the
in-process hook would; only the start-up is skipped.

No server (first commit, disabled, old code, any error before the hook starts):
the hook runs in-process, and afterwards a server is started in the background
when the exchange's ``[hooks] server`` allows it.  The fast path imports only
``os``, ``sys``, ``zlib`` and ``_socket`` (``python -X importtime``).
"""

from __future__ import annotations

import os
import sys

# What the hooks run with `python -S -P -c`: `site` costs ~7 ms per hook, and a hook needs nothing of it but
# this package's directory -- in a venv (pre-commit's), <venv>/lib/pythonX.Y/site-packages. Anywhere else
# (a system or editable install) the bootstrap runs `site` after all.
BOOTSTRAP = ('import os,sys;p=os.path.join(os.path.dirname(os.path.dirname(sys.executable)),"lib",'
             '"python%d.%d"%sys.version_info[:2],"site-packages");sys.path.append(p) if os.path.isdir('
             'os.path.join(p,"token_exchange")) else __import__("site").main();'
             'from token_exchange.hookclient import main;main()')
ENV_SERVER = "TOKEN_EXCHANGE_HOOK_SERVER"  # 0/off/false/no: never use or start a server
ENV_RUNTIME = "TOKEN_EXCHANGE_RUNTIME_DIR"  # where sockets live (default $XDG_RUNTIME_DIR/token-exchange)
PROTOCOL = b"TXH1"
HOOKS = ("commit-msg", "post-commit")
CONNECT_TIMEOUT = 1.0
REPLY_TIMEOUT = 120.0


def server_disabled() -> bool:
    return os.environ.get(ENV_SERVER, "").strip().lower() in ("0", "off", "false", "no")


def runtime_dir() -> str:
    env = os.environ.get(ENV_RUNTIME)
    if env:
        return os.path.abspath(env)
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "token-exchange")
    return f"/tmp/token-exchange-{os.getuid()}"


def private_dir(path: str) -> bool:
    """A real directory owned by us that nobody else can enter (else no server: anyone could impersonate it)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (st.st_mode & 0o170000) == 0o040000 and st.st_uid == os.getuid() and not st.st_mode & 0o077


def code_stamp() -> str:
    """What a server must match: this interpreter, this package's location and the mtimes of its files."""
    pkg = os.path.dirname(os.path.abspath(__file__))
    newest = count = 0
    with os.scandir(pkg) as entries:
        for entry in entries:
            if entry.name.endswith((".py", ".toml")):
                count += 1
                newest = max(newest, entry.stat().st_mtime_ns)
    version = ".".join(str(n) for n in sys.version_info[:3])
    return f"{os.path.realpath(sys.executable)}|{version}|{pkg}|{count}|{newest}"


def socket_path(stamp: str) -> str:
    import zlib

    return os.path.join(runtime_dir(), f"hookd-{zlib.crc32(stamp.encode('utf-8', 'surrogateescape')):08x}.sock")


def request(argv: list[str], stamp: str) -> bytes:
    """Length-prefixed, NUL-separated: protocol, stamp, umask, argc, argv..., then the environment as K=V."""
    umask = os.umask(0)
    os.umask(umask)
    fields = [PROTOCOL, os.fsencode(stamp), str(umask).encode(), str(len(argv)).encode(),
              *(os.fsencode(a) for a in argv), *(k + b"=" + v for k, v in os.environb.items())]
    payload = b"\0".join(fields)
    return len(payload).to_bytes(8, "big") + payload


def via_server(argv: list[str], stamp: str, path: str) -> int | None:
    """The hook's exit status from a warm server; None when the hook should run here instead."""
    if not private_dir(os.path.dirname(path)):
        return None
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    cwd_fd = -1
    started = False
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(path)
        for fd in (0, 1, 2):
            os.fstat(fd)  # a closed stdio descriptor cannot be passed: run here
        cwd_fd = os.open(".", os.O_RDONLY)
        data = request(argv, stamp)
        fds = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in (0, 1, 2, cwd_fd))
        sent = sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        if sent < len(data):
            sock.sendall(data[sent:])
        started = True
        sock.settimeout(REPLY_TIMEOUT)
        reply = b""
        while not reply.endswith(b"\n") and len(reply) < 64:
            chunk = sock.recv(64)
            if not chunk:
                break
            reply += chunk
    except OSError:
        reply = b""
    finally:
        sock.close()
        if cwd_fd >= 0:
            os.close(cwd_fd)
    word, _, code = reply.decode("ascii", "replace").strip().partition(" ")
    if word == "OK" and code.lstrip("-").isdigit():
        return int(code)
    if started and word != "STALE":
        # The child may have done part of the work; both hooks are idempotent, so running here is safe.
        sys.stderr.write("token-exchange: the hook server did not answer; running the hook here\n")
    return None


def main() -> None:
    argv = sys.argv[1:]
    use_server = bool(argv) and argv[0] in HOOKS and not server_disabled() and not os.environ.get("TOKEN_EXCHANGE_SKIP")
    stamp = path = ""
    if use_server:
        try:
            stamp = code_stamp()
            path = socket_path(stamp)
        except OSError:
            use_server = False
    if use_server:
        code = via_server(argv, stamp, path)
        if code is not None:
            raise SystemExit(code)
    from token_exchange import hooks

    try:
        hooks.main(argv)
        status: object = 0
    except SystemExit as e:
        status = e.code
    if use_server and hooks.SERVER_WANTED:
        from token_exchange import hookd

        hookd.spawn(path, stamp)
    raise SystemExit(status)


if __name__ == "__main__":
    main()
