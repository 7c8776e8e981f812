"""The Ray executor: each run of a pooled batch as a Ray task (`dytopo batch --ray`).

Each llama-server is a Ray custom resource `dytopo_server_<i>` (i: its place in the pool,
the order of --backend-url) with as many units as it has slots. A run asks for its share
(`per_run`) of its server's resource, so Ray never places more runs on a server than it can
serve, whoever submits them. The task calls the same `run_one` as the local executor (data in,
a record out); the worker writes the run's trace and checkpoint and sends both back as text,
and the driver writes them under OUT/traces, so a run on a remote node leaves its files with
the driver too. A worker that dies has its run retried by Ray (`max_retries`), continuing from
its checkpoint.

Without an address, a local Ray instance is started with the resources declared, and shut
down at the end. On a cluster, the node next to each server declares its resource:

    ray start --address HEAD:6379 --resources '{"dytopo_server_0": 4}'

and every node needs dytopo installed and the topology's folder at the same path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from contextlib import suppress
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Self

import structlog
from pydantic import BaseModel

from dytopo import errors
from dytopo.batch.models import BatchItem, RunRecord
from dytopo.batch.pool import BackendPool, PoolServer
from dytopo.batch.run import run_one
from dytopo.batch.schedule import RunSpec
from dytopo.errors import ConfigError, DyTopoError
from dytopo.routing.config import Mode
from dytopo.swarm.checkpoint import checkpoint_path, write_bytes_atomically
from dytopo.topology import Topology

log = structlog.get_logger("dytopo.batch")

MAX_RETRIES = 2
"""Times Ray runs a task again after its worker (or node) died."""
OBJECT_STORE_BYTES = 100 * 1024 * 1024
"""A local instance's object store: traces and records only, a few MB."""


def _ray() -> ModuleType:
    """The ray package (an optional extra: imported only when a batch runs on Ray)."""
    try:
        import ray
        import ray.exceptions
    except ImportError:
        raise ConfigError(
            "--ray needs the ray package: pip install 'dytopo[ray]' (or make install)"
        ) from None
    return ray


def resource(server: PoolServer) -> str:
    return f"dytopo_server_{server.index}"


class RayJob(BaseModel):
    """One run, as the driver sends it to a worker."""

    item: BatchItem
    mode: Mode
    topology: dict[str, Any]
    backend_url: str
    embed_url: str | None
    trace_path: str
    base_dir: str | None
    source: str | None
    trust_topology: bool
    slots: int
    trace_text: str | None = None
    """The run's trace so far (a run moved off a dead server), for a worker on another node."""
    checkpoint_text: str | None = None


class RayOutcome(BaseModel):
    """What a worker sends back: the record and the run's files, or an error that concerns
    every run (its DyTopoError class name and message)."""

    record: RunRecord | None = None
    trace_text: str | None = None
    checkpoint_text: str | None = None
    error_type: str = ""
    error: str = ""


def run_remote(payload: str) -> str:
    """The Ray task: one run on the worker (RayJob JSON in, RayOutcome JSON out)."""
    job = RayJob.model_validate_json(payload)
    trace = Path(job.trace_path)
    _keep(trace, job.trace_text)
    _keep(checkpoint_path(trace), job.checkpoint_text)
    try:
        record = asyncio.run(
            run_one(
                job.item,
                job.mode,
                Topology.model_validate(job.topology),
                backend_url=job.backend_url,
                embed_url=job.embed_url,
                trace_path=trace,
                base_dir=Path(job.base_dir) if job.base_dir else None,
                source=Path(job.source) if job.source else None,
                trust_topology=job.trust_topology,
                slots=job.slots,
                resume=True,
            )
        )
    except DyTopoError as exc:  # rebuilt by the driver: Ray cannot pickle every subclass
        outcome = RayOutcome(error_type=type(exc).__name__, error=str(exc))
    else:
        outcome = RayOutcome(record=record)
    outcome.trace_text = _text(trace)
    outcome.checkpoint_text = _text(checkpoint_path(trace))
    return outcome.model_dump_json()


