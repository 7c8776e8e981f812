"""What the service refuses before any route: a missing or wrong token, a body too large (by
its Content-Length or, chunked, by its bytes), and a non-loopback bind without a token."""

from __future__ import annotations

import asyncio
import hmac
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from service_kit import backend, served, settings

from dytopo.errors import ConfigError
from dytopo.service import guard
from dytopo.service.settings import ServiceSettings

TOKEN = "s3cret-token-123"


async def test_a_missing_or_wrong_token_is_401_and_healthz_is_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(guard.hmac, "compare_digest", spy)
    async with served(settings(tmp_path, token=TOKEN), backend(), token=TOKEN) as s:
        right = await s.client.get("/v1/runs")
        none = await s.client.get("/v1/runs", headers={"Authorization": ""})
        wrong = await s.client.get("/v1/runs", headers={"Authorization": f"Bearer {TOKEN}x"})
        basic = await s.client.get("/v1/runs", headers={"Authorization": f"Basic {TOKEN}"})
        post = await s.client.post(
            "/v1/runs", json={"task": "t"}, headers={"Authorization": "Bearer nope"}
        )
        mcp = await s.client.post("/mcp", json={}, headers={"Authorization": "Bearer nope"})
        health = await s.client.get("/healthz", headers={"Authorization": ""})
        runs = s.service.runs()
    assert right.status_code == 200
    assert [r.status_code for r in (none, wrong, basic, post, mcp)] == [401] * 5
    assert wrong.headers["WWW-Authenticate"] == "Bearer"
    assert wrong.json() == {"detail": "missing or wrong bearer token"}
    assert health.status_code == 200
    assert runs == []  # the refused POST started nothing
    assert (f"Bearer {TOKEN}x".encode(), f"Bearer {TOKEN}".encode()) in compared


async def test_without_a_token_only_requests_addressed_to_the_loopback_are_served(
    tmp_path: Path,
) -> None:
    async with served(settings(tmp_path), backend()) as s:
        port = s.url.rsplit(":", 1)[1]
        rebound = await s.client.get("/v1/runs", headers={"Host": f"evil.example:{port}"})
        local = [
            await s.client.get("/v1/runs", headers={"Host": host})
            for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost")
        ]
    assert rebound.status_code == 403
    assert "127.0.0.1 or localhost" in rebound.json()["detail"]
    assert [r.status_code for r in local] == [200] * 4


async def test_with_a_token_any_host_may_call(tmp_path: Path) -> None:
    async with served(settings(tmp_path, token=TOKEN), backend(), token=TOKEN) as s:
        reply = await s.client.get("/v1/runs", headers={"Host": "host.docker.internal:8765"})
    assert reply.status_code == 200


async def test_a_body_over_the_limit_is_413_by_its_length(tmp_path: Path) -> None:
    async with served(settings(tmp_path, max_body_bytes=2048), backend()) as s:
        big = await s.client.post("/v1/runs", json={"task": "x" * 4000})
        fits = await s.client.post("/v1/runs", json={"task": "x" * 1500})
    assert big.status_code == 413
    assert big.json() == {"detail": "request body larger than 2048 bytes"}
    assert fits.status_code == 202


async def raw_post(url: str, head: str, chunks: list[bytes]) -> bytes:
    """A POST written by hand (chunked, no Content-Length); the response's status line."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(head.encode())
        for chunk in chunks:
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return await reader.readline()
    except ConnectionResetError:  # refused mid-body: the status line may already be read
        return b""
    finally:
        writer.close()


async def test_a_chunked_body_without_content_length_is_413_once_it_passes_the_limit(
    tmp_path: Path,
) -> None:
    head = (
        "POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    body = b'{"task": "' + b"x" * 5000 + b'"}'
    async with served(settings(tmp_path, max_body_bytes=2048), backend()) as s:
        status = await raw_post(s.url, head, [body[i : i + 512] for i in range(0, len(body), 512)])
        small = await raw_post(s.url, head, [b'{"task": "t"}'])
        runs = s.service.runs()
    assert status.startswith(b"HTTP/1.1 413"), status
    assert small.startswith(b"HTTP/1.1 202"), small
    assert len(runs) == 1


NOT_LOOPBACK = ["0.0.0.0", "::", "192.168.1.5", "example.com", "127.0.0.1.nip.io"]


@pytest.mark.parametrize("host", NOT_LOOPBACK)
def test_a_non_loopback_bind_without_a_token_is_refused(host: str) -> None:
    with pytest.raises(ConfigError, match=f"--host {host} is reachable from other machines"):
        ServiceSettings(host=host).check()
    ServiceSettings(host=host, token=TOKEN).check()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_a_loopback_bind_needs_no_token(host: str) -> None:
    ServiceSettings(host=host).check()


@pytest.mark.parametrize("token", ["", "has space", "tab\t", "nön-ascii"])
def test_a_token_that_cannot_be_a_header_is_refused(token: str) -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        ServiceSettings(token=token)


async def test_healthz_names_the_backend_only_to_a_caller_with_the_token(tmp_path: Path) -> None:
    async with served(settings(tmp_path, token=TOKEN), backend(), token=TOKEN) as s:
        anyone = await s.client.get("/healthz", headers={"Authorization": ""})
        wrong = await s.client.get("/healthz", headers={"Authorization": "Bearer nope"})
        caller = await s.client.get("/healthz")
    assert anyone.json() == wrong.json() == {"status": "ok", "running": 0, "queued": 0}
    assert caller.json() == {"status": "ok", "running": 0, "queued": 0, "backend": "injected"}


async def test_healthz_of_a_loopback_service_without_a_token_names_the_backend(
    tmp_path: Path,
) -> None:
    async with served(settings(tmp_path), backend()) as s:
        health = (await s.client.get("/healthz")).json()
    assert health["backend"] == "injected"
