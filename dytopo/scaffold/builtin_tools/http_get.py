"""http_get: fetch a text page from an allowlisted host on the public internet.

Every hop (the URL asked for, then each redirect) passes the same checks before a byte is sent:
- the URL is parsed once, by httpx, and that parsed object is checked and requested, so no
  second parser can read `http://allowed.com@evil.com/` differently;
- the host is on the allowlist, the port is 80 or 443 unless the allowlist entry names another;
- the name is resolved once and every address must be public (no loopback, private, link-local,
  reserved or multicast address, IPv4 carried inside IPv6 included). The connection then goes to
  that checked address, with the name kept in the Host header and TLS SNI, so a DNS answer that
  changes between check and connect (rebinding) is never used.
The body is read raw and decoded here, under the byte cap, so a compressed body cannot inflate
past ctx.max_bytes. Every failure is a ToolError of one line.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser

import httpx

from dytopo.errors import ToolError
from dytopo.tools import ToolContext, tool

MAX_REDIRECTS = 3
DEFAULT_PORTS = (80, 443)
# Stacked encodings past this are refused: no honest server nests them.
MAX_ENCODINGS = 3
# Decoded bytes produced per step of each decoding layer: what bounds memory under a bomb.
_PIECE = 64 * 1024
# Addresses tried, in the resolver's order, when connecting fails.
_MAX_ADDRESSES = 4

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

_TEXT_TYPES = (
    "application/json",
    "application/xml",
    "application/xhtml+xml",
    "application/javascript",
    "application/x-yaml",
    "application/yaml",
)
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_SKIPPED_TAGS = {"script", "style", "noscript", "template", "svg", "head"}
_BLOCK_TAGS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "section"}
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


# --- where http_get may go ------------------------------------------------------------------


def is_public(ip: IPAddress) -> bool:
    """True only for an address on the public internet; IPv4 embedded in IPv6 must be too."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and not is_public(embedded):
            return False
    # is_global alone lets some multicast and reserved ranges through.
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


async def _system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Network:
    """How http_get reaches hosts. Only tests swap the module's `_network` (an
    httpx.MockTransport, a fake resolver, a loopback test server): no topology setting can
    point http_get at a private address."""

    transport: httpx.AsyncBaseTransport | None = None
    """None: httpx's real transport."""
    resolve: Resolver = _system_resolve
    reachable: Callable[[IPAddress], bool] = is_public


_network = Network()


@dataclass(frozen=True)
class _Rule:
    host: str
    """Lower case, no trailing dot; `*.example.org` matches its subdomains only."""
    port: int | None
    """None: the web's ports 80 and 443."""

    @classmethod
    def parse(cls, entry: str) -> _Rule:
        text = entry.strip().lower()
        host, port = text, ""
        if text.startswith("["):  # [2001:db8::1] or [2001:db8::1]:8080
            host, _, rest = text[1:].partition("]")
            port = rest.removeprefix(":")
        elif text.count(":") == 1:
            host, _, port = text.partition(":")
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ToolError(f"http_allow entry {entry!r} names an invalid port; e.g. 'host:8080'")
        return cls(host.rstrip("."), int(port) if port else None)

    def matches_host(self, host: str) -> bool:
        if self.host.startswith("*."):
            return host.endswith(self.host[1:]) and len(host) > len(self.host) - 1
        return host == self.host

    def matches(self, host: str, port: int) -> bool:
        wanted = port in DEFAULT_PORTS if self.port is None else port == self.port
        return wanted and self.matches_host(host)


def _port(url: httpx.URL) -> int:
    if url.port is not None:  # port 0 too
        return url.port
    return 443 if url.scheme == "https" else 80


def _checked(url: httpx.URL, allow: list[str]) -> httpx.URL:
    if url.scheme not in ("http", "https"):
        raise ToolError(f"http_get fetches http:// and https:// URLs only, not {url.scheme!r}")
    if url.userinfo:
        raise ToolError("http_get refuses URLs with a user name or password (user@host)")
    if not url.host:
        raise ToolError("the URL has no host; give a full URL like https://example.org/page")
    rules = [_Rule.parse(entry) for entry in allow]
    # raw_host is the IDNA (xn--) form, host the Unicode one: an allowlist may use either.
    names = {url.host.lower().rstrip("."), url.raw_host.decode("ascii").lower().rstrip(".")}
    port = _port(url)
    if not 0 < port < 65536:
        raise ToolError(f"port {port} is not a TCP port; ports run from 1 to 65535")
    if not any(rule.matches(name, port) for rule in rules for name in names):
        if any(rule.matches_host(name) for rule in rules for name in names):
            raise ToolError(
                f"port {port} of {url.host} is not allowed; http_get uses ports 80 and 443 "
                f"unless the allowlist entry names one (e.g. '{url.host}:{port}')"
            )
        raise ToolError(
            f"host {url.host!r} is not allowed; http_get may fetch from: " + ", ".join(allow)
        )
    return url


