"""http_get: fetch a text page from an allowlisted host.

The URL is parsed once, by httpx, and that same parsed object is both checked and requested, so
no second parser can read `http://allowed.com@evil.com/` differently. Redirects are followed by
hand, re-checking every hop; the body is streamed and cut at ctx.max_bytes.
"""

from __future__ import annotations

import asyncio
from html.parser import HTMLParser

import httpx

from dytopo.errors import ToolError
from dytopo.tools import ToolContext, tool

MAX_REDIRECTS = 3
# Tests put an httpx.MockTransport here; None means the real network.
_transport: httpx.AsyncBaseTransport | None = None

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


def _host_allowed(host: str, allow: list[str]) -> bool:
    """Exact host names, or `*.example.org` for its subdomains (not example.org itself)."""
    host = host.lower().rstrip(".")
    for pattern in allow:
        pattern = pattern.strip().lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def _checked(url: httpx.URL, allow: list[str]) -> httpx.URL:
    if url.scheme not in ("http", "https"):
        raise ToolError(f"http_get fetches http:// and https:// URLs only, not {url.scheme!r}")
    if url.userinfo:
        raise ToolError("http_get refuses URLs with a user name or password (user@host)")
    if not url.host:
        raise ToolError("the URL has no host; give a full URL like https://example.org/page")
    # raw_host is the IDNA (xn--) form, host the Unicode one: an allowlist may use either.
    if not (_host_allowed(url.host, allow) or _host_allowed(url.raw_host.decode("ascii"), allow)):
        raise ToolError(
            f"host {url.host!r} is not allowed; http_get may fetch from: " + ", ".join(allow)
        )
    return url


def _parse(url: str, allow: list[str]) -> httpx.URL:
    try:
        return _checked(httpx.URL(url.strip()), allow)
    except httpx.InvalidURL as exc:
        raise ToolError(f"not a valid URL: {exc}") from None


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


async def _read(response: httpx.Response, url: httpx.URL, ctx: ToolContext) -> str:
    if response.status_code >= 300:
        raise ToolError(f"{url} answered HTTP {response.status_code} {response.reason_phrase}")
    mime = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if mime and not (mime.startswith("text/") or mime in _TEXT_TYPES or mime.endswith("+json")):
        raise ToolError(f"{url} is {mime}, not text; http_get reads HTML, text, JSON and XML")
    body = bytearray()
    truncated = False
    async for chunk in response.aiter_bytes():
        room = ctx.max_bytes - len(body)
        if len(chunk) > room:
            body += chunk[:room]
            truncated = True
            break
        body += chunk
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
        # The overall deadline also bounds a server that trickles bytes (httpx's own timeouts
        # are per read).
        async with (
            asyncio.timeout(ctx.timeout_s),
            httpx.AsyncClient(
                transport=_transport,
                follow_redirects=False,
                trust_env=False,  # no proxy or .netrc from the environment
                timeout=ctx.timeout_s,
                # identity: a compressed body could inflate far beyond max_bytes per chunk
                headers={"Accept-Encoding": "identity", "User-Agent": "dytopo-http_get/0.1"},
            ) as client,
        ):
            for _ in range(MAX_REDIRECTS + 1):
                async with client.stream("GET", target) as response:
                    if not response.is_redirect:
                        return await _read(response, target, ctx)
                    location = response.headers["location"]
                try:
                    target = _checked(target.join(location), ctx.http_allow)
                except (httpx.InvalidURL, ToolError) as exc:
                    raise ToolError(f"{target} redirected to {location!r}: {exc}") from None
    except TimeoutError:
        raise ToolError(f"http_get timed out after {ctx.timeout_s:g} s fetching {target}") from None
    except httpx.HTTPError as exc:
        raise ToolError(f"could not fetch {target}: {type(exc).__name__}: {exc}") from None
    raise ToolError(f"{url} redirected more than {MAX_REDIRECTS} times; giving up")
