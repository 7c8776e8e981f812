"""The local executor: each run of a pooled batch in this asyncio process.

A run on a URL server gets its own client limited to the run's share of the slots (`run_one`
with `slots`); a run on an in-process server gets the server's Backend object behind a limiter
of its own (`SlotShare`). Either way a run that stopped earlier (interrupted, or moved off a
dead server) continues from its checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

from dytopo.batch._share import SlotShare
from dytopo.batch.models import BatchItem, RunRecord
from dytopo.batch.pool import PoolServer
from dytopo.batch.run import run_one, run_one_on
from dytopo.batch.schedule import RunSpec
from dytopo.embedders.hashing import HashEmbedder
from dytopo.routing import Mode


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
