"""A scripted backend for tests: plays replies, errors and delays; records every request.

    backend = ScriptedBackend(["first reply", Reply(delay_s=0.1), BackendUnavailable(...)])
    backend = ScriptedBackend(by_tag={"manager": [...], "researcher": [...]})
    ...
    backend.assert_complete()

It is strict, so that a test cannot pass by accident:

- A request whose prompt (counted by `count_tokens`, as the library's packing counts it) plus its
  `max_tokens` exceeds `n_ctx_per_slot` is refused with `ContextOverflow`, the error the real
  client raises when llama-server refuses it. No scripted reply is used up by it.
- A request with nothing scripted for it (and no `responder`) raises `UnexpectedCall`.
- Both are recorded (`overflows`, `unexpected`) even when the code under test swallows the error
  (the scheduler records a failing agent step and carries on), and `assert_complete()` fails if
  any happened, or if scripted replies were never asked for.

Script a `ContextOverflow(...)` item to test how the library handles an overflow on purpose: a
scripted error is expected, not recorded.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from dytopo.backends.base import Backend, estimate_tokens
from dytopo.backends.http import error_for
from dytopo.backends.limiter import SlotLimiter
from dytopo.backends.meter import admit, settle
from dytopo.backends.types import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    ServerInfo,
    ToolCall,
    Usage,
)
from dytopo.errors import ContextOverflow

__all__ = ["Reply", "ScriptedBackend", "UnexpectedCall"]

URL = "scripted://v1/chat/completions"


@dataclass(frozen=True)
class Reply:
    """One scripted reply; `error` is raised instead when set, after `delay_s`."""

    content: str = ""
    tool_calls: Sequence[ToolCall] = ()
    finish_reason: str = "stop"
    delay_s: float = 0.0
    error: BaseException | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    """Prompt tokens the reply reports as served from the server's cache (capped at the prompt)."""


ScriptItem = str | Reply | BaseException
Responder = Callable[[ChatRequest], ScriptItem]


class UnexpectedCall(AssertionError):
    """A request arrived with nothing scripted for it: the script and the code disagree."""

    def __init__(self, message: str, request: ChatRequest) -> None:
        super().__init__(message)
        self.request = request


def _describe(number: int, request: ChatRequest) -> str:
    last = request.messages[-1].content if request.messages else ""
    return f"request #{number} (tag={request.tag!r}, last message {str(last)[:120]!r})"


@dataclass
class ScriptedBackend(Backend):
    """A Backend that answers from a script instead of a server."""

    script: Iterable[ScriptItem] = ()
    by_tag: Mapping[str, Iterable[ScriptItem]] = field(default_factory=dict)
    responder: Responder | None = None
    slots: int = 2
    n_ctx_per_slot: int = 4096
    requests: list[ChatRequest] = field(default_factory=list, init=False)
    """Every request received, in arrival order (refused ones included)."""
    unexpected: list[str] = field(default_factory=list, init=False)
    """Requests that had nothing scripted for them, described."""
    overflows: list[str] = field(default_factory=list, init=False)
    """Requests refused for not fitting `n_ctx_per_slot`, described with their token counts."""

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
        where = _describe(len(self.requests), request)
        self.unexpected.append(where)
        raise UnexpectedCall(f"ScriptedBackend: unexpected {where}; nothing scripted", request)

    async def _check_fits(self, request: ChatRequest) -> None:
        prompt = await self.count_tokens(request.messages, request.tools)
        if prompt + request.max_tokens <= self.n_ctx_per_slot:
            return
        needed = f"{prompt} prompt + {request.max_tokens} max_tokens > {self.n_ctx_per_slot}"
        self.overflows.append(f"{_describe(len(self.requests), request)}: {needed}")
        # The body llama-server sends, so the error is built exactly as the real client builds it.
        body = json.dumps(
            {
                "error": {
                    "code": 400,
                    "message": f"the request exceeds the available context size ({needed})",
                    "type": "exceed_context_size_error",
                    "n_prompt_tokens": prompt,
                    "n_ctx": self.n_ctx_per_slot,
                }
            }
        )
        error = error_for(400, body, URL)
        assert isinstance(error, ContextOverflow)
        raise error

    async def chat(self, request: ChatRequest) -> ChatResponse:
        await admit(self, request)  # the run's token cap, as the real client checks it
        self.requests.append(request)
        await self._check_fits(request)
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
        prompt = await self.count_tokens(request.messages, request.tools)
        usage = Usage(
            prompt_tokens=prompt,
            completion_tokens=reply.completion_tokens or max(1, len(reply.content) // 4),
            cached_tokens=min(reply.cached_tokens, prompt),
            requests=1,
        )
        self._usage = self._usage + usage
        settle(usage)
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
        """Fail if scripted replies were never asked for, or any request was unexpected or did
        not fit the context, even if the code under test swallowed that error."""
        problems = []
        if self.remaining:
            left = {t: len(q) for t, q in self._tagged.items() if q}
            problems.append(
                f"{self.remaining} scripted replies unused "
                f"(shared queue: {len(self._queue)}, by tag: {left})"
            )
        problems += [f"unexpected {u}" for u in self.unexpected]
        problems += [f"context overflow on {o}" for o in self.overflows]
        if problems:
            raise AssertionError("ScriptedBackend: " + "; ".join(problems))
