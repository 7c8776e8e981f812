"""A FIFO concurrency cap sized to the server's slots, with a hook that times the queue.

The counting is anyio's CapacityLimiter: it serves waiters first come, first served, hands a freed
slot to the oldest waiter at once (nobody can barge in before that waiter wakes; anyio >= 4.14.2,
older releases over-grant in that window), and a waiter cancelled after its grant passes the slot
on. SlotLimiter adds the queue clock, the activity notes and a high-water mark.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Protocol

import anyio

from dytopo import activity


class QueueClock(Protocol):
    """Told when a caller starts and stops waiting for a slot (to keep queue time apart)."""

    def queued(self) -> None:
        """The caller starts waiting for a slot."""

    def served(self) -> None:
        """The caller stopped waiting (got the slot, or was cancelled)."""


queue_clock: ContextVar[QueueClock | None] = ContextVar("dytopo_queue_clock", default=None)
"""The clock `SlotLimiter.acquire` reports waits to, for the task (and its children) that set it."""


class Slot:
    """One acquisition: the borrower anyio counts, so one task may hold several slots."""


class SlotLimiter:
    """At most `capacity` holders at once; waiters are served strictly first come, first served.

    `acquire()` returns the Slot to `release()` (from any task); `async with limiter` releases
    the slot its own task entered with, so the block must exit in the task that entered it.
    """

    def __init__(self, capacity: int) -> None:
        _check(capacity)
        self._limiter = anyio.CapacityLimiter(capacity)
        self._entered: dict[asyncio.Task[Any] | None, list[Slot]] = {}
        self.max_in_use = 0
        """High-water mark of concurrent holders, for reports and tests."""

    @property
    def capacity(self) -> int:
        return int(self._limiter.total_tokens)

    @property
    def in_use(self) -> int:
        return self._limiter.borrowed_tokens

    @property
    def waiting(self) -> int:
        return self._limiter.statistics().tasks_waiting

    def resize(self, capacity: int) -> None:
        """Change the cap (e.g. once /props told the slot count); holders above it drain."""
        _check(capacity)
        self._limiter.total_tokens = capacity  # grants slots to waiters if it grew
        self.max_in_use = max(self.max_in_use, self.in_use)

    async def acquire(self) -> Slot:
        slot = Slot()
        try:
            self._limiter.acquire_on_behalf_of_nowait(slot)
        except anyio.WouldBlock:
            activity.note("waiting")
            clock = queue_clock.get()
            if clock is not None:
                clock.queued()
            try:
                await self._limiter.acquire_on_behalf_of(slot)
            finally:
                if clock is not None:
                    clock.served()
        activity.note("generating")
        self.max_in_use = max(self.max_in_use, self.in_use)
        return slot

    def release(self, slot: Slot) -> bool:
        """Free a slot; True when that woke a waiter (its task runs at the loop's next turn)."""
        waiting = self.waiting
        self._limiter.release_on_behalf_of(slot)  # RuntimeError for a slot not held
        return self.waiting < waiting

    async def __aenter__(self) -> None:
        slot = await self.acquire()
        self._entered.setdefault(asyncio.current_task(), []).append(slot)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = asyncio.current_task()
        held = self._entered.get(task)
        if not held:
            raise RuntimeError("SlotLimiter exited in a task that did not enter it")
        slot = held.pop()
        if not held:
            del self._entered[task]
        if self.release(slot) and exc_type is None:
            # Let the woken waiter send its request before this task goes on with the reply
            # (parsing, validating, tracing): else the slot idles for all that work.
            await asyncio.sleep(0)


def _check(capacity: int) -> None:
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
