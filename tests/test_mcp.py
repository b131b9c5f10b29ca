"""The MCP server: in-process with the SDK's own client (mcp.client.Client, no subprocess), and once over
real stdio (`tx mcp` answers initialize and tools/list, and writes nothing else to stdout)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the mcp extra is not installed (pip install 'token-exchange[mcp]')")

import anyio  # mcp depends on it
from mcp.client import Client
from mcp.types import CallToolResult, TextContent

from tests.conftest import Clock, make_ex, run
from token_exchange import api
from token_exchange.agents.mcp_server import build_server

D = Decimal

TOOLS = {"balance", "limits", "history", "quote_commit", "quote_issue", "reserve", "settle", "void", "spend",
         "pool_show", "pool_contribute"}
LIMITS = "[agents.claude.limits]\nhourly = 100\ndaily = 100000\nburst = 100000\nreserve = 0\n"


def session(t: api.Exchange, fn: Callable[[Client], Awaitable[None]], agent: str | None = "claude") -> None:
    async def main() -> None:
        async with Client(build_server(t, agent=agent)) as client:
            await fn(client)

    anyio.run(main)


def open_tx(tmp_path: Path, clock: Clock, extra: str = "") -> api.Exchange:
    return api.Exchange(make_ex(tmp_path / "ex", clock, extra))


def structured(result: CallToolResult) -> Any:
    assert not result.is_error, result.content
    return result.structured_content


def text(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


def test_tools_are_listed_with_output_schemas(tmp_path: Path, clock: Clock) -> None:
    async def check(c: Client) -> None:
        tools = {tool.name: tool for tool in (await c.list_tools()).tools}
        assert set(tools) == TOOLS
        assert all(tool.output_schema for tool in tools.values())
        schema, read, write = tools["balance"].output_schema, tools["balance"].annotations, tools["spend"].annotations
        assert schema is not None and {"balance", "reserved", "available"} <= set(schema["properties"])
        assert read is not None and write is not None and read.read_only_hint and not write.read_only_hint

    session(open_tx(tmp_path, clock), check)


def test_balance_reserve_settle_round_trip(tmp_path: Path, clock: Clock) -> None:
    t = open_tx(tmp_path, clock)

    async def flow(c: Client) -> None:
        b = structured(await c.call_tool("balance", {}))
        assert (b["agent"], Decimal(b["balance"]), Decimal(b["available"])) == ("claude", D(10000), D(500))
        r = structured(await c.call_tool("reserve", {"max_tokens": 20000, "model": "claude-opus", "id": "m1"}))
        assert (r["id"], r["state"], Decimal(r["held"])) == ("m1", "open", D(300))
        assert Decimal(structured(await c.call_tool("balance", {}))["reserved"]) == 300
        s = structured(await c.call_tool("settle", {"reservation_id": "m1", "input_tokens": 4000,
                                                    "output_tokens": 1000}))
        assert (s["state"], Decimal(s["cost"]), Decimal(s["released"])) == ("settled", D(75), D(225))
        v = structured(await c.call_tool("reserve", {"max_tokens": 1000, "model": "claude-opus", "id": "m2"}))
        assert structured(await c.call_tool("void", {"reservation_id": v["id"]}))["state"] == "voided"
        sp = structured(await c.call_tool("spend", {"input_tokens": 900, "output_tokens": 100, "id": "m3"}))
        assert (Decimal(sp["cost"]), sp["model"]) == (D(15), "claude-opus")
        h = structured(await c.call_tool("history", {"limit": 1}))["result"]
        assert [(e["id"], Decimal(e["amount"])) for e in h] == [("llm:m3", D(-15))]
        lim = structured(await c.call_tool("limits", {}))
        assert Decimal(lim["hourly"]["used"]) == 90 and lim["reservations"] == []

    session(t, flow)
    assert t.balance("claude") == 10000 - 90


def test_a_refusal_is_a_tool_error_with_the_seeds_wording_and_when_it_frees_up(tmp_path: Path,
                                                                              clock: Clock) -> None:
    t = open_tx(tmp_path, clock, LIMITS)
    t.spend("claude", "claude-opus", 6000, id="before")  # 90 of the hourly 100
    before = (t.home / "ledger.toml").read_bytes()

    async def refused(c: Client) -> None:
        r = await c.call_tool("reserve", {"max_tokens": 1000, "model": "claude-opus"})
        assert r.is_error and r.structured_content is None
        assert text(r) == ("Error executing tool reserve: Hourly limit reached (90.0/100 used, need 15.0); "
                                     "enough frees up at 2026-01-01T13:00:00Z (in 1h 00m 00s)")
        r = await c.call_tool("spend", {"input_tokens": 10_000_000})
        assert r.is_error and text(r).endswith("Exceeds burst limit (150000.0 > 100000); split the request "
                                                         "or use a team pool")

    session(t, refused)
    assert (t.home / "ledger.toml").read_bytes() == before


def test_a_server_for_one_agent_spends_only_for_it(tmp_path: Path, clock: Clock) -> None:
    t = open_tx(tmp_path, clock)
    t.reserve("builder", None, 1000, id="theirs")

    async def bound(c: Client) -> None:
        r = await c.call_tool("spend", {"input_tokens": 10, "agent": "zero"})
        assert r.is_error and "acts for claude; it cannot spend for zero" in text(r)
        r = await c.call_tool("void", {"reservation_id": "theirs"})
        assert r.is_error and "belongs to builder" in text(r)
        assert Decimal(structured(await c.call_tool("balance", {"agent": "zero"}))["balance"]) == 10000  # reads ok

    session(t, bound)
    assert t.reservation("theirs").state == "open"

    async def unbound(c: Client) -> None:
        r = await c.call_tool("balance", {})
        assert r.is_error and "name the agent" in text(r)
        assert structured(await c.call_tool("balance", {"agent": "zero"}))["agent"] == "zero"

    session(t, unbound, agent=None)


def test_quotes_and_pools(tmp_path: Path, clock: Clock) -> None:
    t = open_tx(tmp_path, clock)
    t.pool_create("team", "claude", 10)

    async def flow(c: Client) -> None:
        q = structured(await c.call_tool("quote_commit", {"message": "fix: parser", "project": "nexushive-setup"}))
        assert (q["status"], Decimal(q["amount"]), q["keyword"]) == ("pay", D(450), "fix")
        i = structured(await c.call_tool("quote_issue", {"priority": "P1", "issue_type": "bug"}))
        assert Decimal(i["amount"]) == 750
        k = structured(await c.call_tool("pool_contribute", {"pool": "team", "amount": "12.5", "id": "k1"}))
        assert (Decimal(k["amount"]), Decimal(k["pool_balance"]), k["created"]) == (Decimal("12.5"), Decimal("12.5"),
                                                                                    True)
        p = structured(await c.call_tool("pool_show", {"pool": "team"}))
        assert p["members"] == ["claude"] and Decimal(p["balance"]) == Decimal("12.5")
        r = await c.call_tool("pool_contribute", {"pool": "team", "amount": "5"})
        assert r.is_error and "below pool team's minimum 10" in text(r)
        r = await c.call_tool("pool_show", {"pool": "nope"})
        assert r.is_error and "unknown pool" in text(r)

    session(t, flow)


def test_bad_arguments_are_tool_errors_and_change_nothing(tmp_path: Path, clock: Clock) -> None:
    t = open_tx(tmp_path, clock)
    before = (t.home / "ledger.toml").read_bytes()

    async def bad(c: Client) -> None:
        schema_cases: list[tuple[str, dict[str, Any]]] = [("reserve", {"max_tokens": -5}),
                                                          ("spend", {"input_tokens": "lots"})]
        for name, args in schema_cases:
            r = await c.call_tool(name, args)  # refused by the input schema (the SDK's own message)
            assert r.is_error and "validation error" in text(r), (name, args)
        cases: list[tuple[str, dict[str, Any], str]] = [
            ("reserve", {"max_tokens": 10, "model": "gpt-9"}, "unknown model 'gpt-9'"),
            ("settle", {"reservation_id": "none", "input_tokens": 5}, "unknown reservation"),
            ("quote_issue", {"priority": "urgent"}, "invalid priority"),
            ("pool_contribute", {"pool": "x", "amount": "1.00001"}, "more than 4 decimal places")]
        for name, args, msg in cases:
            r = await c.call_tool(name, args)  # refused by us: one line
            line = text(r)
            assert r.is_error and msg in line and "\n" not in line, (name, args, line)

    session(t, bad)
    assert (t.home / "ledger.toml").read_bytes() == before


# --- `tx mcp` over real stdio -------------------------------------------------------------------
def rpc(proc: subprocess.Popen[str], message: dict[str, Any]) -> dict[str, Any] | None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(message) + "\n")
    proc.stdin.flush()
    if "id" not in message:
        return None
    reply: dict[str, Any] = json.loads(proc.stdout.readline())
    assert reply["jsonrpc"] == "2.0" and reply["id"] == message["id"]
    return reply


def test_tx_mcp_over_stdio_answers_initialize_and_tools_list(home: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "token_exchange", "--home", str(home), "mcp", "--agent", "claude"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        init = rpc(proc, {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                          "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                     "clientInfo": {"name": "test", "version": "0"}}})
        assert init is not None
        assert init["result"]["serverInfo"]["name"] == "token-exchange" and "tools" in init["result"]["capabilities"]
        rpc(proc, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        listed = rpc(proc, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        assert listed is not None and {tool["name"] for tool in listed["result"]["tools"]} == TOOLS
        called = rpc(proc, {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                            "params": {"name": "balance", "arguments": {}}})
        assert called is not None and called["result"]["structuredContent"]["balance"] == "10000"
    finally:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.close()
        rest = proc.stdout.read()
        code = proc.wait(timeout=60)
        proc.stderr.close()
        proc.stdout.close()
    assert rest == "" and code == 0  # nothing on stdout but the protocol


def test_tx_mcp_refuses_in_one_line_before_the_protocol(tmp_path: Path, home: Path) -> None:
    r = run([sys.executable, "-m", "token_exchange", "--home", str(tmp_path / "none"), "mcp"], input="")
    assert r.code == 1 and r.out == "" and r.err.count("\n") == 1 and "no exchange" in r.err
    r = run([sys.executable, "-m", "token_exchange", "--home", str(home), "mcp", "--agent", "ghost"], input="")
    assert r.code == 1 and r.out == "" and "unknown agent 'ghost'" in r.err
    # without the extra: one line naming it (the package made unimportable for this one process)
    code = ("import sys; sys.modules['mcp'] = None; from token_exchange.cli import run; "
            f"sys.exit(run(['--home', {str(home)!r}, 'mcp']))")
    r = run([sys.executable, "-c", code], input="")
    assert r.code == 1 and r.out == "" and "needs the mcp extra" in r.err and r.err.count("\n") == 1
