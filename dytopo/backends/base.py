"""The one interface every LLM backend implements; the scheduler sees nothing else."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Self

from dytopo.backends.types import ChatMessage, ChatRequest, ChatResponse, ServerInfo, Usage


def estimate_tokens(
    messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
) -> int:
    """A deliberately pessimistic token estimate for servers that cannot count.

    About 3 characters per token for English and JSON, plus the chat template's per-message
    overhead; it overestimates on purpose because an overflow kills a request.
    """
    chars = sum(
        len(m.content or "") + sum(len(c.arguments) + len(c.name) for c in m.tool_calls or [])
        for m in messages
    )
    if tools:
        chars += len(json.dumps(list(tools)))
    return chars // 3 + 8 * len(messages) + 16


class Backend(ABC):
    """An LLM server seen through one client.

    Implementations bound their own concurrency, retry transient failures, and account usage.
    """

    @abstractmethod
    async def connect(self) -> ServerInfo:
        """Learn the server's shape (slots, context per slot, model); idempotent."""

    @abstractmethod
    async def chat(self, request: ChatRequest) -> ChatResponse:
        """Run one chat completion."""

    @abstractmethod
    def stream(self, request: ChatRequest) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """Run one chat completion, yielding text deltas as they arrive."""

    async def count_tokens(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> int:
        """Prompt tokens these messages cost once the chat template is applied."""
        return estimate_tokens(messages, tools)

    @property
    @abstractmethod
    def usage(self) -> Usage:
        """Totals over every request this client completed."""

    async def aclose(self) -> None:
        """Release connections; safe to call twice."""
        return

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
