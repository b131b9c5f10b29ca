"""Durable file primitives: atomic replace, fsynced append, a cross-process lock.

The lock is ``fcntl.flock`` on a lock file: the kernel releases it when the
holder dies, so a SIGKILLed hook never wedges the exchange.  We use it directly
rather than the ``filelock`` package because this sits on every commit's hot
path and ``filelock`` costs ~45 ms of imports here (measured; see README).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from token_exchange.errors import UserError


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes, sync: bool = True) -> None:
    """Write all of ``data`` (os.write may write less), then fsync unless ``sync`` is False."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    if sync:
        os.fsync(fd)


def atomic_write(path: Path, data: bytes, *, mode: int | None = None, sync: bool = True) -> None:
    """Write ``data`` to ``path`` all-or-nothing: a fresh temp file (never through a symlink), fsync,
    rename, fsync the directory; on failure the temp file is removed and the OSError raised.
    ``mode``: exactly these permissions (default: 0644 less the umask).  ``sync=False`` skips both fsyncs
    (still temp + rename) for derived state a crash may lose."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                 | getattr(os, "O_CLOEXEC", 0), 0o644 if mode is None else mode)
    try:
        try:
            _write_all(fd, data, sync)
        finally:
            os.close(fd)
        if mode is not None:
            os.chmod(tmp, mode)  # the umask may have narrowed it
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync:
        fsync_dir(path.parent)


def append_durably(path: Path, data: bytes) -> int:
    """Append ``data`` and fsync; returns the file size before the append."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        start = os.fstat(fd).st_size
        _write_all(fd, data)
    finally:
        os.close(fd)
    return start


@contextmanager
def file_lock(path: Path, *, timeout: float = 30.0, mode: int = 0o644,
              busy: Callable[[], Exception] | None = None) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if needed, never through a symlink) for the block;
    still held by someone else after ``timeout`` seconds: ``busy()`` is raised (default: a UserError)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as e:
        raise UserError(f"lock file {path}: cannot open ({e.strerror})") from None
    try:
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    if busy is not None:
                        raise busy() from None
                    raise UserError(f"exchange is locked by another process ({path}); try again") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
