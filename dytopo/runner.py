"""Running a topology end to end: pick the servers, build the swarm, run it, clean up."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from dytopo.backends.base import Backend
from dytopo.backends.llamacpp import LlamaCppBackend
from dytopo.backends.settings import BackendSettings
from dytopo.budget.plan import kv_layout, plan_for_server
from dytopo.embedders.base import Embedder
from dytopo.embedders.hashing import HashEmbedder
from dytopo.embedders.http import HttpEmbedder
from dytopo.errors import BackendError, BudgetExceeded, ConfigError
from dytopo.loader import load_topology
from dytopo.managed.resolve import Endpoints, endpoints, own_server
from dytopo.swarm import runlock
from dytopo.swarm._checkpoint_topology import with_run_options
from dytopo.swarm.build import build_swarm
from dytopo.swarm.checkpoint import (
    Checkpoint,
    changed_fields,
    check_resumable,
    file_sha256,
    find_checkpoint,
    read_checkpoint,
)
from dytopo.swarm.loop import Swarm
from dytopo.swarm.result import RunResult
from dytopo.swarm.trace import Observer
from dytopo.topology import EmbedderSpec, Topology

P = ParamSpec("P")
R = TypeVar("R")


def make_embedder(spec: EmbedderSpec, ends: Endpoints) -> Embedder:
    if spec.kind == "hash":
        return HashEmbedder()
    url = spec.base_url or ends.embed_url or ends.chat_url
    settings = BackendSettings(base_url=url, api_key=spec.api_key, read_timeout_s=60.0)
    return HttpEmbedder(url, model=spec.model, settings=settings)


def default_trace_path(topology: Topology) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{topology.name}.jsonl"


async def arun(
    topology: Topology | str | Path,
    task: str | None = None,
    *,
    backend_url: str | None = None,
    embed_url: str | None = None,
    trace_path: str | Path | None = None,
    observers: Sequence[Observer] = (),
    base_dir: Path | None = None,
    trust_topology: bool = False,
    source: str | Path | None = None,
    checkpoint: Checkpoint | None = None,
    model: str | None = None,
) -> RunResult:
    """Run a topology on its configured server, or on an embedded one started for this run
    (on `model`, else the topology's backend.model, else $DYTOPO_MODEL or the default):
    `await dytopo.arun("topologies/research.yaml", "task")`; `dytopo.run` blocks.

    Its tool modules (code) and role cards must lie in its folder tree (`base_dir`) or be
    installed entry points, unless `trust_topology`. `source`: the file a Topology object was
    loaded from (given a path, that path), named in the run's checkpoints so `resume` can
    rebuild the swarm. `checkpoint`: continue that run (of this topology) instead, e.g. on
    another server than the one it stopped on."""
    if not isinstance(topology, Topology):
        source = source or topology
        base_dir = base_dir or Path(topology).parent
        topology = load_topology(topology, trust_topology=trust_topology)
    task = task or topology.task
    if not task:
        raise ConfigError(f"no task: pass --task, or set `task:` in the {topology.name} topology")
    trace = Path(trace_path) if trace_path else default_trace_path(topology)
    built = _built(topology, backend_url, embed_url, base_dir, trust_topology, source, model)
    async with built as swarm:
        if checkpoint is not None:
            return await swarm.resume(checkpoint, observers=observers)
        return await swarm.run(task, trace_path=trace, observers=observers)


async def aresume(
    source: str | Path,
    *,
    backend_url: str | None = None,
    embed_url: str | None = None,
    force: bool = False,
    observers: Sequence[Observer] = (),
    runs_dir: Path = Path("runs"),
    trust_topology: bool = False,
    model: str | None = None,
) -> RunResult:
    """Continue a stopped run (a run id in `runs_dir`, a trace path or a checkpoint path) from
    its last complete round, on a swarm rebuilt from its topology file:
    `await dytopo.aresume("3f2a9c81d0b4")`; `dytopo.resume` blocks.

    A topology file that changed since the run started is refused, naming the changed fields,
    unless `force` (the run then goes on with the file as it is now)."""
    cp = read_checkpoint(find_checkpoint(source, runs_dir))
    check_resumable(cp)  # before any server is started
    if cp.trace_path is not None:  # read_checkpoint put it beside the checkpoint
        runlock.check_free(Path(cp.trace_path))
    topology, file, forced = _topology_of(cp, force=force, trust_topology=trust_topology)
    built = _built(topology, backend_url, embed_url, file.parent, trust_topology, file, model)
    async with built as swarm:
        return await swarm.resume(cp, observers=observers, forced=forced)


def _topology_of(
    cp: Checkpoint, *, force: bool, trust_topology: bool
) -> tuple[Topology, Path, bool]:
    """The topology a run continues with, its file, and whether `force` overrode a difference:
    the file's topology with the run's options from the checkpoint while the file is unchanged
    (dytopo/swarm/_checkpoint_topology.py: the checkpoint is never trusted with more); the file's
    current one when it changed and `force`."""
    if cp.topology_path is None or cp.topology is None:
        raise ConfigError(
            f"run {cp.run_id} was not built from a topology file: resume it in Python with "
            "swarm.resume(checkpoint) on the swarm it ran on"
        )
    file = Path(cp.topology_path)
    current = load_topology(file, trust_topology=trust_topology)
    unchanged = cp.topology_sha256 == file_sha256(file)
    try:
        resumed = with_run_options(current, cp.topology) if unchanged else current
    except ConfigError as exc:
        if not force:
            raise ConfigError(f"run {cp.run_id}: {exc}") from None
        return current, file, True
    changed = changed_fields(cp.topology, resumed.model_dump(mode="json"))
    if not changed:  # the same topology, or comments and layout only
        return resumed, file, False
    if force:
        return current, file, True
    shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
    if unchanged:  # the file is as the run found it: the checkpoint was edited
        raise ConfigError(
            f"run {cp.run_id}: its checkpoint's topology differs from {file}, which has not "
            f"changed since the run started: {shown}; a checkpoint may not change a run's "
            "tools, workspace or servers: resume with --force to continue with the file as it is"
        )
    raise ConfigError(
        f"{file} changed since run {cp.run_id} started: {shown}; restore it, or resume "
        "with --force to continue with the file as it is now"
    )


async def probe_embedder(embedder: Embedder) -> None:
    """One tiny embed call before round 1: every round routes by embeddings, so a server
    without them (llama-server without --embeddings answers HTTP 501) must stop the run before
    round 1 is paid for, not at its first routing step. BackendError saying the fix."""
    try:
        await embedder.embed(["probe"])
    except BackendError as exc:
        if exc.status not in (404, 501):
            raise
        raise BackendError(
            f"{exc.url} answered HTTP {exc.status}: this server serves no embeddings, and "
            "routing needs them from round 1; start llama-server with --embeddings, or set "
            "embed_url (--embed-url, $DYTOPO_EMBED_URL or embedder.base_url) to one that does",
            url=exc.url,
            status=exc.status,
            body=exc.body,
        ) from None


async def swarm_on(
    topology: Topology,
    backend: Backend,
    embedder: Embedder,
    *,
    base_dir: Path | None,
    source: str | Path | None,
    trust_topology: bool = False,
) -> Swarm:
    """The topology's swarm on `backend`, with budgets planned from the server's real context
    (`backend.connect()`); BudgetExceeded when it does not fit, BackendError when `embedder`
    cannot embed (`probe_embedder`): both before anything is paid for."""
    info = await backend.connect()
    await probe_embedder(embedder)
    # The client's own settings say how its server pools the KV cache; an in-process backend
    # has none, so the topology's word holds.
    if isinstance(backend, LlamaCppBackend):
        own = own_server(backend.base_url, info.model)
        layout = kv_layout(backend.settings.kv_unified, own)
    else:  # an in-process backend: its slots are what it reports, one context each
        layout = kv_layout(topology.backend.kv_unified or False, False)
    plan = plan_for_server(topology, info.n_ctx_per_slot, info.slots, layout)
    if not plan.fits:
        raise BudgetExceeded("\n".join(f"{topology.name}: {p}" for p in plan.problems))
    return await asyncio.to_thread(
        build_swarm,
        topology,
        backend,
        embedder,
        base_dir=base_dir,
        plan=plan,
        trust_topology=trust_topology,
        source=source,
    )


async def load_swarm(
    path: str | Path,
    *,
    backend: Backend,
    embedder: Embedder,
    trust_topology: bool = False,
) -> Swarm:
    """A topology file's swarm on a backend and embedder the caller owns, built the way `dytopo
    run` builds it: budgets planned from the server's real context (`swarm_on`, which connects
    the backend), BudgetExceeded when they do not fit. Its tool modules (code) and role cards
    must lie in its folder tree unless `trust_topology`.

        async with LlamaCppBackend(url) as backend:
            swarm = await dytopo.load_swarm("topologies/research.yaml", backend=backend,
                                            embedder=HashEmbedder())
            result = await swarm.run("task")
    """
    topology = load_topology(path, trust_topology=trust_topology)
    return await swarm_on(
        topology,
        backend,
        embedder,
        base_dir=Path(path).parent,
        source=path,
        trust_topology=trust_topology,
    )


async def run_on(
    topology: Topology,
    task: str,
    backend: Backend,
    embedder: Embedder,
    *,
    trace_path: str | Path | None,
    base_dir: Path | None,
    source: str | Path | None,
    checkpoint: Checkpoint | None = None,
    observers: Sequence[Observer] = (),
    trust_topology: bool = False,
) -> RunResult:
    """Run `task` (or, given its `checkpoint`, continue that run) on a backend and embedder the
    caller owns and may share between runs (a service, a pool of in-process servers); neither
    is closed here."""
    swarm = await swarm_on(
        topology, backend, embedder, base_dir=base_dir, source=source, trust_topology=trust_topology
    )
    if checkpoint is not None:
        return await swarm.resume(checkpoint, observers=observers)
    return await swarm.run(task, trace_path=trace_path, observers=observers)


@asynccontextmanager
async def _built(
    topology: Topology,
    backend_url: str | None,
    embed_url: str | None,
    base_dir: Path | None,
    trust_topology: bool,
    source: str | Path | None,
    model: str | None,
) -> AsyncIterator[Swarm]:
    """The topology's swarm on its servers (embedded ones started for the duration), with
    budgets planned from the server's real context."""
    url = backend_url or topology.backend.base_url or next(iter(topology.backends or []), None)
    embed = embed_url or topology.embedder.base_url
    async with endpoints(url, embed, model=model or topology.backend.model) as ends:
        settings = topology.backend.model_copy(update={"base_url": ends.chat_url})
        backend = LlamaCppBackend(settings)
        embedder = make_embedder(topology.embedder, ends)
        try:
            yield await swarm_on(
                topology,
                backend,
                embedder,
                base_dir=base_dir,
                source=source,
                trust_topology=trust_topology,
            )
        finally:
            await embedder.aclose()
            await backend.aclose()


def _blocking(name: str, run_async: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, R]:
    """`run_async` as a blocking call for scripts, with its parameters; inside a running event
    loop (a notebook, a service) it names the async twin instead of failing in asyncio."""

    @functools.wraps(run_async)
    def blocking(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(run_async(*args, **kwargs))
        raise ConfigError(
            f"dytopo.{name}() blocks until the run ends, and an event loop already runs here (a "
            f"notebook, a service): use `await dytopo.a{name}(...)` instead"
        )

    blocking.__name__ = blocking.__qualname__ = name
    blocking.__doc__ = f"Blocking `a{name}` for scripts; in a running event loop, `await a{name}`."
    return blocking


run = _blocking("run", arun)
"""`dytopo.run("topologies/research.yaml", "task")`: `arun`, blocking."""
resume = _blocking("resume", aresume)
"""`dytopo.resume("3f2a9c81d0b4")`: `aresume`, blocking."""


@asynccontextmanager
async def connect(
    backend_url: str | None = None, embed_url: str | None = None, *, model: str | None = None
) -> AsyncIterator[tuple[LlamaCppBackend, Embedder]]:
    """A backend and an embedder on the configured server, or on an embedded one (`model`, see
    `dytopo.managed.models`) for the duration.

    async with dytopo.connect() as (backend, embedder):
        swarm = Swarm(agents=[...], manager=..., embedder=embedder)
    """
    async with endpoints(backend_url, embed_url, model=model) as ends:
        backend = LlamaCppBackend(ends.chat_url)
        embedder = make_embedder(EmbedderSpec(), ends)
        try:
            await backend.connect()
            yield backend, embedder
        finally:
            await embedder.aclose()
            await backend.aclose()
