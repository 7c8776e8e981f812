"""The servers a batch runs on: their slots, the runs each holds, which are alive.

    pool = await BackendPool.connect(["http://gpu1:8080", "http://gpu2:8080"], settings)
    server = pool.place()  # the alive server with the most free slots; None: all are full
    pool.take(server)
    ...
    pool.give(server)

One run is pinned to one server, where its agents share the prompt cache. A run takes
`per_run` of its server's slots (its client never has more requests in flight) and a server
holds at most `capacity` runs at once, so the requests in flight on a server never exceed its
slots. By default a run takes the whole server (per_run = slots: one run at a time);
`runs_per_server=N` shares it among N runs (per_run = slots // N).

A server is either a URL (its slots from `/props`) or, for benchmarks and tests, an in-process
Backend object (its slots from `connect()`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass

import httpx
import structlog
from pydantic import BaseModel

from dytopo.backends.base import Backend
from dytopo.backends.limiter import SlotLimiter
from dytopo.backends.llamacpp import LlamaCppBackend
from dytopo.backends.settings import BackendSettings
from dytopo.embedders.base import Embedder
from dytopo.errors import BackendUnavailable, DyTopoError

log = structlog.get_logger("dytopo.batch")

HEALTH_TIMEOUT_S = 3.0
"""How long a server may take to answer /health before it counts as dead."""
WATCH_EVERY_S = 0.5
"""How often the pool reads each server's /slots (its busiest moment is in the summary)."""


@dataclass(eq=False)
class PoolServer:
    """One server of the pool and what it holds now."""

    index: int
    """Its place in the pool (Ray names its resource `dytopo_server_<index>`)."""
    name: str
    """Its URL; for an in-process server, `in-process-<index>`."""
    url: str | None = None
    backend: Backend | None = None
    """An in-process server (benchmarks, tests): runs share this object."""
    embedder: Embedder | None = None
    """The embedder of an in-process server's runs (None: the hashing embedder)."""
    slots: int = 1
    per_run: int = 1
    """Slots one run may use: its client's limit."""
    capacity: int = 1
    """Runs at once: never more than slots // per_run."""
    running: int = 0
    max_running: int = 0
    alive: bool = True
    served: int = 0
    """Runs that ended here (with a record)."""
    moved_off: int = 0
    """Runs moved to another server when this one stopped answering."""
    max_busy: int | None = None
    """The most requests in flight seen on it (its /slots, polled; in-process: its limiter);
    None when it does not tell."""
    problem: str = ""
    """Why it was left out from the start (it did not answer)."""

    @property
    def free_slots(self) -> int:
        return self.slots - self.running * self.per_run

    @property
    def has_room(self) -> bool:
        return self.alive and self.running < self.capacity


class ServerStats(BaseModel):
    """A server's share of a batch, for the summary."""

    server: str
    slots: int
    per_run: int
    runs: int
    """Runs that ended on it in this invocation."""
    max_runs_at_once: int
    max_in_flight: int | None
    """Most requests in flight seen on it; None when it does not tell (no /slots)."""
    alive: bool
    moved_off: int


