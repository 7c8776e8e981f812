import asyncio
import itertools
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dytopo.backends import SlotLimiter, queue_clock
from dytopo.backends.limiter import Slot


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
    slot = await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    limiter.release(slot)
    assert limiter.in_use == 0
    assert limiter.waiting == 0
    await asyncio.wait_for(limiter.acquire(), 1)  # the slot is still there


async def test_cancel_after_grant_passes_the_slot_on() -> None:
    limiter = SlotLimiter(1)
    slot = await limiter.acquire()
    first = asyncio.create_task(limiter.acquire())
    second = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    assert limiter.release(slot)  # grants `first` ...
    assert limiter.in_use == 1  # counted from the grant on, before `first` runs
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
    assert limiter.max_in_use == 2
    await asyncio.wait_for(waiter, 1)
    assert limiter.in_use == 2


async def test_release_without_acquire_is_an_error() -> None:
    limiter = SlotLimiter(1)
    with pytest.raises(RuntimeError, match="isn't holding"):
        limiter.release(Slot())
    slot = await limiter.acquire()
    assert not limiter.release(slot)  # nobody was waiting
    with pytest.raises(RuntimeError, match="isn't holding"):
        limiter.release(slot)  # not twice
    assert limiter.in_use == 0


async def test_one_task_may_hold_several_slots() -> None:
    limiter = SlotLimiter(2)
    async with limiter:
        async with limiter:
            assert limiter.in_use == 2
        assert limiter.in_use == 1
    assert limiter.in_use == 0


async def test_a_slot_may_be_released_by_another_task() -> None:
    limiter = SlotLimiter(1)
    slot = await asyncio.create_task(limiter.acquire())
    assert limiter.in_use == 1
    limiter.release(slot)
    assert limiter.in_use == 0


async def test_leaving_lets_the_woken_waiter_send_first() -> None:
    limiter = SlotLimiter(1)
    order: list[str] = []

    async def waiter() -> None:
        async with limiter:
            order.append("waiter")

    async with limiter:
        task = asyncio.create_task(waiter())
        await asyncio.sleep(0)
    order.append("holder goes on")  # e.g. parsing its reply while the slot serves the waiter
    await task
    assert order == ["waiter", "holder goes on"]


async def test_exiting_in_a_task_that_did_not_enter_is_an_error() -> None:
    limiter = SlotLimiter(1)
    await limiter.__aenter__()
    with pytest.raises(RuntimeError, match="did not enter"):
        await asyncio.create_task(limiter.__aexit__(None, None, None))
    await limiter.__aexit__(None, None, None)
    assert limiter.in_use == 0


# --- Simultaneous cancellations: every schedule of cancels and finishes in one loop iteration ---

Action = tuple[int, str]  # (task index, "cancel" | "finish" | "arrive")


async def _play(capacity: int, waiters: int, phases: Sequence[Sequence[Action]]) -> None:
    """Holders 0..capacity-1 hold every slot, waiters queue behind them in index order; each
    phase applies its actions back to back (so their effects land in the same loop iteration),
    then the loop turns once. Afterwards every gate opens and the books must balance."""
    limiter = SlotLimiter(capacity)
    entered: list[int] = []
    gates: dict[int, asyncio.Event] = {}
    tasks: dict[int, asyncio.Task[None]] = {}
    cancelled: set[int] = set()

    async def body(i: int) -> None:
        async with limiter:
            entered.append(i)
            assert limiter.in_use <= capacity
            await gates[i].wait()

    def start(i: int) -> None:
        gates[i] = asyncio.Event()
        tasks[i] = asyncio.create_task(body(i))

    for i in range(capacity + waiters):
        start(i)
        await asyncio.sleep(0)  # arrival order = index order
    assert limiter.in_use == capacity
    assert limiter.waiting == waiters

    for phase in phases:
        for i, action in phase:
            if action == "arrive":
                start(i)
            elif action == "finish":
                gates[i].set()
            elif tasks[i].cancel():
                cancelled.add(i)
        await asyncio.sleep(0)

    for gate in gates.values():
        gate.set()
    results = await asyncio.gather(*tasks.values(), return_exceptions=True)
    for i, result in zip(tasks, results, strict=True):
        if i in cancelled:
            assert isinstance(result, asyncio.CancelledError), (i, result)
        else:
            assert result is None, (i, result)
            assert i in entered, f"task {i} was never served"
    # Waiters queued at the start are woken in grant order, so they enter in FIFO order. (A late
    # arrival may rightly slip past a waiter that was granted but has not run yet.)
    queued = [i for i in entered if capacity <= i < capacity + waiters]
    assert queued == sorted(queued), f"waiters served out of order: {queued}"
    assert limiter.in_use == 0
    assert limiter.waiting == 0
    assert limiter.max_in_use <= capacity
    for _ in range(capacity):  # every slot is still there, none was counted twice
        await asyncio.wait_for(limiter.acquire(), 0.1)
    assert limiter.in_use == capacity


