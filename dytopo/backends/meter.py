"""The run's token cap, checked before every request.

`settle` and `spend_abandoned` (a request that never completed: cancelled, cut short, failed
mid-stream) are also the one path by which usage is booked: each hands the request's usage to
`usage_sink`, the step or manager duty that sent it (`with usage_to(...)`), so the run's usage,
its steps', the meter's and the checkpoint's all come from the same counts.

A run with `run_token_budget` puts a TokenMeter in `run_meter` for its duration. Every backend
calls `await admit(self, request)` before it sends a request and `settle(usage)` once it has the
reply's usage. A request is refused (TokenCapReached) when the tokens used so far, plus what the
requests in flight may still use (their prompt and their whole max_tokens), plus its own prompt
would pass the limit. So a run never exceeds its cap by more than one request's max_tokens, even
with agents running concurrently. Agent and decision requests stop at cap - reserve; the final
answer may use the reserve. Outside a capped run both calls do nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from dytopo.backends.base import Backend
from dytopo.backends.types import ChatRequest, Usage
from dytopo.errors import TokenCapReached


@dataclass
class TokenMeter:
    """Tokens of one run against its cap."""

    cap: int
    reserve: int = 0
    """Kept for the final answer: other requests are admitted only up to cap - reserve."""
    used: int = 0
    """Prompt + completion tokens of every request that completed."""
    final: bool = False
    """True once the run asks for its final answer, which may use the reserve."""
    refused: str = ""
    """Why the first request was refused; the run halts (reason `budget`) once it is set."""
    _inflight: dict[asyncio.Task[object], int] = field(default_factory=dict)
    """Per task (a step's requests run one after another): prompt + max_tokens of its request."""

    @property
    def limit(self) -> int:
        return self.cap if self.final else self.cap - self.reserve

    @property
    def inflight(self) -> int:
        return sum(self._inflight.values())

    def admit(self, prompt: int, max_tokens: int, who: str) -> None:
        """Reserve room for one request, or raise TokenCapReached."""
        task = _task()
        # A request that raised never settled; its task's next request (or its end) drops it.
        self._inflight.pop(task, None)
        for done in [t for t in self._inflight if t.done()]:
            del self._inflight[done]
        if self.used + self.inflight + prompt > self.limit:
            room = max(0, self.limit - self.used - self.inflight)
            kept = "" if self.final else f", {self.reserve} kept for the final answer"
            message = (
                f"run_token_budget {self.cap}: {who or 'a request'} needs {prompt} prompt tokens "
                f"but {room} are left ({self.used} used, {self.inflight} held by requests in "
                f"flight{kept}); raise run_token_budget to let the run go further"
            )
            self.refused = self.refused or message
            raise TokenCapReached(message)
        self._inflight[task] = prompt + max_tokens

    def settle(self, usage: Usage) -> None:
        """Replace the current task's reservation by what its request really used."""
        self._inflight.pop(_task(), None)
        self.used += usage.prompt_tokens + usage.completion_tokens

    def release(self) -> None:
        """Drop the current task's reservation (its step or duty is over)."""
        self._inflight.pop(_task(), None)


def _task() -> asyncio.Task[object]:
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("the token meter is used outside an asyncio task")
    return task


run_meter: ContextVar[TokenMeter | None] = ContextVar("dytopo_run_meter", default=None)
"""The meter of the run this task belongs to (set by the run, inherited by its agents' tasks)."""


async def admit(backend: Backend, request: ChatRequest) -> None:
    """Refuse `request` with TokenCapReached when the run's token cap has no room for it."""
    meter = run_meter.get()
    if meter is None:
        return
    prompt = await backend.count_tokens(request.messages, request.tools)
    meter.admit(prompt, request.max_tokens, request.tag)


def settle(usage: Usage) -> None:
    """Count a completed request's usage against the run's token cap, and book it to the step
    or duty that sent it."""
    meter = run_meter.get()
    if meter is not None:
        meter.settle(usage)
    _book(usage)


usage_sink: ContextVar[Callable[[Usage], None] | None] = ContextVar(
    "dytopo_usage_sink", default=None
)
"""Where the usage of each request goes: the step or manager duty that sent it."""


@contextmanager
def usage_to(sink: Callable[[Usage], None]) -> Iterator[None]:
    """Book the usage of every request sent inside the block (by this task and the tasks it
    starts) to `sink`."""
    token = usage_sink.set(sink)
    try:
        yield
    finally:
        usage_sink.reset(token)


def spend_abandoned(usage: Usage) -> None:
    """Count a request that never completed: the server processed its prompt and generated
    what streamed before it stopped, and none of that comes back in a reply's usage."""
    meter = run_meter.get()
    if meter is not None:
        meter.used += usage.prompt_tokens + usage.completion_tokens
    _book(usage)


def _book(usage: Usage) -> None:
    sink = usage_sink.get()
    if sink is not None:
        sink(usage)
