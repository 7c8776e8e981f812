"""A FIFO concurrency cap sized to the server's slots, with a hook that times the queue."""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from types import TracebackType
from typing import Protocol

from dytopo import activity


class QueueClock(Protocol):
    """Told when a caller starts and stops waiting for a slot (to keep queue time apart)."""

    def queued(self) -> None:
        """The caller starts waiting for a slot."""

    def served(self) -> None:
        """The caller stopped waiting (got the slot, or was cancelled)."""


queue_clock: ContextVar[QueueClock | None] = ContextVar("dytopo_queue_clock", default=None)
"""The clock `SlotLimiter.acquire` reports waits to, for the task (and its children) that set it."""


class SlotLimiter:
    """At most `capacity` holders at once; waiters are served strictly first come, first served.

    A slot is counted as taken the moment it is granted to a waiter, so nobody can barge in
    between the grant and the waiter waking up. A waiter cancelled after its grant hands the
    slot on; one cancelled before it leaves the queue. Either way the counters stay exact, even
    when holders and waiters are cancelled in the same loop iteration (asyncio.Semaphore gives
    neither FIFO nor that guarantee on Python 3.11). Any task may release a slot another took.
    """

    def __init__(self, capacity: int) -> None:
        _check(capacity)
        self._capacity = capacity
        self._in_use = 0
        # Insertion-ordered, so the first key is the oldest waiter; a dict (not a deque) lets a
        # cancelled waiter leave in O(1) whether or not a release already dropped it.
        self._waiters: dict[asyncio.Future[None], None] = {}
        self.max_in_use = 0
        """High-water mark of concurrent holders, for reports and tests."""

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def resize(self, capacity: int) -> None:
        """Change the cap (e.g. once /props told the slot count); holders above it drain."""
        _check(capacity)
        self._capacity = capacity
        self._wake()

    async def acquire(self) -> None:
        if self._in_use < self._capacity and not self._waiters:
            self._take()
            activity.note("generating")
            return
        activity.note("waiting")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[fut] = None
        clock = queue_clock.get()
        if clock is not None:
            clock.queued()
        try:
            await fut
            activity.note("generating")
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release()  # granted, then cancelled before it woke: pass the slot on
            else:
                fut.cancel()
                self._waiters.pop(fut, None)  # a release may already have dropped it
            raise
        finally:
            if clock is not None:
                clock.served()

    def release(self) -> bool:
        """Free a slot; True when that woke a waiter (its task runs at the loop's next turn)."""
        if self._in_use <= 0:
            raise RuntimeError("release() without a matching acquire()")
        self._in_use -= 1
        return self._wake()

    def _take(self) -> None:
        self._in_use += 1
        self.max_in_use = max(self.max_in_use, self._in_use)

    def _wake(self) -> bool:
        woke = False
        while self._waiters and self._in_use < self._capacity:
            fut = next(iter(self._waiters))
            del self._waiters[fut]
            if not fut.done():  # a cancelled waiter that has not run yet is skipped
                self._take()
                fut.set_result(None)
                woke = True
        return woke

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.release() and exc_type is None:
            # Let the woken waiter send its request before this task goes on with the reply
            # (parsing, validating, tracing): else the slot idles for all that work.
            await asyncio.sleep(0)


def _check(capacity: int) -> None:
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
