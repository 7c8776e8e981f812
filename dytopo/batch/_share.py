"""A run's share of an in-process server: the server's Backend object behind a limiter of the
run's own, as a run on a real server gets its own client limited to its share of the slots."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from dytopo.backends.base import Backend
from dytopo.backends.limiter import SlotLimiter
from dytopo.backends.types import ChatMessage, ChatRequest, ChatResponse, ServerInfo, Usage


class SlotShare(Backend):
    """`backend` for one run that may have at most `slots` requests in flight on it."""

    def __init__(self, backend: Backend, slots: int) -> None:
        self.backend = backend
        self.limiter = SlotLimiter(slots)

    async def connect(self) -> ServerInfo:
        info = await self.backend.connect()
        return info.model_copy(update={"slots": self.limiter.capacity})

    async def chat(self, request: ChatRequest) -> ChatResponse:
        async with self.limiter:
            return await self.backend.chat(request)

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[str]]:
        async with self.limiter, self.backend.stream(request) as deltas:
            yield deltas

    async def count_tokens(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> int:
        return await self.backend.count_tokens(messages, tools)

    @property
    def usage(self) -> Usage:
        return self.backend.usage
