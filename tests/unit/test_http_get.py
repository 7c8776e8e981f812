"""http_get under attack: decompression bombs, private addresses behind allowed names, odd ports,
broken URLs and every network failure. No real network: httpx.MockTransport plus a fake resolver
installed as the tool module's `_network` (the one seam it offers to tests)."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import sys
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from payloads import MiB, gzip_bomb

from dytopo.errors import ToolError
from dytopo.tools import ToolContext, ToolRegistry

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = "93.184.216.34"
PUBLIC6 = "2606:2800:220:1:248:1893:25c8:1946"


class FakeNet:
    """Pages by `scheme://host/path` (the name, as the Host header carries it), a fake DNS."""

    def __init__(self, pages: dict[str, httpx.Response | Exception]) -> None:
        self.pages = pages
        self.dns: dict[str, list[str]] = {}
        self.lookups: list[str] = []
        self.requests: list[httpx.Request] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        return self.dns.get(host, [PUBLIC])

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        page = self.pages.get(self.named_url(request), httpx.Response(404))
        if isinstance(page, Exception):
            raise page
        return page

    @staticmethod
    def named_url(request: httpx.Request) -> str:
        return f"{request.url.scheme}://{request.headers['host']}{request.url.raw_path.decode()}"


@pytest.fixture(scope="module")
def module() -> ModuleType:
    registry = ToolRegistry()
    registry.load(str(ROOT / "tools" / "http_get.py"))
    return sys.modules[registry.get("http_get").fn.__module__]


@pytest.fixture
def net(module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> FakeNet:
    fake = FakeNet({})
    network = module.Network(transport=httpx.MockTransport(fake.handle), resolve=fake.resolve)
    monkeypatch.setattr(module, "_network", network)
    return fake


async def get(module: ModuleType, url: str, **settings: Any) -> str:
    ctx = ToolContext(http_allow=settings.pop("allow", ["*.example.org", "api.test:8080"]))
    ctx = ctx.model_copy(update=settings)
    result: str = await module.http_get({"url": url}, ctx)
    return result


def rewire(module: ModuleType, monkeypatch: pytest.MonkeyPatch, **changes: Any) -> None:
    """Change part of the tool's network seam (the fake transport stays unless replaced)."""
    network = dataclasses.replace(module._network, **changes)
    monkeypatch.setattr(module, "_network", network)


def text_page(body: bytes, **headers: str) -> httpx.Response:
    # stream=, not content=: httpx would read (and decode) a content= body right here.
    return httpx.Response(
        200, headers={"content-type": "text/plain", **headers}, stream=httpx.ByteStream(body)
    )


# --- decoding under the byte cap --------------------------------------------------------------


async def test_a_stacked_gzip_bomb_is_cut_at_max_bytes(module: ModuleType, net: FakeNet) -> None:
    bomb = gzip_bomb(1024)  # 1 GiB inflated
    assert len(bomb) < 4096
    net.pages["https://docs.example.org/bomb"] = text_page(
        bomb, **{"content-encoding": "gzip, gzip"}
    )
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result = await get(module, "https://docs.example.org/bomb")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - start
    assert "(cut at 1000000 bytes)" in result
    assert result.endswith("\n\n" + "a" * 1_000_000)
    print(f"bomb: peak {peak / MiB:.1f} MiB, {elapsed:.2f} s")
    assert peak < 16 * MiB, f"peak {peak / MiB:.0f} MiB for a 1 MiB cap"
    assert elapsed < 2.0
    assert net.requests[0].headers["accept-encoding"] == "identity"


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),  # the zlib wrapper HTTP means by "deflate"
        ("deflate", lambda data: zlib.compress(data, wbits=-15)),  # raw deflate, also seen
        ("gzip, deflate", lambda data: zlib.compress(gzip.compress(data))),
        ("identity, gzip", gzip.compress),
        ("gzip", lambda data: gzip.compress(data[:9]) + gzip.compress(data[9:])),  # 2 members
    ],
)
async def test_encoded_bodies_decode(
    module: ModuleType, net: FakeNet, encoding: str, encode: Callable[[bytes], bytes]
) -> None:
    body = b"plain text, " * 20_000  # 240 KB: several decoding pieces
    url = "https://docs.example.org/enc"
    net.pages[url] = text_page(encode(body), **{"content-encoding": encoding})
    result = await get(module, url)
    assert result.endswith("\n\n" + body.decode())
    assert "cut at" not in result