def _parse(url: str, allow: list[str]) -> httpx.URL:
    try:
        return _checked(httpx.URL(url.strip()), allow)
    except (httpx.InvalidURL, ValueError) as exc:  # ValueError: e.g. a name IDNA refuses
        raise ToolError(f"not a valid URL: {_one_line(exc)}") from None


async def _addresses(url: httpx.URL) -> list[str]:
    """The checked addresses of the URL's host, to connect to instead of the name."""
    host = url.raw_host.decode("ascii")
    try:
        found = await _network.resolve(host, _port(url))
    except (OSError, UnicodeError) as exc:
        raise ToolError(f"cannot resolve the host {url.host!r}: {_one_line(exc)}") from None
    if not found:
        raise ToolError(f"the host {url.host!r} has no address")
    for address in found:
        ip = ipaddress.ip_address(address)
        # One bad answer refuses the host: whoever runs its DNS chose to send it.
        if not _network.reachable(ip):
            raise ToolError(
                f"{url.host} resolves to {ip}, a {_kind(ip)} address; http_get fetches from "
                "public internet addresses only"
            )
    return list(dict.fromkeys(found))[:_MAX_ADDRESSES]


def _kind(ip: IPAddress) -> str:
    for kind in ("loopback", "link_local", "multicast", "unspecified", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return "non-public"


# --- reading the body -----------------------------------------------------------------------


class _Inflater:
    """One gzip or deflate layer, decoded in pieces of at most _PIECE bytes (zlib max_length)."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._gzip = encoding in ("gzip", "x-gzip")
        self._z: zlib._Decompress | None = None

    def _start(self, data: bytes) -> zlib._Decompress:
        if self._gzip:
            return zlib.decompressobj(zlib.MAX_WBITS | 16)
        # "deflate" means zlib-wrapped, but some servers send a raw deflate stream.
        wrapped = len(data) >= 2 and data[0] & 0x0F == 8 and int.from_bytes(data[:2]) % 31 == 0
        return zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)

    def feed(self, data: bytes) -> Iterator[bytes]:
        pending = data
        while True:
            if self._z is None or (self._z.eof and self._gzip):  # gzip may hold several members
                pending = (self._z.unused_data if self._z else b"") + pending
                if not pending:
                    return
                self._z = self._start(pending)
            if self._z.eof:
                return  # bytes after the end of a deflate stream mean nothing
            before = len(pending)
            out = self._z.decompress(pending, _PIECE)
            pending = self._z.unconsumed_tail
            if out:
                yield out
            elif not pending or len(pending) == before:
                return


def _decoders(response: httpx.Response, url: httpx.URL) -> list[_Inflater]:
    """Outermost layer first: the header lists encodings in the order they were applied."""
    header = response.headers.get("content-encoding", "")
    layers = [e.strip().lower() for e in header.split(",") if e.strip().lower() != "identity"]
    layers = [e for e in layers if e]
    unknown = [e for e in layers if e not in ("gzip", "x-gzip", "deflate")]
    if unknown:
        raise ToolError(
            f"{url} sent a {unknown[0]}-encoded body; http_get decodes only gzip and deflate"
        )
    if len(layers) > MAX_ENCODINGS:
        raise ToolError(f"{url} sent a body encoded {len(layers)} times over; refused")
    return [_Inflater(e) for e in reversed(layers)]


def _decode(layers: list[_Inflater], data: bytes) -> Iterator[bytes]:
    if not layers:
        yield data
        return
    for piece in layers[0].feed(data):
        yield from _decode(layers[1:], piece)


async def _body(response: httpx.Response, url: httpx.URL, limit: int) -> tuple[bytes, bool]:
    """At most `limit` decoded bytes, and whether there was more."""
    layers = _decoders(response, url)
    body = bytearray()
    raw = 0
    try:
        async for chunk in response.aiter_raw():
            raw += len(chunk)
            for piece in _decode(layers, chunk):
                room = limit - len(body)
                if len(piece) > room:
                    body += piece[:room]
                    return bytes(body), True
                body += piece
            if raw > limit + _PIECE:  # compressed data that decodes to next to nothing
                return bytes(body), True
    except zlib.error as exc:
        encoding = ", ".join(layer.encoding for layer in layers)
        raise ToolError(f"{url} sent a {encoding} body that does not decode: {exc}") from None
    return bytes(body), False


async def _read(response: httpx.Response, url: httpx.URL, ctx: ToolContext) -> str:
    if response.status_code >= 300:
        raise ToolError(f"{url} answered HTTP {response.status_code} {response.reason_phrase}")
    mime = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if mime and not (mime.startswith("text/") or mime in _TEXT_TYPES or mime.endswith("+json")):
        raise ToolError(f"{url} is {mime}, not text; http_get reads HTML, text, JSON and XML")
    body, truncated = await _body(response, url, ctx.max_bytes)
    if b"\x00" in body:
        raise ToolError(f"{url} sent binary data; http_get reads text only")
    try:
        text = body.decode(response.charset_encoding or "utf-8", errors="replace")
    except LookupError:  # an unknown charset name in the header
        text = body.decode("utf-8", errors="replace")
    if mime in _HTML_TYPES:
        text = _html_to_text(text)
    note = f" (cut at {ctx.max_bytes} bytes)" if truncated else ""
    head = f"URL: {url}\nStatus: {response.status_code}\nContent-Type: {mime or 'unknown'}{note}"
    return f"{head}\n\n{text}"


class _TextExtractor(HTMLParser):
    """Visible text of an HTML page: markup costs the model tokens and tells it little."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping = max(self._skipping - 1, 0)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)

    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self.parts).splitlines())
        return "\n".join(line for line in lines if line)


