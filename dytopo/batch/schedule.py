"""A batch over a pool of servers: where each run goes, what happens when a server dies.

    records = await run_pool(pool, todo, LocalExecutor(spec), store)

Each pending (item, mode) pair goes, in order, to the alive server with the most free slots
(`BackendPool.place`) as soon as one has room, and runs there to its end (an executor runs it:
in this process, or as a Ray task). Its record is graded and appended as it ends.

A run that fails while its server no longer answers /health is not a record: the server is
marked dead (no new run goes to it) and the run goes back to the head of the queue, to continue
from its last checkpoint on another server. A run that fails for its own reasons (its server
answers) is a record with its error. When no server is left, the batch stops with
PoolExhausted; the records written so far stay, and the same batch later runs only the rest.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from dytopo.batch.models import BatchItem, RunRecord
from dytopo.batch.pool import BackendPool, PoolServer
from dytopo.batch.run import Grader, trace_name
from dytopo.batch.store import RecordStore
from dytopo.errors import BackendError, ManagedServerError, PoolExhausted
from dytopo.routing.config import Mode
from dytopo.topology import Topology

log = structlog.get_logger("dytopo.batch")


@dataclass(frozen=True)
class RunSpec:
    """What every run of a batch shares, whichever executor runs it."""

    topology: Topology
    traces_dir: Path
    embed_url: str | None = None
    base_dir: Path | None = None
    source: Path | None = None
    trust_topology: bool = False

    def trace(self, item: BatchItem, mode: Mode) -> Path:
        return self.traces_dir / trace_name(item.id, mode)


class Executor(Protocol):
    """Runs one pair on one server and returns its record (`run_one`'s contract: a run that
    fails part-way is a record; an error that concerns every run is raised)."""

    async def __call__(self, item: BatchItem, mode: Mode, server: PoolServer) -> RunRecord: ...


Started = Callable[[BatchItem, Mode, PoolServer], None]
Moved = Callable[[BatchItem, Mode, PoolServer, str], None]
"""A run left a dead server (its item, mode, that server and the run's last error)."""


async def run_pool(
    pool: BackendPool,
    todo: Sequence[tuple[BatchItem, Mode]],
    execute: Executor,
    store: RecordStore,
    *,
    grader: Grader | None = None,
    on_start: Started | None = None,
    on_record: Callable[[RunRecord], None] | None = None,
    on_moved: Moved | None = None,
) -> list[RunRecord]:
    """Run every pair of `todo` over `pool` and return their records, in the order they ended
    (each appended to `store` as it ends). PoolExhausted when every server died first; any
    error that concerns every run (raised by the executor while its server answers) stops
    the batch and is raised, once the other runs were stopped."""
    dispatch = _Dispatch(pool, execute, store, grader, on_start, on_record, on_moved)
    return await dispatch.run(todo)


class _Dispatch:
    def __init__(
        self,
        pool: BackendPool,
        execute: Executor,
        store: RecordStore,
        grader: Grader | None,
        on_start: Started | None,
        on_record: Callable[[RunRecord], None] | None,
        on_moved: Moved | None,
    ) -> None:
        self.pool, self.execute, self.store, self.grader = pool, execute, store, grader
        self.on_start, self.on_record, self.on_moved = on_start, on_record, on_moved
        self.queue: deque[tuple[BatchItem, Mode]] = deque()
        self.running: set[asyncio.Task[None]] = set()
        self.changed = asyncio.Event()
        self.fatal: Exception | None = None
        self.written: list[RunRecord] = []

    async def run(self, todo: Sequence[tuple[BatchItem, Mode]]) -> list[RunRecord]:
        self.queue.extend(todo)
        # The runs' tasks never raise (see `_one`): a failure reaches this loop as `fatal`,
        # which stops the rest and is raised alone, never as an ExceptionGroup.
        async with asyncio.TaskGroup() as group:
            watcher = group.create_task(self.pool.watch())
            try:
                await self._dispatch(group)
            finally:
                watcher.cancel()
                for task in self.running:
                    task.cancel()
        if self.fatal is not None:
            raise self.fatal
        return self.written

    async def _dispatch(self, group: asyncio.TaskGroup) -> None:
        while True:
            self.changed.clear()  # before looking: a run ending from here on wakes the wait
            if self.fatal is not None or not (self.queue or self.running):
                return
            if self.queue and not self.pool.alive:
                names = ", ".join(s.name for s in self.pool.servers)
                self.fatal = PoolExhausted(
                    f"no server of the batch answers any more ({names}): {len(self.queue)} "
                    "runs not done"
                )
                return
            while self.queue and (server := self.pool.place()) is not None:
                item, mode = self.queue.popleft()
                self.pool.take(server)
                if self.on_start is not None:
                    self.on_start(item, mode, server)
                task = group.create_task(self._one(item, mode, server))
                self.running.add(task)
                task.add_done_callback(self._ended)
            await self.changed.wait()

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.running.discard(task)
        self.changed.set()

    async def _one(self, item: BatchItem, mode: Mode, server: PoolServer) -> None:
        try:
            try:
                record = await self.execute(item, mode, server)
            except (BackendError, ManagedServerError) as exc:
                if await self.pool.check(server):
                    raise
                return self._move(item, mode, server, _line(exc))
            if not record.ok and not await self.pool.check(server):
                return self._move(item, mode, server, record.error)
            record = record.model_copy(update={"server": server.name})
            if self.grader is not None:
                grade = await asyncio.to_thread(self.grader, item, record)
                record = record.model_copy(update={"grade": grade})
            self.store.append(record)
            server.served += 1
            self.written.append(record)
            if self.on_record is not None:
                self.on_record(record)
        except Exception as exc:  # handed to the dispatch loop, raised there alone
            if self.fatal is None:
                self.fatal = exc
        finally:
            self.pool.give(server)

    def _move(self, item: BatchItem, mode: Mode, server: PoolServer, error: str) -> None:
        """Queue the run first again: it continues from its checkpoint on another server."""
        server.moved_off += 1
        log.info("batch.run_moved", item=item.id, mode=mode, server=server.name, error=error)
        self.queue.appendleft((item, mode))
        if self.on_moved is not None:
            self.on_moved(item, mode, server, error)


def _line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]
