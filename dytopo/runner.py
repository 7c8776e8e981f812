"""Running a topology end to end: pick the servers, build the swarm, run it, clean up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from dytopo.backends.llamacpp import LlamaCppBackend
from dytopo.backends.settings import BackendSettings
from dytopo.budget import plan_budgets, server_context
from dytopo.build import build_swarm
from dytopo.embedders.base import Embedder
from dytopo.embedders.hashing import HashEmbedder
from dytopo.embedders.http import HttpEmbedder
from dytopo.errors import BudgetExceeded, ConfigError
from dytopo.loader import load_topology
from dytopo.managed.resolve import Endpoints, endpoints
from dytopo.result import RunResult
from dytopo.topology import EmbedderSpec, Topology
from dytopo.trace import Observer


def make_embedder(spec: EmbedderSpec, ends: Endpoints) -> Embedder:
    if spec.kind == "hash":
        return HashEmbedder()
    url = spec.base_url or ends.embed_url or ends.chat_url
    settings = BackendSettings(base_url=url, api_key=spec.api_key, read_timeout_s=60.0)
    return HttpEmbedder(url, model=spec.model, settings=settings)


def default_trace_path(topology: Topology) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{topology.name}.jsonl"


async def run_topology(
    topology: Topology | str | Path,
    task: str | None = None,
    *,
    backend_url: str | None = None,
    embed_url: str | None = None,
    trace_path: str | Path | None = None,
    observers: Sequence[Observer] = (),
    base_dir: Path | None = None,
    trust_topology: bool = False,
) -> RunResult:
    """Run a topology on its configured server, or on an embedded one started for this run.

    Its tool modules (code) and role cards must lie in its folder tree (`base_dir`) or be
    installed entry points, unless `trust_topology`."""
    if not isinstance(topology, Topology):
        base_dir = base_dir or Path(topology).parent
        topology = load_topology(topology, trust_topology=trust_topology)
    task = task or topology.task
    if not task:
        raise ConfigError(f"no task: pass --task, or set `task:` in the {topology.name} topology")
    trace = Path(trace_path) if trace_path else default_trace_path(topology)
    url = backend_url or topology.backend.base_url
    async with endpoints(url, embed_url or topology.embedder.base_url) as ends:
        settings = topology.backend.model_copy(update={"base_url": ends.chat_url})
        backend = LlamaCppBackend(settings)
        embedder = make_embedder(topology.embedder, ends)
        try:
            info = await backend.connect()
            plan = plan_budgets(
                topology,
                n_ctx=server_context(info.n_ctx_per_slot, info.slots, settings.kv_unified),
                slots=info.slots,
                kv_unified=settings.kv_unified,
            )
            if not plan.fits:
                raise BudgetExceeded("\n".join(f"{topology.name}: {p}" for p in plan.problems))
            swarm = build_swarm(
                topology,
                backend,
                embedder,
                base_dir=base_dir,
                plan=plan,
                trust_topology=trust_topology,
            )
            return await swarm.run(task, trace_path=trace, observers=observers)
        finally:
            await embedder.aclose()
            await backend.aclose()


def run(
    topology: Topology | str | Path,
    task: str | None = None,
    *,
    backend_url: str | None = None,
    embed_url: str | None = None,
    trace_path: str | Path | None = None,
) -> RunResult:
    """Blocking `run_topology` for scripts: `dytopo.run("topologies/research.yaml", "task")`."""
    return asyncio.run(
        run_topology(
            topology, task, backend_url=backend_url, embed_url=embed_url, trace_path=trace_path
        )
    )


@asynccontextmanager
async def connect(
    backend_url: str | None = None, embed_url: str | None = None
) -> AsyncIterator[tuple[LlamaCppBackend, Embedder]]:
    """A backend and an embedder on the configured server, or on an embedded one for the duration.

    async with dytopo.connect() as (backend, embedder):
        swarm = Swarm(agents=[...], manager=..., embedder=embedder)
    """
    async with endpoints(backend_url, embed_url) as ends:
        backend = LlamaCppBackend(ends.chat_url)
        embedder = make_embedder(EmbedderSpec(), ends)
        try:
            await backend.connect()
            yield backend, embedder
        finally:
            await embedder.aclose()
            await backend.aclose()
