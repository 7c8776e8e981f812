"""A scripted backend for tests: plays replies, errors and delays; records every request.

    backend = ScriptedBackend(["first reply", Reply(delay_s=0.1), BackendUnavailable(...)])
    backend = ScriptedBackend(by_tag={"manager": [...], "researcher": [...]})
    ...
    backend.assert_complete()

A call with nothing scripted for it fails loudly (AssertionError naming the request's tag),
unless a `responder` function was given to answer the rest.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from dytopo.backends.base import Backend, estimate_tokens
from dytopo.backends.limiter import SlotLimiter
from dytopo.backends.types import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    ServerInfo,
    ToolCall,
    Usage,
)

__all__ = ["Reply", "ScriptedBackend"]


@dataclass(frozen=True)
class Reply:
    """One scripted reply; `error` is raised instead when set, after `delay_s`."""

    content: str = ""
    tool_calls: Sequence[ToolCall] = ()
    finish_reason: str = "stop"
    delay_s: float = 0.0
    error: BaseException | None = None
    completion_tokens: int | None = None


ScriptItem = str | Reply | BaseException
Responder = Callable[[ChatRequest], ScriptItem]


@dataclass
class ScriptedBackend(Backend):
    """A Backend that answers from a script instead of a server."""

    script: Iterable[ScriptItem] = ()
    by_tag: Mapping[str, Iterable[ScriptItem]] = field(default_factory=dict)
    responder: Responder | None = None
    slots: int = 2
    n_ctx_per_slot: int = 4096
    requests: list[ChatRequest] = field(default_factory=list, init=False)
    """Every request received, in arrival order."""

    def __post_init__(self) -> None:
        self._queue: deque[ScriptItem] = deque(self.script)
        self._tagged = {tag: deque(items) for tag, items in self.by_tag.items()}
        self.limiter = SlotLimiter(self.slots)
        self._usage = Usage()

    @property
    def usage(self) -> Usage:
        return self._usage

    @property
    def info(self) -> ServerInfo:
        return ServerInfo(
            base_url="scripted://",
            model="scripted",
            slots=self.slots,
            n_ctx_per_slot=self.n_ctx_per_slot,
            supports_tools=True,
        )

    async def connect(self) -> ServerInfo:
        return self.info

    def add(self, *items: ScriptItem, tag: str | None = None) -> None:
        """Append replies to the shared queue, or to one tag's queue."""
        (self._tagged.setdefault(tag, deque()) if tag else self._queue).extend(items)

    def _next(self, request: ChatRequest) -> ScriptItem:
        tagged = self._tagged.get(request.tag)
        if tagged:
            return tagged.popleft()
        if self._queue:
            return self._queue.popleft()
        if self.responder is not None:
            return self.responder(request)
        last = request.messages[-1].content if request.messages else ""
        raise AssertionError(
            f"ScriptedBackend: unexpected request #{len(self.requests)} (tag={request.tag!r}); "
            f"nothing scripted for it. Last message: {str(last)[:200]!r}"
        )

    async def chat(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        item = self._next(request)
        reply = (
            item
            if isinstance(item, Reply)
            else (Reply(error=item) if isinstance(item, BaseException) else Reply(content=item))
        )
        async with self.limiter:
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
            if reply.error is not None:
                raise reply.error
        usage = Usage(
            prompt_tokens=estimate_tokens(request.messages, request.tools),
            completion_tokens=reply.completion_tokens or max(1, len(reply.content) // 4),
            requests=1,
        )
        self._usage = self._usage + usage
        return ChatResponse(
            content=reply.content,
            tool_calls=list(reply.tool_calls),
            finish_reason="tool_calls" if reply.tool_calls else reply.finish_reason,
            usage=usage,
        )

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[str]]:
        reply = await self.chat(request)

        async def deltas() -> AsyncIterator[str]:
            for word in reply.content.split(" "):
                yield word + " "

        yield deltas()

    async def count_tokens(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> int:
        return estimate_tokens(messages, tools)

    @property
    def remaining(self) -> int:
        return len(self._queue) + sum(len(q) for q in self._tagged.values())

    def assert_complete(self) -> None:
        """Fail if scripted replies were never asked for."""
        if self.remaining:
            left = {t: len(q) for t, q in self._tagged.items() if q}
            raise AssertionError(
                f"ScriptedBackend: {self.remaining} scripted replies unused "
                f"(shared queue: {len(self._queue)}, by tag: {left})"
            )