def _single_phase_schedules(capacity: int, waiters: int) -> Iterator[list[Action]]:
    holder_choices = [(), ("cancel",), ("finish",)]
    waiter_choices = [(), ("cancel",)]
    choices = [holder_choices] * capacity + [waiter_choices] * waiters
    for picked in itertools.product(*choices):
        actions = [(i, a) for i, acts in enumerate(picked) for a in acts]
        if any(a == "cancel" for _, a in actions):
            yield from (list(p) for p in itertools.permutations(actions))


@pytest.mark.parametrize(("capacity", "waiters"), [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)])
async def test_holders_and_waiters_cancelled_in_the_same_iteration(
    capacity: int, waiters: int
) -> None:
    count = 0
    for schedule in _single_phase_schedules(capacity, waiters):
        await _play(capacity, waiters, [schedule])
        count += 1
    assert count > 0


@st.composite
def _schedules(draw: st.DrawFn) -> tuple[int, int, list[list[Action]]]:
    capacity = draw(st.integers(1, 3))
    waiters = draw(st.integers(1, 4))
    n = capacity + waiters
    phases: list[list[Action]] = []
    for _ in range(draw(st.integers(1, 4))):
        phase: list[Action] = []
        for _ in range(draw(st.integers(1, 4))):
            if draw(st.booleans()) and n < 10:
                phase.append((n, "arrive"))
                n += 1
            else:
                phase.append(
                    (draw(st.integers(0, n - 1)), draw(st.sampled_from(["cancel", "finish"])))
                )
        phases.append(phase)
    return capacity, waiters, phases


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_schedules())
def test_any_schedule_of_cancels_finishes_and_arrivals_keeps_the_books(
    schedule: tuple[int, int, list[list[Action]]],
) -> None:
    asyncio.run(_play(*schedule))


# --- The queue clock hook ---


class FakeClock:
    def __init__(self) -> None:
        self.events: list[str] = []

    def queued(self) -> None:
        self.events.append("queued")

    def served(self) -> None:
        self.events.append("served")


async def test_queue_clock_is_told_only_about_real_waits() -> None:
    limiter = SlotLimiter(1)
    clock = FakeClock()
    token = queue_clock.set(clock)
    try:
        slot = await limiter.acquire()  # a free slot: no wait, nothing to tell
        assert clock.events == []
        waiter = asyncio.create_task(limiter.acquire())  # copies the context: same clock
        await asyncio.sleep(0)
        assert clock.events == ["queued"]
        limiter.release(slot)
        await waiter
        assert clock.events == ["queued", "served"]
    finally:
        queue_clock.reset(token)
    limiter.release(waiter.result())


async def test_queue_clock_is_told_when_a_waiter_is_cancelled() -> None:
    limiter = SlotLimiter(1)
    slot = await limiter.acquire()
    clock = FakeClock()

    async def wait_with_clock() -> None:
        queue_clock.set(clock)
        await limiter.acquire()

    waiter = asyncio.create_task(wait_with_clock())
    await asyncio.sleep(0)
    assert clock.events == ["queued"]
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert clock.events == ["queued", "served"]
    assert queue_clock.get() is None  # set inside the task only
    limiter.release(slot)
    assert limiter.in_use == 0


async def test_no_clock_is_fine() -> None:
    limiter = SlotLimiter(1)
    slot = await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    limiter.release(slot)
    await waiter
    assert limiter.in_use == 1
