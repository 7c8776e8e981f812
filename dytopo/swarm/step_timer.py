"""Two time limits on an agent step: its own work, and each wait for a server slot.

With more agents than server slots, the last agents wait for a slot before they run; that wait
must not eat their working time. The slot limiter reports every wait to the `queue_clock` of the
task, so one asyncio.timeout switches between the two limits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from dytopo.backends.limiter import queue_clock
from dytopo.errors import StepTimeout

T = TypeVar("T")


class StepTimer:
    """Times one step: `work_s` of its own work in all, at most `queue_s` per wait for a slot."""

    def __init__(self, work_s: float, queue_s: float | None) -> None:
        self.work_s = work_s
        self.queue_s = queue_s
        self.worked = 0.0
        self.queued_s = 0.0
        """Seconds spent waiting for slots, over the whole step."""
        self._waiting = 0
        self._wait_started = 0.0
        self._since = 0.0
        self._cm: asyncio.Timeout | None = None

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """Await `work()` under both limits; raise StepTimeout naming the one that expired."""
        self._since = _now()
        token = queue_clock.set(self)
        cm = asyncio.timeout(self.work_s)
        try:
            async with cm:
                self._cm = cm
                return await work()
        except TimeoutError as exc:
            if not cm.expired():
                raise  # the agent's own TimeoutError, not one of our limits
            self._tick()
            if self._waiting:
                waited = _now() - self._wait_started
                raise StepTimeout(
                    f"timed out after waiting {waited:.1f}s for a server slot (queue_timeout_s); "
                    "raise queue_timeout_s, or start the server with more slots"
                ) from exc
            raise StepTimeout(
                f"timed out after working {self.worked:.1f}s (agent_timeout_s); raise "
                "agent_timeout_s or lower the agent's max_output_tokens"
            ) from exc
        finally:
            self._cm = None
            queue_clock.reset(token)

    def queued(self) -> None:
        if self._frozen():
            return
        self._tick()
        self._waiting += 1
        if self._waiting == 1:
            self._wait_started = self._since
            self._reschedule()

    def served(self) -> None:
        if self._frozen():
            return
        self._tick()
        self._waiting = max(0, self._waiting - 1)
        if self._waiting == 0:
            self._reschedule()

    def _frozen(self) -> bool:
        # Once the timeout fired, keep the phase it fired in: the limiter's `served()` runs
        # while the cancellation unwinds, before `run` reports which limit expired.
        return self._cm is None or self._cm.expired()

    def _tick(self) -> None:
        now = _now()
        if self._waiting:
            self.queued_s += now - self._since
        else:
            self.worked += now - self._since
        self._since = now

    def _reschedule(self) -> None:
        assert self._cm is not None
        if self._waiting:
            limit = None if self.queue_s is None else self._since + self.queue_s
        else:
            limit = self._since + max(0.0, self.work_s - self.worked)
        self._cm.reschedule(limit)


def _now() -> float:
    return asyncio.get_running_loop().time()
