"""Reading OpenAI-style server-sent events into one ChatResponse.

DyTopo streams every chat request, even when nobody watches the tokens: llama-server only
notices a closed connection (and stops generating) while it streams, so streaming is what makes
a cancelled or timed-out request free its slot at once. httpx-sse splits the stream into events.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx
from httpx_sse import EventSource, ServerSentEvent

from dytopo.backends.http import TRANSIENT_STATUS, Transient, TruncatedStream, error_for
from dytopo.backends.types import ChatResponse, Timings, ToolCall, Usage
from dytopo.errors import MalformedReply


async def events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON object of each event until `[DONE]`.

    Raises the DyTopo error of an error event (`data: {"error": ...}` or `event: error`),
    MalformedReply for data that is not a JSON object or a body that is not an event stream,
    and TruncatedStream when the body ends before `[DONE]` and before any finish reason (the
    server stopped mid-reply; an event cut before its blank line is lost, as the SSE spec says).
    """
    url = str(response.url)
    finished = False
    async with aclosing(_server_events(response, url)) as stream:
        async for event in stream:
            if event.data == "[DONE]":
                return
            if event.event == "error":
                raise error_from_event(_loads(event.data, url, strict=False), url)
            if not event.data:
                continue  # id/retry-only events carry nothing a reply needs
            chunk = _loads(event.data, url)
            if not isinstance(chunk, dict):
                raise MalformedReply(
                    f"{url} streamed {_show(event.data)}, not a JSON object", url=url
                )
            if chunk.get("error"):
                raise error_from_event(chunk, url)
            finished = finished or _has_finish_reason(chunk)
            yield chunk
    if not finished:
        raise TruncatedStream(
            f"the reply stream from {url} ended before [DONE] and without a finish reason "
            "(the server stopped mid-reply)"
        )


async def _server_events(
    response: httpx.Response, url: str
) -> AsyncGenerator[ServerSentEvent, None]:
    """The body's events; a JSON body (a server that ignored `"stream": true`) is one event."""
    media_type = response.headers.get("content-type", "").partition(";")[0].strip()
    if media_type == "application/json":
        yield ServerSentEvent(data=(await response.aread()).decode(errors="replace"))
    elif "text/event-stream" in media_type:  # what EventSource requires (else httpx_sse.SSEError)
        async with aclosing(EventSource(response).aiter_sse()) as stream:
            async for event in stream:
                yield event
    else:
        raise MalformedReply(
            f"{url} answered a body of type {media_type or 'unknown'!r}, not an event stream "
            "(text/event-stream); is this an OpenAI-compatible server?",
            url=url,
        )


def _loads(data: str, url: str, *, strict: bool = True) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        if not strict:
            return data  # an `event: error` may carry plain text
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise MalformedReply(
            f"{url} streamed data that is not JSON ({reason}): {_show(data)}", url=url
        ) from None


def _show(data: str) -> str:
    return repr(data[:80]) + ("..." if len(data) > 80 else "")


def _has_finish_reason(chunk: dict[str, Any]) -> bool:
    choices = chunk.get("choices")
    return isinstance(choices, list) and any(
        isinstance(c, dict) and c.get("finish_reason") for c in choices
    )


def error_from_event(payload: Any, url: str) -> Exception:
    """The error an SSE error event stands for: Transient for a busy/overloaded server code.

    Accepts `{"error": {"message": ..., "code": ...}}`, `{"error": "text"}`, a bare error
    object or plain text; a code that is not an HTTP status (e.g. "context_length_exceeded")
    is kept in the message, and error_for classifies by the error object's `type` and `code`.
    """
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    code: Any = None
    if isinstance(error, dict):
        code = error.get("code")
        message = error.get("message") or error.get("type") or json.dumps(error)
    else:
        message = error
    message = " ".join(str(message).split()) or "error event without a message"
    status = _status(code)
    if code is not None and status is None:
        message = f"{code}: {message}"
    status = status or 500
    if status in TRANSIENT_STATUS:
        return Transient(f"error event {status}: {message[:200]}")
    return error_for(status, message, url, error=error if isinstance(error, dict) else {})


def _status(code: Any) -> int | None:
    """The HTTP error status an error code stands for; None when it is not one."""
    if isinstance(code, bool):
        return None
    try:
        status = int(code)
    except (TypeError, ValueError, OverflowError):
        return None
    return status if 400 <= status <= 599 else None


def usage_of(payload: dict[str, Any]) -> Usage:
    u = payload.get("usage") or {}
    details = u.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") or (payload.get("timings") or {}).get("cache_n", 0)
    return Usage(
        prompt_tokens=int(u.get("prompt_tokens", 0)),
        completion_tokens=int(u.get("completion_tokens", 0)),
        cached_tokens=int(cached or 0),
        requests=1,
    )


class Assembler:
    """Accumulates stream chunks: text, tool-call fragments, finish reason, usage, timings."""

    def __init__(self, url: str = "") -> None:
        self.url = url
        self.text: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}
        self.finish_reason = "stop"
        self.usage = Usage(requests=1)
        self.timings: Timings | None = None
        self.pieces = 0
        """Chunks that carried generated text or tool-call fragments (about one token each)."""

    def feed(self, chunk: dict[str, Any]) -> str:
        """Take one chunk; return its new text (for live display).

        A chunk of the wrong shape (a string where an object belongs, a non-numeric index)
        raises MalformedReply naming the field's error.
        """
        try:
            return self._feed(chunk)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            reason = " ".join(str(exc).split())[:200]
            raise MalformedReply(
                f"{self.url} streamed a chunk of an unexpected shape ({type(exc).__name__}: "
                f"{reason}): {_show(json.dumps(chunk))}",
                url=self.url,
            ) from None

    def _feed(self, chunk: dict[str, Any]) -> str:
        new = ""
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or choice.get("message") or {}
            if delta.get("content") or delta.get("tool_calls"):
                self.pieces += 1
            if delta.get("content"):
                new += delta["content"]
            for call in delta.get("tool_calls") or []:
                slot = self.calls.setdefault(
                    int(call.get("index", 0)), {"id": "", "name": "", "arguments": ""}
                )
                function = call.get("function") or {}
                slot["id"] = call.get("id") or slot["id"]
                slot["name"] += function.get("name") or ""
                slot["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        if chunk.get("usage"):
            self.usage = usage_of(chunk)
        if isinstance(chunk.get("timings"), dict):
            self.timings = Timings.model_validate(chunk["timings"])
        self.text.append(new)
        return new

    def result(self) -> ChatResponse:
        calls = [
            ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"] or "{}")
            for _, c in sorted(self.calls.items())
        ]
        return ChatResponse(
            content="".join(self.text),
            tool_calls=calls,
            finish_reason=self.finish_reason,
            usage=self.usage,
            timings=self.timings,
        )
