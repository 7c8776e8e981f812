"""The MCP server over streamable HTTP: uvicorn on a loopback port this test opens, the app routed
at /mcp of a host app the way `dytopo serve` mounts it, the mcp SDK's own HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from starlette.applications import Starlette
from test_mcp_server import StandIn

from dytopo.service.mcp import mcp_http_app

PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
ACCEPT = {"Accept": "application/json, text/event-stream"}


@contextlib.asynccontextmanager
async def served(token: str | None, **limits: Any) -> AsyncIterator[str]:
    mcp_app = mcp_http_app(StandIn(), token=token, reply_within_s=10, **limits)  # type: ignore[arg-type]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with mcp_app.router.lifespan_context(mcp_app):
            yield

    host = Starlette(lifespan=lifespan)
    host.add_route("/mcp", mcp_app, methods=["GET", "POST", "DELETE"])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(host, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no started event
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def call(url: str, headers: dict[str, str]) -> tuple[str, list[float]]:
    progress: list[float] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(done)

    async with (
        httpx2.AsyncClient(headers=headers) as http,
        Client(streamable_http_client(url, http_client=http)) as mcp,
    ):
        result = await mcp.call_tool(
            "run_swarm", {"task": "x", "max_rounds": 2}, progress_callback=on_progress
        )
    assert not result.is_error, result
    return result.content[0].text, progress  # type: ignore[union-attr]


@pytest.mark.parametrize("token", [None, "s3cret"])
async def test_run_swarm_over_streamable_http(token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with served(token) as url:
        answer, progress = await call(url, headers)
    assert answer.startswith("LRU")
    assert progress == [1, 2]


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Bearer s3cret2", "s3cret"])
async def test_token_required(authorization: str | None) -> None:
    headers: dict[str, Any] = dict(ACCEPT)
    if authorization:
        headers["Authorization"] = authorization
    async with served("s3cret") as url, httpx2.AsyncClient() as http:
        response = await http.post(url, json=PING, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_without_token_only_loopback_hosts() -> None:
    async with served(None) as url, httpx2.AsyncClient() as http:
        rebound = await http.post(url, json=PING, headers={**ACCEPT, "Host": "evil.example:80"})
        page = await http.post(url, json=PING, headers={**ACCEPT, "Origin": "http://evil.example"})
    assert rebound.status_code == 421
    assert page.status_code == 403
