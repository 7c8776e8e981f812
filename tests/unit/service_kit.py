"""The service on a loopback port this test opens, over a scripted backend, and a real HTTP
client (httpx2: the autouse fixture refuses httpx, and this traffic never leaves the machine)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import uvicorn
from helpers import decision, final, goal, step

from dytopo.backends.types import ChatRequest
from dytopo.embedders import HashEmbedder
from dytopo.service.app import create_app
from dytopo.service.runs import RunService
from dytopo.service.settings import ServiceSettings
from dytopo.testing import Reply, ScriptedBackend

TOPOLOGY = """\
name: pair
description: Two agents, two rounds.
routing: {mode: dynamic, tau: 0.3}
max_rounds: 2
min_rounds: 1
seed: 3
agents:
  - {id: a, card: analyst}
  - {id: b, card: writer}
"""
ANSWER = "LRU, because recency predicts reuse here."


@dataclass
class Script:
    """Answers every request by the schema it asks for; `slow` holds replies of those rounds
    for `delay_s` (so a test can act while requests are in flight)."""

    slow: set[int] = field(default_factory=set)
    delay_s: float = 30.0
    first_round: int = 1
    """The round its first agent step belongs to (a resumed run starts later)."""
    rounds: list[int] = field(default_factory=list)
    """The round of each agent step asked for (two agents per round, rounds in turn)."""

    def __call__(self, request: ChatRequest) -> Reply:
        props = (request.json_schema or {}).get("properties", {})
        if "public" in props:
            t = self.first_round + len(self.rounds) // 2
            self.rounds.append(t)
            delay = self.delay_s if t in self.slow else 0.0
            if request.tag == "a":
                return Reply(step("a pub", "A private", "unit tests", "benchmarks"), delay_s=delay)
            return Reply(step("b pub", "B private", "benchmarks", "unit tests"), delay_s=delay)
        if "halt" in props:
            return Reply(decision(False, goal_next="next goal"))
        if "goal" in props:
            return Reply(goal("first goal"))
        return Reply(final(ANSWER))


def backend(script: Script | None = None) -> ScriptedBackend:
    return ScriptedBackend(responder=script or Script())


def settings(tmp_path: Path, **options: Any) -> ServiceSettings:
    folder = tmp_path / "topologies"
    if not folder.is_dir():
        folder.mkdir()
        (folder / "pair.yaml").write_text(TOPOLOGY, encoding="utf-8")
    return ServiceSettings(
        topologies_dir=folder,
        runs_dir=tmp_path / "runs",
        default_topology="pair",
        **options,
    )


@dataclass
class Served:
    url: str
    service: RunService
    client: httpx2.AsyncClient


@contextlib.asynccontextmanager
async def served(
    config: ServiceSettings, scripted: ScriptedBackend, token: str | None = None
) -> AsyncIterator[Served]:
    """The service and its app on 127.0.0.1:<free port>; stopped on the way out."""
    async with RunService(config, backend=scripted, embedder=HashEmbedder()) as service:
        app = create_app(service)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
        )
        task = asyncio.create_task(server.serve(sockets=[sock]))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            while not server.started:
                assert not task.done(), task
                await asyncio.sleep(0.01)
            async with httpx2.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
                yield Served(url, service, client)
        finally:
            service.stop_runs()
            server.should_exit = True
            await task
            sock.close()


Check = Callable[[], Awaitable[bool]] | Callable[[], bool]


async def until(check: Check, limit_s: float = 10) -> None:
    """Poll `check` until it holds (for states only another task reaches)."""
    deadline = time.monotonic() + limit_s
    while True:
        value = check()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def sse(text: str) -> list[dict[str, str]]:
    """Server-sent events as dicts of their fields."""
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            name, _, value = line.partition(": ")
            fields[name] = value
        if fields:
            events.append(fields)
    return events
