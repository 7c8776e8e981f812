"""A FIFO concurrency cap sized to the server's slots."""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType


class SlotLimiter:
    """At most `capacity` holders at once; waiters are served strictly first come, first served.

    A waiter cancelled after it was granted a slot hands the slot on, so cancellation can never
    leak capacity (asyncio.Semaphore gives neither guarantee on Python 3.11).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
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
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._wake()

    async def acquire(self) -> None:
        if self._in_use < self._capacity and not self._waiters:
            self._take()
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release()  # granted, then cancelled: pass the slot on
            else:
                fut.cancel()
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        if self._in_use <= 0:
            raise RuntimeError("release() without a matching acquire()")
        self._in_use -= 1
        self._wake()

    def _take(self) -> None:
        self._in_use += 1
        self.max_in_use = max(self.max_in_use, self._in_use)

    def _wake(self) -> None:
        while self._waiters and self._in_use < self._capacity:
            fut = self._waiters.popleft()
            if not fut.done():
                self._take()
                fut.set_result(None)

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