@pytest.mark.parametrize(
    ("encoding", "body", "message"),
    [
        ("br", b"\x1b\x03\x00\xf8", "br-encoded body; http_get decodes only gzip and deflate"),
        ("zstd", b"(\xb5/\xfd", "zstd-encoded"),
        ("gzip, gzip, gzip, gzip", b"", "encoded 4 times over"),
        ("gzip", b"\x1f\x8b\x08\x00not really gzip", "gzip body that does not decode"),
    ],
)
async def test_undecodable_bodies_are_refused(
    module: ModuleType, net: FakeNet, encoding: str, body: bytes, message: str
) -> None:
    net.pages["https://docs.example.org/x"] = text_page(body, **{"content-encoding": encoding})
    with pytest.raises(ToolError, match=message):
        await get(module, "https://docs.example.org/x")


# --- where the connection goes ----------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:10.0.0.1",
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
    ],
)
async def test_an_allowed_name_with_a_private_address_is_refused(
    module: ModuleType, net: FakeNet, address: str
) -> None:
    net.dns["docs.example.org"] = [address]
    net.pages["https://docs.example.org/"] = text_page(b"internal admin page")
    with pytest.raises(ToolError, match="public internet addresses only"):
        await get(module, "https://docs.example.org/")
    assert net.requests == []


async def test_one_private_address_among_public_ones_refuses_the_host(
    module: ModuleType, net: FakeNet
) -> None:
    net.dns["docs.example.org"] = [PUBLIC, PUBLIC6, "10.0.0.7"]
    with pytest.raises(ToolError, match=r"resolves to 10\.0\.0\.7, a private address"):
        await get(module, "https://docs.example.org/")
    assert net.requests == []


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "10.0.0.1"])
async def test_private_address_literals_are_refused_even_when_allowlisted(
    module: ModuleType, net: FakeNet, host: str
) -> None:
    net.dns[host.strip("[]")] = [host.strip("[]")]
    with pytest.raises(ToolError, match="public internet addresses only"):
        await get(module, f"http://{host}/", allow=[host])
    assert net.requests == []


