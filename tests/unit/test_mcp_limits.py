"""How much an MCP client may send: one message's size on stdio (BoundedLines) and over HTTP,
and how many HTTP sessions stay open and for how long."""

from __future__ import annotations

import asyncio
import os

import httpx2
from test_mcp_http import ACCEPT, served

from dytopo.service._mcp_stdio import DROPPED, BoundedLines

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}


async def test_a_line_over_the_limit_is_skipped_and_the_next_one_read() -> None:
    read_end, write_end = os.pipe()
    lines = BoundedLines(read_end, limit=1000)
    os.write(write_end, b"x" * 3000 + b"\n" + b'{"ok": 1}\n' + b"y" * 1000 + b"\n" + b"tail")
    os.close(write_end)
    try:
        got = [line async for line in lines]
    finally:
        os.close(read_end)
    assert got == [DROPPED, '{"ok": 1}\n', DROPPED, "tail"]
    assert len(lines._buffer) == 0


async def test_an_http_body_over_the_limit_is_refused() -> None:
    async with served(None, max_message_bytes=10_000) as url, httpx2.AsyncClient() as http:
        big = {**INITIALIZE, "params": {**INITIALIZE["params"], "pad": "x" * 20_000}}
        refused = await http.post(url, json=big, headers=ACCEPT)
        fine = await http.post(url, json=INITIALIZE, headers=ACCEPT)
    assert refused.status_code == 413
    assert fine.status_code == 200


async def test_http_sessions_are_capped_and_expire_when_idle() -> None:
    async with (
        served(None, max_sessions=2, session_idle_s=0.5) as url,
        httpx2.AsyncClient() as http,
    ):
        opened = [await http.post(url, json=INITIALIZE, headers=ACCEPT) for _ in range(3)]
        assert [r.status_code for r in opened] == [200, 200, 503]
        session = opened[0].headers["mcp-session-id"]
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        headers = {**ACCEPT, "mcp-session-id": session, "mcp-protocol-version": "2025-06-18"}
        await asyncio.sleep(1.5)  # a request would restart the idle clock: none meanwhile
        gone = await http.post(url, json=ping, headers=headers)
        assert gone.status_code == 404
        again = await http.post(url, json=INITIALIZE, headers=ACCEPT)
    assert again.status_code == 200
