"""HTTP with visible, counted retries: the one place DyTopo talks to a server."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from dytopo.backends.settings import BackendSettings
from dytopo.errors import BackendError, BackendUnavailable, ContextOverflow, MalformedReply

log = structlog.get_logger("dytopo.http")

T = TypeVar("T")

# 503 is llama-server's "Loading model"; 502/504 come from proxies in front of it.
TRANSIENT_STATUS = frozenset({429, 502, 503, 504})


class Transient(Exception):
    """A failure worth retrying: the server may heal (restart, finish loading, free a slot)."""


class TransientStatus(Transient):
    """A status worth retrying; carries the response for the final error."""

    def __init__(self, response: httpx.Response, body: str = "") -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response
        self.body = body


class TruncatedStream(Transient):
    """A reply stream that ended before `[DONE]` and before any finish reason.

    Transient: a clean end of the body mid-reply means the server (or a proxy in front of it)
    stopped while generating, e.g. it was killed or restarted; a fresh attempt can succeed.
    `chat()` retries it, since nothing was shown yet; the live `stream()` surfaces it.
    """


# Errors in the request itself (a scheme other than http/https, a URL that does not parse, a
# header httpx refuses to send): the same request fails the same way however often it is sent.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    httpx.UnsupportedProtocol,
    httpx.InvalidURL,
    httpx.LocalProtocolError,
)

# What `translate` turns into a DyTopo error.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (Transient, httpx.TransportError, httpx.InvalidURL)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, PERMANENT_ERRORS):
        return False
    return isinstance(exc, Transient | httpx.TransportError)


def build_client(settings: BackendSettings) -> httpx.AsyncClient:
    """A client whose timeouts follow the settings; the pool never queues (the limiter does)."""
    timeout = httpx.Timeout(
        connect=settings.connect_timeout_s,
        read=settings.read_timeout_s,
        write=30.0,
        pool=None,
    )
    return httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=None))


class HttpTransport:
    """JSON over HTTP to one server root, retrying transient failures with jittered backoff."""

    def __init__(self, base_url: str, settings: BackendSettings, client: httpx.AsyncClient) -> None:
        self.base_url = base_url.rstrip("/")
        self.settings = settings
        self.client = client
        self.retries = 0
        """Retries over the client's lifetime (attempts beyond the first)."""
        self.headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def send(
        self, method: str, path: str, *, json: Any = None, retry: bool = True
    ) -> tuple[httpx.Response, int]:
        """Send one request; return the response (any non-transient status) and the attempts used.

        Raises BackendUnavailable when every attempt failed on a connection error, a timeout or a
        transient status; BackendError at once when the request cannot be sent at all.
        """

        async def once() -> httpx.Response:
            response = await self.client.request(
                method, self.url(path), json=json, headers=self.headers
            )
            if response.status_code in TRANSIENT_STATUS:
                raise TransientStatus(response)
            return response

        return await self.retrying(path, once, retry=retry)

    async def retrying(
        self, path: str, operation: Callable[[], Awaitable[T]], *, retry: bool = True
    ) -> tuple[T, int]:
        """Run `operation` under the retry policy; return its result and the attempts used.

        Only Transient failures and httpx transport errors (connection, timeouts) are retried;
        errors in the request itself (PERMANENT_ERRORS) raise BackendError at once, anything
        else propagates at once.
        """
        attempts = 0
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.max_attempts if retry else 1),
            wait=wait_random_exponential(
                multiplier=self.settings.backoff_initial_s, max=self.settings.backoff_max_s
            ),
            retry=retry_if_exception(_is_transient),
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    return await operation(), attempts
        except TRANSPORT_ERRORS as exc:
            raise self.translate(path, exc, attempts) from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    def translate(self, path: str, exc: BaseException, attempts: int = 1) -> BackendError:
        """The DyTopo error for a transport failure (one of TRANSPORT_ERRORS)."""
        if isinstance(exc, PERMANENT_ERRORS):
            return self._unusable(path, exc)
        if isinstance(exc, TransientStatus):
            detail = f"HTTP {exc.response.status_code}: {exc.body[:200]}"
        else:
            detail = f"{type(exc).__name__}: {exc}"
        return self._unavailable(path, attempts, " ".join(detail.split()))

    @contextmanager
    def translating(self, path: str) -> Iterator[None]:
        """Translate transport failures raised inside the block (for requests never retried)."""
        try:
            yield
        except TRANSPORT_ERRORS as exc:
            raise self.translate(path, exc) from exc

    def _before_sleep(self, state: RetryCallState) -> None:
        self.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "backend.retry",
            url=self.base_url,
            attempt=state.attempt_number,
            max_attempts=self.settings.max_attempts,
            error=str(exc) or type(exc).__name__,
            sleep_s=round(state.upcoming_sleep, 2),
        )

    def _unavailable(self, path: str, attempts: int, last: str) -> BackendUnavailable:
        return BackendUnavailable(
            f"LLM server at {self.base_url} did not answer {path} after {attempts} attempt(s) "
            f"(last error: {last}). Check that it is running (`dytopo doctor --backend-url "
            f"{self.base_url}`), or drop --backend-url and DYTOPO_BASE_URL to use the embedded "
            "server.",
            url=self.url(path),
        )

    def _unusable(self, path: str, exc: BaseException) -> BackendError:
        url = self.url(path)
        if isinstance(exc, httpx.LocalProtocolError):
            fix = "check backend.api_key / DYTOPO_API_KEY for stray characters such as newlines"
        else:
            fix = (
                "the backend URL must be an http:// or https:// server root such as "
                "http://127.0.0.1:8080; fix --backend-url, DYTOPO_BASE_URL or backend.base_url"
            )
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return BackendError(f"cannot send a request to {url!r}: {reason} ({fix})", url=url)

    def raise_for_status(self, response: httpx.Response, path: str) -> None:
        """Translate an error status into the DyTopo error that says what to do."""
        if response.status_code >= 400:
            raise error_for(response.status_code, response.text, self.url(path))