async def test_the_checked_address_is_the_one_connected_to(
    module: ModuleType, net: FakeNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: a second lookup would answer loopback; there is no second lookup."""
    answers = iter([[PUBLIC6, PUBLIC], ["127.0.0.1"]])

    async def rebinding(host: str, port: int) -> list[str]:
        net.lookups.append(host)
        return next(answers)

    rewire(module, monkeypatch, resolve=rebinding)
    net.pages["https://docs.example.org/page"] = text_page(b"hello")
    result = await get(module, "https://docs.example.org/page")
    assert result.endswith("\n\nhello")
    assert result.startswith("URL: https://docs.example.org/page\n")
    assert net.lookups == ["docs.example.org"]
    (request,) = net.requests
    assert request.url.host == PUBLIC6  # pinned to the first checked address
    assert request.headers["host"] == "docs.example.org"
    assert request.extensions["sni_hostname"] == "docs.example.org"  # TLS checks the name


async def test_the_next_checked_address_is_tried_when_one_refuses(
    module: ModuleType, net: FakeNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    net.dns["docs.example.org"] = [PUBLIC6, PUBLIC]

    def handle(request: httpx.Request) -> httpx.Response:
        net.requests.append(request)
        if request.url.host == PUBLIC6:
            raise httpx.ConnectError("[Errno 101] Network is unreachable")
        return text_page(b"over IPv4")

    rewire(module, monkeypatch, transport=httpx.MockTransport(handle))
    assert (await get(module, "https://docs.example.org/")).endswith("over IPv4")
    assert [r.url.host for r in net.requests] == [PUBLIC6, PUBLIC]


async def test_every_redirect_hop_is_resolved_and_checked(module: ModuleType, net: FakeNet) -> None:
    net.dns["internal.example.org"] = ["192.168.0.10"]
    net.pages["https://docs.example.org/go"] = httpx.Response(
        302, headers={"location": "https://internal.example.org/admin"}
    )
    with pytest.raises(ToolError, match=r"resolves to 192\.168\.0\.10, a private address"):
        await get(module, "https://docs.example.org/go")
    assert [net.named_url(r) for r in net.requests] == ["https://docs.example.org/go"]
    assert net.lookups == ["docs.example.org", "internal.example.org"]


@pytest.mark.parametrize(
    ("url", "allow", "message"),
    [
        ("https://docs.example.org:8443/", None, "port 8443 of docs.example.org is not allowed"),
        ("http://docs.example.org:22/", None, "port 22 of"),
        ("http://api.test/", None, "port 80 of api.test is not allowed"),
        ("http://localhost:99999/", ["localhost"], "port 99999 is not a TCP port"),
        ("http://localhost:99999/", ["localhost:99999"], "invalid port"),
        ("http://localhost:0/", ["localhost"], "port 0 is not a TCP port"),
    ],
)
async def test_ports_other_than_80_and_443_need_an_allowlist_entry(
    module: ModuleType, net: FakeNet, url: str, allow: list[str] | None, message: str
) -> None:
    with pytest.raises(ToolError, match=message) as caught:
        await get(module, url, **({"allow": allow} if allow else {}))
    assert "\n" not in str(caught.value)
    assert net.requests == []


async def test_a_port_named_in_the_allowlist_is_reachable(module: ModuleType, net: FakeNet) -> None:
    net.pages["http://api.test:8080/v1"] = text_page(b"{}", **{"content-type": "application/json"})
    assert (await get(module, "http://api.test:8080/v1")).endswith("\n\n{}")
    assert net.requests[0].url.port == 8080


async def test_a_redirect_to_an_unlisted_port_is_refused(module: ModuleType, net: FakeNet) -> None:
    net.pages["https://docs.example.org/p"] = httpx.Response(
        301, headers={"location": "https://docs.example.org:2375/containers"}
    )
    with pytest.raises(ToolError, match=r"redirected to .*port 2375 of docs\.example\.org"):
        await get(module, "https://docs.example.org/p")
    assert len(net.requests) == 1


# --- every failure is one line ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://[::1", "not a valid URL"),
        ("http://[::1]x/", "not a valid URL"),
        ("http://[zz::1]/", "not a valid URL"),
        ("http://exa mple.org/", "host 'exa%20mple.org' is not allowed"),
        ("http://\ud800.example.org/", "not a valid URL: Invalid IDNA hostname"),
        ("http://docs.example.org:port/", "not a valid URL"),
        ("javascript:alert(1)", "http:// and https:// URLs only"),
        ("//docs.example.org/x", "http:// and https:// URLs only"),
        ("https://", "no host"),
        ("", "URLs only"),
    ],
)
async def test_bad_urls_are_one_line_errors(
    module: ModuleType, net: FakeNet, url: str, message: str
) -> None:
    with pytest.raises(ToolError, match=message) as caught:
        await get(module, url)
    assert "\n" not in str(caught.value)
    assert net.requests == []


SSL_FAILED = "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed (_ssl.c:1006)"
ANYIO_GROUP = ExceptionGroup("unhandled errors in a TaskGroup", [OverflowError("port 0-65535")])


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), "could not connect to docs"),
        (httpx.ConnectTimeout("timed out"), r"timed out fetching .* \(ConnectTimeout\)"),
        (httpx.ReadTimeout("timed out"), "timed out"),
        (httpx.ConnectError(SSL_FAILED), "TLS with docs.example.org:443 failed: .*VERIFY_FAILED"),
        (httpx.RemoteProtocolError("Server disconnected\nwithout a response."), "disconnected"),
        (ANYIO_GROUP, "could not fetch .*: OverflowError: port 0-65535"),
        (OSError(99, "Cannot assign requested address"), "Cannot assign"),
    ],
)
async def test_network_failures_are_one_line_tool_errors(
    module: ModuleType, net: FakeNet, error: Exception, message: str
) -> None:
    net.pages["https://docs.example.org/"] = error
    with pytest.raises(ToolError, match=message) as caught:
        await get(module, "https://docs.example.org/")
    assert "\n" not in str(caught.value)
    assert "unhandled errors" not in str(caught.value)


async def test_a_failing_lookup_is_one_line(
    module: ModuleType, net: FakeNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_such_host(host: str, port: int) -> list[str]:
        raise OSError(-2, "Name or service not known")

    rewire(module, monkeypatch, resolve=no_such_host)
    with pytest.raises(
        ToolError, match=r"cannot resolve the host 'docs\.example\.org': .*not known"
    ):
        await get(module, "https://docs.example.org/")


async def test_the_whole_fetch_has_one_deadline(
    module: ModuleType, net: FakeNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def slow_dns(host: str, port: int) -> list[str]:
        await asyncio.sleep(30)
        return [PUBLIC]

    rewire(module, monkeypatch, resolve=slow_dns)
    start = time.perf_counter()
    with pytest.raises(ToolError, match=r"timed out after 0\.2 s"):
        await get(module, "https://docs.example.org/", timeout_s=0.2)
    assert time.perf_counter() - start < 2
