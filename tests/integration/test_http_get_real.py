"""http_get over real sockets and httpx's real transport, against a server this test starts on
loopback. Loopback is refused by policy, so all but the first test loosen the tool's address
check through the one seam it has for tests (the module's `_network`)."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType

import psutil
import pytest
from payloads import MiB, gzip_bomb

from dytopo.errors import ToolError
from dytopo.tools import ToolContext, ToolRegistry

ROOT = Path(__file__).resolve().parents[2]


class Server:
    """Answers every connection with `reply(head)`; records the request heads it read."""

    def __init__(self, reply: Callable[[bytes], bytes] | None, *, read_head: bool) -> None:
        self.reply = reply
        self.read_head = read_head
        self.heads: list[bytes] = []
        self.connections = 0
        self.port = 0
        self.handlers: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n") if self.read_head else b""
            self.heads.append(head)
            if self.reply is None:  # a server that never answers
                await asyncio.Event().wait()
            else:
                writer.write(self.reply(head))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
def module() -> ModuleType:
    registry = ToolRegistry()
    registry.load(str(ROOT / "tools" / "http_get.py"))
    return sys.modules[registry.get("http_get").fn.__module__]


@pytest.fixture
def loopback_allowed(module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "_network", module.Network(reachable=lambda ip: ip.is_loopback))


@asynccontextmanager
async def serve(
    reply: Callable[[bytes], bytes] | None, *, read_head: bool = True
) -> AsyncIterator[Server]:
    server = Server(reply, read_head=read_head)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        async with listener:
            yield server
    finally:
        for handler in server.handlers:
            handler.cancel()
        await asyncio.gather(*server.handlers, return_exceptions=True)


def response(body: bytes, *headers: str) -> Callable[[bytes], bytes]:
    head = ["HTTP/1.1 200 OK", "Content-Type: text/plain", f"Content-Length: {len(body)}"]
    raw = "\r\n".join([*head, *headers, "Connection: close", "", ""]).encode() + body
    return lambda _: raw


def ctx(port: int, **settings: float) -> ToolContext:
    return ToolContext(http_allow=[f"localhost:{port}", f"127.0.0.1:{port}"], **settings)


async def test_loopback_is_refused_by_default(module: ModuleType) -> None:
    async with serve(response(b"internal")) as server:
        for host in ("localhost", "127.0.0.1"):
            with pytest.raises(ToolError, match="public internet addresses only"):
                await module.http_get({"url": f"http://{host}:{server.port}/"}, ctx(server.port))
        assert server.connections == 0


@pytest.mark.usefixtures("loopback_allowed")
async def test_the_checked_address_is_used_and_the_name_is_kept(module: ModuleType) -> None:
    async with serve(response(b"hello")) as server:
        url = f"http://localhost:{server.port}/page"
        result = await module.http_get({"url": url}, ctx(server.port))
        assert result.startswith(f"URL: {url}\n")
        assert result.endswith("\n\nhello")
        (head,) = server.heads  # localhost may resolve to ::1 first: refused, then 127.0.0.1
        assert f"\r\nHost: localhost:{server.port}\r\n".encode() in head
        assert b"\r\nAccept-Encoding: identity\r\n" in head


@pytest.mark.usefixtures("loopback_allowed")
async def test_a_gzip_bomb_over_a_real_socket_stays_small(module: ModuleType) -> None:
    bomb = gzip_bomb(1024)
    process = psutil.Process()
    async with serve(response(bomb, "Content-Encoding: gzip, gzip")) as server:
        before = process.memory_info().rss
        start = time.perf_counter()
        result = await module.http_get(
            {"url": f"http://127.0.0.1:{server.port}/"}, ctx(server.port)
        )
        elapsed = time.perf_counter() - start
        growth = process.memory_info().rss - before
    assert "(cut at 1000000 bytes)" in result
    assert result.endswith("a" * 1000)
    assert growth < 64 * MiB, f"RSS grew {growth / MiB:.0f} MiB"
    assert elapsed < 3


@pytest.mark.usefixtures("loopback_allowed")
async def test_connection_refused_is_one_line(module: ModuleType) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ToolError, match=f"could not connect to 127.0.0.1:{port}: ") as caught:
        await module.http_get({"url": f"http://127.0.0.1:{port}/"}, ctx(port))
    assert "\n" not in str(caught.value)


@pytest.mark.usefixtures("loopback_allowed")
async def test_a_silent_server_times_out(module: ModuleType) -> None:
    async with serve(None) as server:
        start = time.perf_counter()
        with pytest.raises(ToolError, match="timed out"):
            await module.http_get(
                {"url": f"http://127.0.0.1:{server.port}/"}, ctx(server.port, timeout_s=0.5)
            )
        assert time.perf_counter() - start < 3


@pytest.mark.usefixtures("loopback_allowed")
async def test_tls_to_a_plain_http_server_is_one_line(module: ModuleType) -> None:
    async with serve(response(b"not tls"), read_head=False) as server:
        with pytest.raises(ToolError, match=f"TLS with 127.0.0.1:{server.port} failed") as caught:
            await module.http_get({"url": f"https://127.0.0.1:{server.port}/"}, ctx(server.port))
        assert "\n" not in str(caught.value)


@pytest.mark.usefixtures("loopback_allowed")
async def test_a_server_that_hangs_up_is_one_line(module: ModuleType) -> None:
    async with serve(lambda _: b"") as server:
        with pytest.raises(ToolError, match=r"could not fetch .*disconnected") as caught:
            await module.http_get({"url": f"http://127.0.0.1:{server.port}/"}, ctx(server.port))
        assert "\n" not in str(caught.value)
