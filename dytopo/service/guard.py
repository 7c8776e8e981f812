"""The checks before any route: the bearer token, and the body size while the body arrives."""

from __future__ import annotations

import asyncio
import hmac
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dytopo.service.settings import is_loopback

OPEN_PATHS = frozenset({"/healthz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
"""No token needed: liveness, and the API's description (it holds no run or secret)."""


async def _refuse(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def authorized(token: str | None, header: bytes) -> bool:
    """Whether an `Authorization` header value carries the service's token (any caller does
    when there is none: such a service answers only the loopback); constant time."""
    return token is None or hmac.compare_digest(header, f"Bearer {token}".encode())


def _loopback_host(value: bytes) -> bool:
    host = value.decode("latin-1")
    name = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0] or host
    return is_loopback(name)


class Guard:
    """401 without the right `Authorization: Bearer <token>` (compared in constant time); 413
    for a body over `max_body_bytes`, by its Content-Length or, when it has none (chunked),
    as soon as the bytes received pass the limit; 408 when the whole body has not arrived
    within `body_timeout_s`. The body is read here, then handed on.
    Without a token, 403 unless the request's Host is the loopback (DNS rebinding)."""

    def __init__(
        self, app: ASGIApp, *, token: str | None, max_body_bytes: int, body_timeout_s: float = 30
    ) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token is not None else None
        self.limit = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.expected is None and not _loopback_host(headers.get(b"host", b"")):
            # Without a token the only check is that the caller is on this machine; a web page
            # whose DNS name was rebound to 127.0.0.1 is, unless the Host it sends is checked.
            await _refuse(
                send,
                403,
                "without a token the service answers only requests "
                "addressed to 127.0.0.1 or localhost (or set a token)",
                [],
            )
            return
        if self.expected is not None and scope["path"] not in OPEN_PATHS:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                challenge = [(b"www-authenticate", b"Bearer")]
                await _refuse(send, 401, "missing or wrong bearer token", challenge)
                return
        too_big = f"request body larger than {self.limit} bytes"
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _refuse(send, 413, too_big, [(b"connection", b"close")])
            return
        body, message = b"", None
        try:
            # One deadline for the whole body: a byte every 2 s would pass any per-read one.
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        break  # the client went away: the app sees the disconnect
                    body += message.get("body", b"")
                    if len(body) > self.limit:
                        await _refuse(send, 413, too_big, [(b"connection", b"close")])
                        return
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            slow = f"request body not received within {self.body_timeout_s:g} s"
            await _refuse(send, 408, slow, [(b"connection", b"close")])
            return
        first: Message = (
            {"type": "http.request", "body": body, "more_body": False}
            if message["type"] == "http.request"
            else message
        )
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await receive()

        await self.app(scope, replay, send)