# A request too long for the server's context, as llama-server names it (the error's `type`) and
# as OpenAI's API does (its `code`).
CONTEXT_OVERFLOW = frozenset({"exceed_context_size_error", "context_length_exceeded"})


def error_for(
    status: int, body: str, url: str, *, error: dict[str, Any] | None = None
) -> BackendError:
    """The DyTopo error for an error answer (HTTP status or an SSE `error` event); `error` is
    the error object when the caller parsed it already, else the JSON body's is read."""
    error = error_object(body) if error is None else error
    body = body[:2000]
    lowered = body.lower()
    if CONTEXT_OVERFLOW & {str(error.get("type")), str(error.get("code"))} or (
        # fallback for a server that says it only in words: llama-server's own wording
        "exceeds the available context size" in str(error.get("message") or body).lower()
    ):
        return ContextOverflow(
            f"request to {url} does not fit the server's context: {body[:300]} "
            "(lower the agent's context budget or raise --ctx-size on the server)",
            url=url,
            status=status,
            body=body,
        )
    if status == 500 and ("expected format" in lowered or "parse" in lowered):
        return MalformedReply(
            f"server could not parse the model's output: {body[:300]}",
            url=url,
            status=status,
            body=body,
        )
    hint = {
        401: "set backend.api_key or DYTOPO_API_KEY to the server's --api-key",
        403: "set backend.api_key or DYTOPO_API_KEY to the server's --api-key",
        404: "is this an OpenAI-compatible server root? (no /v1 suffix)",
        501: "this server lacks that endpoint; for embeddings pass --embed-url or set "
        "embedder.base_url to a server started with --embeddings",
    }.get(status, "see the server log")
    return BackendError(
        f"{url} answered HTTP {status}: {body[:300]} ({hint})", url=url, status=status, body=body
    )


def error_object(body: str) -> dict[str, Any]:
    """The error object of a JSON error body (`{"error": {...}}`, or a bare one); {} if none."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    error = payload.get("error", payload) if isinstance(payload, dict) else None
    return error if isinstance(error, dict) else {}
