"""The local executor: each run of a pooled batch in this asyncio process.

A run on a URL server gets its own client limited to the run's share of the slots (`run_one`
with `slots`); a run on an in-process server gets the server's Backend object behind a limiter
of its own (`SlotShare`). Either way a run that stopped earlier (interrupted, or moved off a
dead server) continues from its checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dytopo.batch._share import SlotShare
from dytopo.batch.models import BatchItem, RunRecord
from dytopo.batch.pool import BackendPool, PoolServer
from dytopo.batch.run import Grader, pending, run_one, run_one_on
from dytopo.batch.schedule import RunSpec, run_pool
from dytopo.batch.store import RecordStore
from dytopo.embedders.hashing import HashEmbedder
from dytopo.routing.config import Mode
from dytopo.topology import Topology


@dataclass(frozen=True)
class LocalExecutor:
    """Runs a batch's runs in this process (see the module docstring)."""

    spec: RunSpec

    async def __call__(self, item: BatchItem, mode: Mode, server: PoolServer) -> RunRecord:
        s = self.spec
        if server.backend is not None:
            return await run_one_on(
                item,
                mode,
                s.topology,
                SlotShare(server.backend, server.per_run),
                server.embedder or HashEmbedder(),
                trace_path=s.trace(item, mode),
                base_dir=s.base_dir,
                source=s.source,
                trust_topology=s.trust_topology,
                resume=True,
            )
        return await run_one(
            item,
            mode,
            s.topology,
            backend_url=server.url,
            embed_url=s.embed_url,
            trace_path=s.trace(item, mode),
            base_dir=s.base_dir,
            source=s.source,
            trust_topology=s.trust_topology,
            slots=server.per_run,
            resume=True,
        )


async def run_local(
    items: Sequence[BatchItem],
    modes: Sequence[Mode],
    topology: Topology,
    store: RecordStore,
    *,
    urls: Sequence[str],
    traces_dir: Path,
    embed_url: str | None = None,
    base_dir: Path | None = None,
    source: Path | None = None,
    trust_topology: bool = False,
    runs_per_server: int | None = None,
    grader: Grader | None = None,
    on_start: Callable[[BatchItem, Mode], None] | None = None,
    on_record: Callable[[RunRecord], None] | None = None,
) -> list[RunRecord]:
    """`run_batch` over several servers: the pairs `store` has no record of, spread over the
    servers at `urls` (each sized from its /props) in this process; the new records, in the
    order they ended. PoolExhausted when every server died first."""
    todo = pending(items, modes, store.done())
    if not todo:
        return []
    spec = RunSpec(topology, traces_dir, embed_url, base_dir, source, trust_topology)
    pool = await BackendPool.connect(urls, topology.backend, runs_per_server=runs_per_server)
    try:
        return await run_pool(
            pool,
            todo,
            LocalExecutor(spec),
            store,
            grader=grader,
            on_start=(lambda item, mode, _: on_start(item, mode)) if on_start else None,
            on_record=on_record,
        )
    finally:
        await pool.aclose()
