"""Reading OpenAI-style server-sent events into one ChatResponse.

DyTopo streams every chat request, even when nobody watches the tokens: llama-server only
notices a closed connection (and stops generating) while it streams, so streaming is what makes
a cancelled or timed-out request free its slot at once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from dytopo.backends.http import error_for
from dytopo.backends.types import ChatResponse, Timings, ToolCall, Usage


async def events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """JSON payloads of `data:` lines until `[DONE]`; an `error` event raises its DyTopo error."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        chunk = json.loads(data)
        if isinstance(chunk, dict) and chunk.get("error"):
            error = chunk["error"]
            message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
            status = int(error.get("code", 500)) if isinstance(error, dict) else 500
            raise error_for(status, message, str(response.url))
        yield chunk


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

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}
        self.finish_reason = "stop"
        self.usage = Usage(requests=1)
        self.timings: Timings | None = None

    def feed(self, chunk: dict[str, Any]) -> str:
        """Take one chunk; return its new text (for live display)."""
        new = ""
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or choice.get("message") or {}
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
