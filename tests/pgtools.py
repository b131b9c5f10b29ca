"""Helpers for the tests that talk to a real PostgreSQL server (docs/postgres.md).

The server comes from ``TOKEN_EXCHANGE_TEST_DSN`` (``.ci/run`` sets it); without one, or when it does
not answer, those tests skip and say why.  Every test gets a schema of its own (``pg`` fixture,
dropped afterwards), so runs on one server never see each other.  ``CutProxy`` is a loopback TCP
proxy that drops a connection at a chosen statement: a real lost connection, not a mock.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

TEST_DSN_ENV = "TOKEN_EXCHANGE_TEST_DSN"


def server_dsn() -> str:
    """The test server's DSN, or skip (with the reason) where none is configured or none answers."""
    dsn = os.environ.get(TEST_DSN_ENV, "")
    if not dsn:
        pytest.skip(f"{TEST_DSN_ENV} is not set: no PostgreSQL server to test the postgres backend against")
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[test]')")
    try:
        psycopg.connect(dsn, connect_timeout=5).close()
    except psycopg.Error as e:
        pytest.skip(f"no PostgreSQL server answers at {TEST_DSN_ENV} ({str(e).splitlines()[0][:120]})")
    return dsn


def with_schema(dsn: str, schema: str, **extra: Any) -> str:
    import psycopg

    return str(psycopg.conninfo.make_conninfo(dsn, options=f"-csearch_path={schema}", **extra))


@dataclass
class Schema:
    """One test's schema on the test server: ``dsn`` selects it."""

    server: str
    name: str

    @property
    def dsn(self) -> str:
        return with_schema(self.server, self.name)

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement in the schema (autocommit), as an operator with psql would."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []


@pytest.fixture
def pg(monkeypatch: pytest.MonkeyPatch) -> Iterator[Schema]:
    import psycopg

    server = server_dsn()
    monkeypatch.delenv("TOKEN_EXCHANGE_DSN", raising=False)
    schema = Schema(server, f"te_test_{uuid.uuid4().hex[:16]}")
    yield schema
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(schema.name)))


def pg_config(dsn: str, extra: str = "") -> str:
    """The seed config with ``backend = "postgres"`` and the DSN in ``[exchange] dsn``."""
    from token_exchange.rules import config as config_mod

    text = config_mod.default_text()
    assert 'backend = "toml"' in text
    text = text.replace('backend = "toml"', f'backend = "postgres"\ndsn = {json.dumps(dsn)}', 1)
    return text + "\n" + extra


def pg_home(path: Path, dsn: str, extra: str = "") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.toml").write_text(pg_config(dsn, extra))
    return path


class CutProxy:
    """127.0.0.1 TCP proxy to the server that cuts the first connection whose client sends ``cut_on``.

    ``deliver``: forward that packet and let the server answer (it answers after the statement ran,
    e.g. after COMMIT is durable), but drop the answer and close both sides: the client never learns.
    Otherwise drop the packet unsent and close (the server never sees the statement)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut_on: bytes | None = None
        self.deliver = False
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, cut_on: bytes, deliver: bool) -> None:
        self.cut_on, self.deliver = cut_on, deliver

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target, timeout=30)
            state = {"cut": False}
            threading.Thread(target=self._up, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, state), daemon=True).start()

    @staticmethod
    def _close(*socks: socket.socket) -> None:
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _up(self, client: socket.socket, server: socket.socket, state: dict[str, bool]) -> None:
        try:
            while data := client.recv(65536):
                if self.cut_on is not None and self.cut_on in data:
                    self.cut_on = None
                    self.cuts += 1
                    state["cut"] = True
                    if not self.deliver:
                        break
                    server.sendall(data)  # the answer is dropped by _down, which then closes both
                    return
                server.sendall(data)
        except OSError:
            pass
        self._close(client, server)

    def _down(self, server: socket.socket, client: socket.socket, state: dict[str, bool]) -> None:
        try:
            while data := server.recv(65536):
                if state["cut"]:
                    break  # the server answered (the statement ran): the client never sees it
                client.sendall(data)
        except OSError:
            pass
        self._close(client, server)
