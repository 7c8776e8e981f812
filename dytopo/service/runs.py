"""RunService: runs submitted by callers, queued, run on one shared backend, kept on disk.

    async with RunService(settings) as service:
        info = await service.submit(RunRequest(task="..."))
        async for index, event in service.events(info.id): ...
        info = await service.wait(info.id)

Every run is a task in the service's TaskGroup; `max_running` of them hold a turn at once (the
backend's slot limiter bounds the requests), the rest wait, and beyond `max_queued` waiting a
submit is refused with QueueFull. Cancelling a run cancels its task: its in-flight requests end
at once and its checkpoint keeps the last complete round. Leaving the `async with` stops every
run the same way; they are `interrupted`, and `resume` continues them (also after a restart).
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog

from dytopo.backends.base import Backend
from dytopo.backends.llamacpp import LlamaCppBackend
from dytopo.backends.settings import BackendSettings
from dytopo.embedders.base import Embedder
from dytopo.errors import (
    ConfigError,
    DyTopoError,
    NotResumable,
    QueueFull,
    RunError,
    ServiceClosed,
    UnknownTopology,
)
from dytopo.managed.resolve import endpoints
from dytopo.runner import make_embedder, run_on
from dytopo.service import catalog
from dytopo.service.admission import admit
from dytopo.service.models import TERMINAL, RunInfo, RunRequest, RunStatus
from dytopo.service.progress import Progress
from dytopo.service.settings import ServiceSettings
from dytopo.service.store import RUN_ID, RunFiles, now
from dytopo.service.tail import tail
from dytopo.swarm.checkpoint import check_resumable, read_checkpoint
from dytopo.swarm.result import RunResult
from dytopo.topology import EmbedderSpec, Topology

log = structlog.get_logger("dytopo.service")

__all__ = ["NotResumable", "QueueFull", "RunService", "ServiceClosed", "UnknownTopology"]

MAX_ERROR_CHARS = 2000
"""A run record's error line at most (the trace has the whole error)."""


@dataclass
class _Run:
    info: RunInfo
    topology: Topology | None = None
    source: Path | None = None
    from_checkpoint: bool = False
    task: asyncio.Task[None] | None = None
    cancel_requested: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)
    pulse: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        """Wake everyone following this run (a new trace line, a new status)."""
        pulse, self.pulse = self.pulse, asyncio.Event()
        pulse.set()