def _html_to_text(html: str) -> str:
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return parser.text()


# --- fetching -------------------------------------------------------------------------------


async def _open(client: httpx.AsyncClient, url: httpx.URL) -> httpx.Response:
    """GET `url` from one of its checked addresses, never from a second DNS answer."""
    last: httpx.ConnectError | None = None
    for address in await _addresses(url):
        request = client.build_request(
            "GET",
            url.copy_with(host=address),
            headers={"Host": url.netloc.decode("ascii")},
            # The certificate is verified against the name, not the address.
            extensions={"sni_hostname": url.raw_host.decode("ascii")},
        )
        try:
            return await client.send(request, stream=True)
        except httpx.ConnectError as exc:
            last = exc
    assert last is not None  # _addresses returns at least one address
    raise last


async def _fetch(target: httpx.URL, ctx: ToolContext) -> str:
    async with httpx.AsyncClient(
        transport=_network.transport,
        follow_redirects=False,
        trust_env=False,  # no proxy or .netrc from the environment
        timeout=ctx.timeout_s,
        # identity: the body is decoded here, under the byte cap, but ask for none anyway
        headers={"Accept-Encoding": "identity", "User-Agent": "dytopo-http_get/0.2"},
    ) as client:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = await _open(client, target)
                try:
                    if not response.is_redirect:
                        return await _read(response, target, ctx)
                    location = response.headers["location"]
                finally:
                    await response.aclose()
            except ToolError:
                raise
            except Exception as exc:  # whatever the network stack raises becomes one line
                raise _failure(exc, target) from None
            try:
                target = _checked(target.join(location), ctx.http_allow)
            except (httpx.InvalidURL, ValueError, ToolError) as exc:
                raise ToolError(f"{target} redirected to {location!r}: {exc}") from None
    raise ToolError(f"{target} redirected more than {MAX_REDIRECTS} times; giving up")


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]  # anyio's connection attempts arrive as a group
    return exc


def _one_line(exc: BaseException) -> str:
    exc = _leaf(exc)
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _failure(exc: BaseException, url: httpx.URL) -> ToolError:
    where = f"{url.host}:{_port(url)}"
    exc = _leaf(exc)
    reason = _one_line(exc)
    if isinstance(exc, httpx.TimeoutException):
        return ToolError(f"http_get timed out fetching {url} ({type(exc).__name__})")
    if isinstance(exc, httpx.ConnectError):
        if "SSL" in reason or "certificate" in reason.lower():
            return ToolError(f"TLS with {where} failed: {reason}")
        return ToolError(f"could not connect to {where}: {reason}")
    return ToolError(f"could not fetch {url}: {type(exc).__name__}: {reason}")


@tool
async def http_get(url: str, ctx: ToolContext) -> str:
    """Fetch a web page or text resource (HTTP GET) from an allowed host; returns its text.

    Args:
        url: a full http:// or https:// URL, e.g. "https://docs.python.org/3/library/ast.html".
    """
    if not ctx.http_allow:
        raise ToolError("http_get is disabled: no host is allowed (tool_settings.http_allow)")
    target = _parse(url, ctx.http_allow)
    try:
        # The overall deadline also bounds DNS and a server that trickles bytes (httpx's own
        # timeouts are per read).
        async with asyncio.timeout(ctx.timeout_s):
            return await _fetch(target, ctx)
    except TimeoutError:
        raise ToolError(f"http_get timed out after {ctx.timeout_s:g} s fetching {target}") from None