def share(slots: int, runs_per_server: int | None) -> tuple[int, int]:
    """(per_run, capacity) of a server with `slots`: the whole server for one run by default,
    else `runs_per_server` runs sharing it (no more runs than its slots)."""
    if runs_per_server is None:
        return slots, 1
    per_run = max(1, slots // runs_per_server)
    return per_run, min(runs_per_server, slots // per_run)


class BackendPool:
    """The servers of a batch; `place` picks where the next run goes."""

    def __init__(self, servers: Sequence[PoolServer], client: httpx.AsyncClient | None = None):
        if not servers:
            raise ValueError("a pool needs at least one server")
        self.servers = list(servers)
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=HEALTH_TIMEOUT_S)

    @classmethod
    async def connect(
        cls,
        urls: Sequence[str],
        settings: BackendSettings | None = None,
        *,
        runs_per_server: int | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> BackendPool:
        """A pool of llama-servers, each sized from its /props (`settings`: how to reach them,
        e.g. an api_key). A server that does not answer is in the pool as dead (with a
        warning); BackendUnavailable when none answers."""
        base = (settings or BackendSettings()).model_copy(update={"max_attempts": 2})
        probes: list[asyncio.Task[PoolServer | str]] = []
        async with asyncio.TaskGroup() as group:
            for index, url in enumerate(dict.fromkeys(urls)):
                probe = _probe(index, url, base, client, runs_per_server)
                probes.append(group.create_task(probe))
        servers, problems = [], []
        for index, (url, found) in enumerate(zip(dict.fromkeys(urls), probes, strict=True)):
            server = found.result()
            if isinstance(server, str):  # kept, dead: the others keep their places (Ray names)
                log.info("batch.server_left_out", problem=server)
                problems.append(server)
                server = PoolServer(
                    index, url, url=url, slots=0, per_run=0, capacity=0, alive=False, problem=server
                )
            servers.append(server)
        if len(problems) == len(servers):
            raise BackendUnavailable(
                "no server of the pool answers: " + "; ".join(problems), url=", ".join(urls)
            )
        return cls(servers, client)

    @classmethod
    async def in_process(
        cls,
        backends: Sequence[Backend],
        *,
        runs_per_server: int | None = None,
        embedder: Embedder | None = None,
    ) -> BackendPool:
        """A pool of in-process servers (SimulatedBackend, ScriptedBackend), sized from their
        `connect()`."""
        servers = []
        for index, backend in enumerate(backends):
            info = await backend.connect()
            per_run, capacity = share(info.slots, runs_per_server)
            servers.append(
                PoolServer(
                    index,
                    f"in-process-{index}",
                    backend=backend,
                    embedder=embedder,
                    slots=info.slots,
                    per_run=per_run,
                    capacity=capacity,
                )
            )
        return cls(servers)

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    @property
    def alive(self) -> list[PoolServer]:
        return [s for s in self.servers if s.alive]

    def place(self) -> PoolServer | None:
        """The alive server with room and the most free slots (ties: the first); None when
        every alive server is full."""
        open_ = [s for s in self.servers if s.has_room]
        return max(open_, key=lambda s: (s.free_slots, -s.index)) if open_ else None

    def take(self, server: PoolServer) -> None:
        if not server.has_room:
            raise RuntimeError(f"{server.name} has no room for another run")
        server.running += 1
        server.max_running = max(server.max_running, server.running)

    def give(self, server: PoolServer) -> None:
        server.running -= 1
        self._note_in_process(server)

    async def check(self, server: PoolServer) -> bool:
        """Whether `server` still answers; one that does not is marked dead (no new run goes
        to it)."""
        if not server.alive:
            return False
        if await self._healthy(server):
            return True
        server.alive = False
        log.info("batch.server_dead", server=server.name)
        return False

    async def _healthy(self, server: PoolServer) -> bool:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                if server.backend is not None:
                    await server.backend.connect()
                    return True
                assert server.url is not None
                response = await self._client.get(f"{server.url}/health")
                return response.status_code == 200
        except (TimeoutError, httpx.HTTPError, DyTopoError):
            return False

    async def watch(self) -> None:
        """Read every alive URL server's /slots now and then, for the most requests in flight
        each had (a server that does not serve /slots is left alone). Runs until cancelled."""
        quiet: set[int] = set()
        while True:
            for server in self.servers:
                if server.url is None or not server.alive or server.index in quiet:
                    continue
                busy = await self._busy(server)
                if busy is None:
                    quiet.add(server.index)
                else:
                    server.max_busy = max(server.max_busy or 0, busy)
            await asyncio.sleep(WATCH_EVERY_S)

    async def _busy(self, server: PoolServer) -> int | None:
        with suppress(httpx.HTTPError, ValueError, TypeError, AttributeError):
            response = await self._client.get(f"{server.url}/slots")
            if response.status_code == 200:
                return sum(1 for slot in response.json() if slot.get("is_processing"))
            return None
        return 0  # no answer this time (busy or dying): nothing learned

    def _note_in_process(self, server: PoolServer) -> None:
        limiter = getattr(server.backend, "limiter", None)
        if isinstance(limiter, SlotLimiter):
            server.max_busy = max(server.max_busy or 0, limiter.max_in_use)

    def stats(self) -> list[ServerStats]:
        for server in self.servers:
            self._note_in_process(server)
        return [
            ServerStats(
                server=s.name,
                slots=s.slots,
                per_run=s.per_run,
                runs=s.served,
                max_runs_at_once=s.max_running,
                max_in_flight=s.max_busy,
                alive=s.alive,
                moved_off=s.moved_off,
            )
            for s in self.servers
        ]


async def _probe(
    index: int,
    url: str,
    settings: BackendSettings,
    client: httpx.AsyncClient | None,
    runs_per_server: int | None,
) -> PoolServer | str:
    """The server at `url` sized from its /props, or why it cannot be used (one line)."""
    backend = LlamaCppBackend(settings.model_copy(update={"base_url": url}), client=client)
    try:
        info = await backend.connect()
    except DyTopoError as exc:
        return f"{url}: {(str(exc).splitlines() or [type(exc).__name__])[0]}"
    finally:
        await backend.aclose()
    per_run, capacity = share(info.slots, runs_per_server)
    return PoolServer(index, url, url=url, slots=info.slots, per_run=per_run, capacity=capacity)
