import asyncio

import pytest

from dytopo.backends.limiter import SlotLimiter


async def test_rejects_bad_capacity() -> None:
    with pytest.raises(ValueError, match="capacity"):
        SlotLimiter(0)
    with pytest.raises(ValueError, match="capacity"):
        SlotLimiter(1).resize(0)


async def test_never_more_than_capacity_and_fifo() -> None:
    limiter = SlotLimiter(2)
    order: list[int] = []
    gate = asyncio.Event()

    async def worker(i: int) -> None:
        async with limiter:
            order.append(i)
            assert limiter.in_use <= 2
            await gate.wait()

    async with asyncio.TaskGroup() as group:
        for i in range(6):
            group.create_task(worker(i))
            await asyncio.sleep(0)  # arrival order = i
        assert limiter.waiting == 4
        gate.set()
    assert order == list(range(6))
    assert limiter.max_in_use == 2
    assert limiter.in_use == 0


async def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    limiter = SlotLimiter(1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    limiter.release()
    assert limiter.in_use == 0
    assert limiter.waiting == 0
    await asyncio.wait_for(limiter.acquire(), 1)  # the slot is still there


async def test_cancel_after_grant_passes_the_slot_on() -> None:
    limiter = SlotLimiter(1)
    await limiter.acquire()
    first = asyncio.create_task(limiter.acquire())
    second = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    limiter.release()  # grants `first` ...
    first.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)  # so `second` must get the slot
    assert limiter.in_use == 1


async def test_resize_wakes_waiters() -> None:
    limiter = SlotLimiter(1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    limiter.resize(2)
    await asyncio.wait_for(waiter, 1)
    assert limiter.in_use == 2


async def test_release_without_acquire_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="without a matching"):
        SlotLimiter(1).release()