class RayExecutor:
    """Runs a batch's runs as Ray tasks; `async with` connects to (or starts) Ray.

    async with RayExecutor(spec, pool, address=None) as execute:
        records = await run_pool(pool, todo, execute, store)
    """

    def __init__(
        self, spec: RunSpec, pool: BackendPool, *, address: str | None = None, verbose: bool = False
    ) -> None:
        if any(s.url is None for s in pool.servers):
            raise ValueError("Ray runs reach their servers by URL: in-process servers cannot")
        self.spec, self.pool, self.address = spec, pool, address
        self.verbose = verbose
        self.ray = _ray()
        self._remote: Any = None
        self._started = False

    async def __aenter__(self) -> Self:
        starting = asyncio.ensure_future(asyncio.to_thread(self._connect))
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            # Ctrl-C while Ray starts: the start goes on in its thread; once it is done, stop
            # it, or its processes would outlive this one.
            with suppress(Exception):
                await starting
            await self._stop()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        if self._started:
            self._started = False
            await asyncio.to_thread(self.ray.shutdown)  # a local instance ends with the batch

    def _connect(self) -> None:
        ray = self.ray
        alive = [s for s in self.pool.servers if s.alive]
        level = logging.INFO if self.verbose else logging.ERROR
        if self.address is None:
            ray.init(
                num_cpus=os.cpu_count() or 1,
                resources={resource(s): s.slots for s in alive},
                include_dashboard=False,
                log_to_driver=self.verbose,
                object_store_memory=OBJECT_STORE_BYTES,
                logging_level=level,
            )
        else:
            ray.init(address=self.address, log_to_driver=self.verbose, logging_level=level)
        self._started = True
        try:
            self._check_resources(alive)
        except BaseException:
            ray.shutdown()
            self._started = False
            raise
        # Runs wait on their server, not on a CPU: they take none, so the servers' resources
        # alone bound how many run at once.
        self._remote = ray.remote(num_cpus=0, max_retries=MAX_RETRIES)(run_remote)

    def _check_resources(self, servers: list[PoolServer]) -> None:
        have: dict[str, float] = self.ray.cluster_resources()
        missing = {resource(s): s.slots for s in servers if have.get(resource(s), 0) < s.per_run}
        if missing:
            names = ", ".join(missing)
            raise ConfigError(
                f"the Ray cluster at {self.address} has no {names}: on the node next to each "
                f"server run `ray start --address {self.address} --resources "
                f"'{json.dumps(missing)}'` (units: the server's slots)"
            )

    async def __call__(self, item: BatchItem, mode: Mode, server: PoolServer) -> RunRecord:
        assert self._remote is not None, "use `async with RayExecutor(...)`"
        assert server.url is not None
        s = self.spec
        trace = s.trace(item, mode)
        job = RayJob(
            item=item,
            mode=mode,
            topology=s.topology.model_dump(mode="json"),
            backend_url=server.url,
            embed_url=s.embed_url,
            trace_path=str(trace.resolve()),
            base_dir=str(s.base_dir.resolve()) if s.base_dir else None,
            source=str(s.source.resolve()) if s.source else None,
            trust_topology=s.trust_topology,
            slots=server.per_run,
            trace_text=_text(trace),
            checkpoint_text=_text(checkpoint_path(trace)),
        )
        ref = self._remote.options(resources={resource(server): server.per_run}).remote(
            job.model_dump_json()
        )
        died = (self.ray.exceptions.WorkerCrashedError, self.ray.exceptions.NodeDiedError)
        try:
            answer = await ref
        except asyncio.CancelledError:
            self.ray.cancel(ref)  # the worker stops the run: its checkpoint says interrupted
            raise
        except died as exc:
            line = (str(exc).splitlines() or [type(exc).__name__])[0]
            error = f"its Ray worker died {MAX_RETRIES + 1} times: {line}"
            return RunRecord(item=item.id, mode=mode, ok=False, trace=str(trace), error=error)
        outcome = RayOutcome.model_validate_json(answer)
        _keep(trace, outcome.trace_text)
        _keep(checkpoint_path(trace), outcome.checkpoint_text)
        if outcome.record is None:
            raise _rebuilt(outcome, server.url)
        return outcome.record.model_copy(update={"trace": str(trace)})


def _rebuilt(outcome: RayOutcome, url: str) -> DyTopoError:
    """The worker's error as the driver raises it (same class, same message)."""
    kind = getattr(errors, outcome.error_type, None)
    if isinstance(kind, type) and issubclass(kind, errors.BackendError):
        return kind(outcome.error, url=url)
    if isinstance(kind, type) and issubclass(kind, DyTopoError):
        return kind(outcome.error)
    return DyTopoError(outcome.error)


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _keep(path: Path, text: str | None) -> None:
    """Write `text` at `path` unless it holds it already (the worker is on this machine)."""
    if text is None or _text(path) == text:
        return
    write_bytes_atomically(text.encode("utf-8"), path)
