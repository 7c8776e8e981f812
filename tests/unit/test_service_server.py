"""`dytopo serve`'s uvicorn cannot be wedged by connections: idle or slow heads are closed, a
slow body is cut with 408, connections beyond the cap are closed as they arrive, and the
open-file limit is raised above what the cap needs."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from service_kit import backend, settings
from uvicorn.protocols.http.h11_impl import H11Protocol

from dytopo.cli import main
from dytopo.embedders import HashEmbedder
from dytopo.errors import ConfigError
from dytopo.service import server as server_module
from dytopo.service.app import create_app
from dytopo.service.runs import RunService
from dytopo.service.server import open_files_needed, raise_open_file_limit, server_config
from dytopo.service.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
NOWHERE = "http://127.0.0.1:9"
HEAD = (
    b"POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n"
)


@contextlib.asynccontextmanager
async def serving(config: ServiceSettings) -> AsyncIterator[tuple[int, RunService]]:
    """The service on uvicorn as `dytopo serve` configures it, on a free loopback port."""
    async with RunService(config, backend=backend(), embedder=HashEmbedder()) as service:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(
            server_config(create_app(service), config, log_level="critical", lifespan="on")
        )
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                assert not task.done(), task
                await asyncio.sleep(0.01)
            yield sock.getsockname()[1], service
        finally:
            service.stop_runs()
            server.should_exit = True
            server.force_exit = True
            await task
            sock.close()


async def closed_within(reader: asyncio.StreamReader, limit_s: float) -> bytes:
    """What the server sent before it closed the connection (fails after `limit_s`)."""
    return await asyncio.wait_for(reader.read(), limit_s)


def test_the_server_config_carries_the_limits(tmp_path: Path) -> None:
    config = settings(tmp_path, max_connections=8, header_timeout_s=3)
    built = server_config(create_app(config), config)
    assert built.limit_concurrency == 8
    assert built.timeout_keep_alive == 5
    assert built.h11_max_incomplete_event_size == 16 * 1024
    assert isinstance(built.http, type)
    protocol: Any = built.http
    assert issubclass(protocol, H11Protocol)
    assert (protocol.header_timeout_s, protocol.max_open) == (3, 16)


def test_dytopo_serve_runs_uvicorn_with_those_limits(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[uvicorn.Config] = []

    async def serve(self: uvicorn.Server, sockets: Any = None) -> None:
        seen.append(self.config)

    monkeypatch.setattr(uvicorn.Server, "serve", serve)
    monkeypatch.setattr(
        "sys.argv",
        [
            "dytopo",
            "serve",
            "--port",
            "0",
            "--max-connections",
            "9",
            "--topologies",
            str(ROOT / "topologies"),
            "--runs",
            str(tmp_path / "runs"),
            "--backend-url",
            NOWHERE,
            "--embed-url",
            NOWHERE,
        ],
    )
    with pytest.raises(SystemExit):
        main()
    assert [c.limit_concurrency for c in seen] == [9]
    assert seen[0].h11_max_incomplete_event_size == 16 * 1024
    assert issubclass(seen[0].http, H11Protocol)  # type: ignore[arg-type]


async def test_a_slow_body_is_cut_with_408(tmp_path: Path) -> None:
    async with serving(settings(tmp_path, body_timeout_s=1)) as (port, service):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HEAD)
        started = time.monotonic()

        async def trickle() -> None:
            for _ in range(100):
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.4)

        dripping = asyncio.create_task(trickle())
        try:
            reply = await closed_within(reader, 10)
        finally:
            dripping.cancel()
            writer.close()
        took = time.monotonic() - started
        runs = service.runs()
    assert reply.startswith(b"HTTP/1.1 408 "), reply
    assert reply.endswith(b'{"detail": "request body not received within 1 s"}')
    assert took < 5, took
    assert runs == []


async def test_an_idle_connection_and_a_slow_head_are_closed(tmp_path: Path) -> None:
    async with serving(settings(tmp_path, header_timeout_s=0.5)) as (port, _):
        idle_reader, idle = await asyncio.open_connection("127.0.0.1", port)
        slow_reader, slow = await asyncio.open_connection("127.0.0.1", port)

        async def head_byte_by_byte() -> None:
            for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n":
                slow.write(bytes([byte]))
                await slow.drain()
                await asyncio.sleep(0.1)

        dripping = asyncio.create_task(head_byte_by_byte())
        try:
            assert await closed_within(idle_reader, 5) == b""
            assert await closed_within(slow_reader, 5) == b""
        finally:
            dripping.cancel()
            idle.close()
            slow.close()


async def test_a_connection_that_sends_its_request_in_time_is_served_and_kept_alive(
    tmp_path: Path,
) -> None:
    async with serving(settings(tmp_path, header_timeout_s=0.5)) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):  # each request's head meets a fresh deadline
            await asyncio.sleep(0.3)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status = await asyncio.wait_for(reader.readline(), 5)
            assert status.startswith(b"HTTP/1.1 200 "), status
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
        writer.close()


async def test_connections_beyond_the_cap_are_closed_as_they_arrive(tmp_path: Path) -> None:
    config = settings(tmp_path, max_connections=2, header_timeout_s=30)
    async with serving(config) as (port, _):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        await asyncio.sleep(0.1)  # the server took them all
        reader, extra = await asyncio.open_connection("127.0.0.1", port)
        try:
            assert await closed_within(reader, 2) == b""  # not the 30 s head deadline
            # Within twice the cap a request is answered, with 503 beyond the first two.
            r, w = held[0]
            w.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert (await asyncio.wait_for(r.readline(), 5)).startswith(b"HTTP/1.1 503 ")
        finally:
            extra.close()
            for _, writer in held:
                writer.close()


def test_the_open_file_limit_is_raised_to_the_hard_one_when_the_cap_needs_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    limits = {"now": (256, 4096)}
    set_to: list[tuple[int, int]] = []

    def setrlimit(kind: int, value: tuple[int, int]) -> None:
        set_to.append(value)
        limits["now"] = value

    monkeypatch.setattr(server_module.resource, "getrlimit", lambda kind: limits["now"])
    monkeypatch.setattr(server_module.resource, "setrlimit", setrlimit)
    needed = open_files_needed(settings(tmp_path))
    assert needed == 2 * 64 + 256
    assert raise_open_file_limit(needed) == 4096
    assert set_to == [(4096, 4096)]
    assert raise_open_file_limit(needed) == 4096  # already enough: left alone
    assert set_to == [(4096, 4096)]
    limits["now"] = (256, 300)
    with pytest.raises(ConfigError, match=r"^the open-file limit is 300 .* --max-connections$"):
        raise_open_file_limit(needed)