class RunService:
    """The runs of one service; the HTTP app and the MCP server both drive it."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        backend: Backend | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        """`backend`/`embedder`: injected ones (tests), used as they are and not closed here;
        by default the configured server, or an embedded stack started for the service."""
        self.settings = settings
        self.files = RunFiles(settings.runs_dir)
        self.backend, self.embedder = backend, embedder
        self.backend_source = "injected" if backend is not None else "not started"
        self._runs: dict[str, _Run] = {}
        self._turns = asyncio.Semaphore(settings.max_running)
        self._stack = AsyncExitStack()
        self._group: asyncio.TaskGroup | None = None
        self._closing = False
        self._durations: list[float] = []

    async def __aenter__(self) -> Self:
        self.settings.runs_dir.mkdir(parents=True, exist_ok=True)
        async with AsyncExitStack() as stack:
            if self.backend is None or self.embedder is None:
                await self._connect(stack)
            self._group = await stack.enter_async_context(asyncio.TaskGroup())
            for info in await asyncio.to_thread(self._recover):
                self._runs[info.id] = _Run(info)
                self._runs[info.id].done.set()
            await asyncio.to_thread(self._prune)
            self._stack = stack.pop_all()
        return self

    async def _connect(self, stack: AsyncExitStack) -> None:
        """One backend and embedder for every run (an embedded stack starts once, here)."""
        s = self.settings
        ends = await stack.enter_async_context(endpoints(s.backend_url, s.embed_url, model=s.model))
        backend = LlamaCppBackend(BackendSettings(base_url=ends.chat_url))
        stack.push_async_callback(backend.aclose)
        embedder = make_embedder(EmbedderSpec(), ends)
        stack.push_async_callback(embedder.aclose)
        self.backend, self.embedder = backend, embedder
        self.backend_source = f"{ends.source} {ends.chat_url}"

    def _recover(self) -> list[RunInfo]:
        infos = []
        for info in self.files.load_all():
            fixed = self.files.recovered(info)
            if fixed is not info:
                self.files.save(fixed)
            infos.append(fixed)
        return infos

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_runs()
        # Not handed the caller's exception: a TaskGroup would wrap it in an ExceptionGroup.
        # The runs were cancelled above, so the group only waits for them to write their end.
        await self._stack.aclose()

    def stop_runs(self) -> None:
        """Take no new runs and stop every run (each becomes `interrupted`, resumable)."""
        self._closing = True
        for run in self._runs.values():
            if run.task is not None and not run.task.done():
                run.task.cancel()

    # -- what callers use -------------------------------------------------------------------

    async def submit(self, request: RunRequest) -> RunInfo:
        """Queue a run. ConfigError for a refused topology or override (NotAllowed for a field
        only the operator sets, OverLimit beyond the service's limits, UnknownTopology for a
        name the folder lacks), QueueFull when too many wait."""
        self._check_open()
        s = self.settings
        admit(request, s)  # before any work: only what a caller may set, within the limits
        chosen = await asyncio.to_thread(
            catalog.choose, request, s.topologies_dir, s.default_topology
        )
        self._check_room()
        run_id = uuid.uuid4().hex[:12]
        info = RunInfo(
            id=run_id,
            status="queued",
            topology=chosen.label,
            task=request.task,
            created_at=now(),
            max_rounds=chosen.topology.max_rounds,
            progress="queued",
        )
        run = _Run(info, chosen.topology, chosen.source)
        self.files.save_topology(run_id, chosen.topology)
        self._start(run)
        return info.model_copy(deep=True)

    def get(self, run_id: str) -> RunInfo:
        """The run's record; KeyError when there is no such run."""
        return self._run(run_id).info.model_copy(deep=True)

    def runs(self) -> list[RunInfo]:
        """Every run, newest first."""
        return [r.info.model_copy(deep=True) for r in reversed(self._runs.values())]

    def page(self, limit: int, cursor: str | None = None) -> tuple[list[RunInfo], str | None]:
        """At most `limit` runs, newest first, after the run `cursor` names (the previous
        page's last); and the cursor of the next page, None on the last. ConfigError for a
        cursor that names no run (it may have been deleted since)."""
        order = list(reversed(self._runs))
        start = 0
        if cursor is not None:
            if cursor not in self._runs:
                raise ConfigError(
                    f"cursor {cursor[:40]!r} names no run (deleted since?): list again "
                    "without a cursor"
                )
            start = order.index(cursor) + 1
        ids = order[start : start + limit]
        more = start + limit < len(order)
        return [self._runs[i].info.model_copy(deep=True) for i in ids], ids[-1] if more else None

    async def wait(self, run_id: str, timeout: float | None = None) -> RunInfo:  # noqa: ASYNC109
        """The run once it ended, or as it stands after `timeout` seconds (the contract the MCP
        server and `?wait=true` share)."""
        run = self._run(run_id)
        with_deadline = asyncio.timeout(timeout)
        try:
            async with with_deadline:
                while run.info.status not in TERMINAL or not run.done.is_set():
                    await run.done.wait()
        except TimeoutError:
            if not with_deadline.expired():
                raise
        return run.info.model_copy(deep=True)

    async def cancel(self, run_id: str) -> RunInfo:
        """Stop a queued or running run at once (its in-flight requests are cancelled); a run
        that already ended is returned as it is."""
        run = self._run(run_id)
        if run.task is not None and not run.task.done():
            run.cancel_requested = True
            run.task.cancel()
            await asyncio.shield(run.done.wait())
        return run.info.model_copy(deep=True)

    async def resume(self, run_id: str) -> RunInfo:
        """Queue a stopped run again: from its last complete round, or from the start if it
        never started. ConfigError when there is nothing to resume."""
        self._check_open()
        run = self._run(run_id)
        info = run.info
        if info.status not in TERMINAL or info.status == "succeeded" or not info.resumable:
            raise NotResumable(f"run {run_id} is {info.status}: there is nothing to resume")
        self._check_room()
        # Claimed before the first await: a second resume sees `queued` and is refused, and
        # the queue bound counts this run while its checkpoint is read.
        before = (info.status, info.error, info.finished_at, info.progress)
        info.status, info.error, info.finished_at = "queued", None, None
        info.progress = "queued to resume"
        run.done = asyncio.Event()
        try:
            await asyncio.to_thread(self._prepare_resume, run)
            self._check_open()
        except BaseException:
            info.status, info.error, info.finished_at, info.progress = before
            run.done.set()
            run.notify()
            raise
        self._start(run)
        return info.model_copy(deep=True)

    def topologies(self) -> list[dict[str, Any]]:
        """The topologies callers may name: name, description, agents, mode, max_rounds."""
        return catalog.listing(self.settings.topologies_dir)

    async def events(
        self, run_id: str, after: int = -1
    ) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        """The run's trace events with their line index, after line `after`; follows a live run
        and ends once the run has ended and every line was read."""
        run = self._run(run_id)
        async for item in tail(
            self.files.trace(run_id), after, lambda: run.pulse, lambda: run.done.is_set()
        ):
            yield item

    def counts(self) -> dict[str, int]:
        """Runs running and queued now."""
        states = [r.info.status for r in self._runs.values()]
        return {"running": states.count("running"), "queued": states.count("queued")}

    # -- inside -----------------------------------------------------------------------------

    def _run(self, run_id: str) -> _Run:
        if not RUN_ID.fullmatch(run_id) or run_id not in self._runs:
            raise KeyError(run_id)
        return self._runs[run_id]

    def _check_open(self) -> None:
        if self._closing or self._group is None:
            raise ServiceClosed("the service is shutting down: submit again once it is back")

    def _check_room(self) -> None:
        s = self.settings
        active = sum(1 for r in self._runs.values() if r.info.status not in TERMINAL)
        if active >= s.max_running + s.max_queued:
            wait = self._retry_after(active)
            raise QueueFull(
                f"{active} runs are running or waiting (at most {s.max_running} run at once and "
                f"{s.max_queued} wait): try again in {wait} s",
                retry_after_s=wait,
            )

    def _retry_after(self, active: int) -> int:
        """Seconds until a turn is likely free: the recent runs' mean length per free turn."""
        recent = self._durations[-10:]
        mean = sum(recent) / len(recent) if recent else 60.0
        waiting = max(1, active - self.settings.max_running + 1)
        return max(1, min(3600, math.ceil(mean * waiting / self.settings.max_running)))

    def _start(self, run: _Run) -> None:
        assert self._group is not None
        run.cancel_requested = False  # a resumed run's `done` was renewed when it was claimed
        self._runs[run.info.id] = run
        self._changed(run, durable=True)
        run.task = self._group.create_task(self._lifecycle(run), name=f"run {run.info.id}")
        run.task.add_done_callback(lambda _: self._never_ran(run))

    def _never_ran(self, run: _Run) -> None:
        """A task cancelled before its first step never runs its body: end its run here."""
        if run.info.status not in TERMINAL:
            if run.cancel_requested:
                self._finish(run, "cancelled", error="cancelled by the caller")
            else:
                self._finish(run, "interrupted", error="the service stopped before this run")
            run.done.set()
            run.notify()
            self._prune()

    def _prepare_resume(self, run: _Run) -> None:
        info = run.info
        if not self.files.checkpoint(info.id).is_file():  # nothing kept: start it afresh
            run.topology = run.topology or self.files.load_topology(info.id)
            run.source = run.source if run.source is not None else self._source(info.id)
            run.from_checkpoint = False
            return
        cp = read_checkpoint(self.files.checkpoint(info.id))
        check_resumable(cp)
        run.topology = (
            Topology.model_validate(cp.topology)
            if cp.topology is not None
            else self.files.load_topology(info.id)
        )
        named = Path(cp.topology_path) if cp.topology_path else None
        run.source = named if named is not None and named.is_file() else self._source(info.id)
        run.from_checkpoint = True

    def _source(self, run_id: str) -> Path:
        # A checkpoint must name a file its topology came from: the copy kept with the run.
        return self.files.topology(run_id)

    def _prune(self) -> None:
        """Forget and delete the oldest finished runs beyond `keep_runs` (a run being resumed
        or still ending is not finished)."""
        finished = [r for r in self._runs.values() if r.info.status in TERMINAL and r.done.is_set()]
        for run in finished[: max(0, len(finished) - self.settings.keep_runs)]:
            del self._runs[run.info.id]
            try:
                self.files.delete(run.info.id)
            except OSError as exc:  # never raised into the TaskGroup: it would stop every run
                log.warning("service.delete_failed", run=run.info.id, error=str(exc))
                continue
            log.info("service.run_deleted", run=run.info.id, keep_runs=self.settings.keep_runs)

    def _changed(self, run: _Run, durable: bool = False) -> None:
        if durable:
            self.files.save(run.info)
        run.notify()

    async def _lifecycle(self, run: _Run) -> None:
        """Run one run to its end; never raises (the TaskGroup would stop every other run)."""
        info = run.info
        try:
            async with self._turns:
                info.status, info.started_at = "running", info.started_at or now()
                info.progress = "starting"
                self._changed(run, durable=True)
                loop = asyncio.get_running_loop()
                began = loop.time()
                result = await self._execute(run)
                self._durations.append(loop.time() - began)
            self._finish(run, "succeeded", result=result)
        except asyncio.CancelledError:
            # Not re-raised: this task ends here either way, and its record says why.
            if run.cancel_requested:
                self._finish(run, "cancelled", error="cancelled by the caller")
            else:
                self._finish(run, "interrupted", error="the service stopped during this run")
        except RunError as exc:
            self._finish(run, "failed", error=_line(exc), result=exc.partial)
        except DyTopoError as exc:
            self._finish(run, "failed", error=_line(exc))
        except Exception as exc:  # a bug: the run fails, the service and other runs go on
            log.exception("service.run_crashed", run=info.id)
            self._finish(run, "failed", error=f"unexpected {type(exc).__name__}: {_line(exc)}")
        finally:
            run.done.set()
            run.notify()
            self._prune()

    async def _execute(self, run: _Run) -> RunResult:
        assert self.backend is not None
        assert self.embedder is not None
        assert run.topology is not None
        topology, trace = run.topology, self.files.private_trace(run.info.id)
        progress = Progress(
            run.info, len(topology.agents), lambda durable: self._changed(run, durable)
        )
        cp = read_checkpoint(self.files.checkpoint(run.info.id)) if run.from_checkpoint else None
        return await run_on(
            topology,
            run.info.task,
            self.backend,
            self.embedder,
            trace_path=trace,
            base_dir=self.settings.topologies_dir,
            source=run.source or self._source(run.info.id),
            checkpoint=cp,
            observers=[progress],
        )

    def _finish(
        self, run: _Run, status: RunStatus, *, error: str | None = None, result: Any = None
    ) -> None:
        info = run.info
        info.status, info.error, info.finished_at = status, error, now()
        if isinstance(result, RunResult):
            info.final_answer = result.final_answer or None
            info.halt_reason = result.halt_reason
            usage = result.usage
            info.usage = {**usage.model_dump(), "cached_share": round(usage.cached_share, 4)}
        if status == "succeeded":
            info.progress = f"done after {info.round} round(s): {info.halt_reason}"
            info.resumable = False
        else:
            info.progress = f"{status} in round {info.round}" if info.round else status
            info.resumable = self.files.can_resume(info)
        self._changed(run, durable=True)


def _line(exc: BaseException) -> str:
    """The error as one line (a multi-line ConfigError lists several problems)."""
    return (
        "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        or type(exc).__name__
    )[:MAX_ERROR_CHARS]
