"""How busy the real server's slots are during one research-swarm run, and how long requests wait.

    .venv/bin/python benchmarks/saturation.py --out benchmarks/saturation.md

One research-swarm run (topologies/research.yaml, min_rounds = max_rounds = ROUNDS) on the
embedded stack (SmolLM2-135M chat server with 2 slots, MiniLM embedding server), through
DyTopo's own client. Beside it a poller reads the chat server's GET /slots every 50 ms and, at
the same instant, the client's state: the FIFO slot limiter's holders and waiters
(`SlotLimiter.in_use`, `.waiting`), which requests are in `chat()` (by tag: an agent or the
manager), and whether the client is embedding descriptors or counting prompt tokens. Each
sample stands for the time until the next one, so the shares are shares of the run's wall time.

The queue wait per request is timed in the limiter itself (a subclass that times `acquire`):
the time from asking for a slot to getting it, zero when one was free.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from common import machine_lines
from common import share as pct
from modes import TOPOLOGY, run_once, variant

from dytopo.backends import BackendSettings, ChatMessage, ChatRequest, ChatResponse, LlamaCppBackend
from dytopo.backends.limiter import SlotLimiter
from dytopo.embedders.base import Embeddings
from dytopo.embedders.http import HttpEmbedder
from dytopo.loader import load_topology
from dytopo.logs import configure_logging
from dytopo.managed import ManagedStack
from dytopo.swarm.result import RunResult

POLL_S = 0.05


class TimedLimiter(SlotLimiter):
    """The library's limiter, timing every acquire (queue wait; zero when a slot was free)."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.waits: list[float] = []

    async def acquire(self) -> None:
        started = time.monotonic()
        await super().acquire()
        self.waits.append(time.monotonic() - started)


class WatchedBackend(LlamaCppBackend):
    """The library's client, telling the poller which requests are in flight (by tag) and
    whether it is counting prompt tokens (/apply-template and /tokenize, outside the limiter)."""

    def __init__(self, settings: BackendSettings) -> None:
        super().__init__(settings)
        self.timed = TimedLimiter(self.limiter.capacity)
        self.limiter = self.timed
        self.active: Counter[str] = Counter()
        self.counting = 0

    async def chat(self, request: ChatRequest) -> ChatResponse:
        who = "manager" if request.tag == "manager" else "agent"
        self.active[who] += 1
        try:
            return await super().chat(request)
        finally:
            self.active[who] -= 1

    async def count_tokens(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> int:
        self.counting += 1
        try:
            return await super().count_tokens(messages, tools)
        finally:
            self.counting -= 1


class WatchedEmbedder(HttpEmbedder):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.embedding = 0

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        self.embedding += 1
        try:
            return await super().embed(texts)
        finally:
            self.embedding -= 1


@dataclass
class Sample:
    at: float
    busy: int
    """Slots the server reports processing."""
    held: int
    """Slots the client's limiter has granted."""
    waiting: int
    """Requests in the client's limiter queue."""
    phase: str


@dataclass
class Watch:
    samples: list[Sample] = field(default_factory=list)
    polls_failed: int = 0


def phase(backend: WatchedBackend, embedder: WatchedEmbedder) -> str:
    """What the client is doing: the reason a slot may sit idle."""
    if embedder.embedding:
        return "embedding descriptors (routing)"
    if backend.active["agent"]:
        return "agent requests"
    if backend.active["manager"]:
        return "manager request alone"
    if backend.counting:
        return "counting prompt tokens (packing)"
    return "client work (routing, delivery, checkpoint, trace)"


async def poll(url: str, backend: WatchedBackend, embedder: WatchedEmbedder, watch: Watch) -> None:
    async with httpx.AsyncClient(timeout=5.0) as client:
        while True:
            try:
                response = await client.get(f"{url}/slots")
                busy = sum(1 for s in response.json() if s.get("is_processing"))
            except (httpx.HTTPError, ValueError):
                watch.polls_failed += 1
            else:
                watch.samples.append(
                    Sample(
                        at=time.monotonic(),
                        busy=busy,
                        held=backend.limiter.in_use,
                        waiting=backend.limiter.waiting,
                        phase=phase(backend, embedder),
                    )
                )
            await asyncio.sleep(POLL_S)


@dataclass
class Measured:
    result: RunResult
    watch: Watch
    waits: list[float]
    slots: int
    wall_s: float
    started: float
    client_cpu_s: float
    server_cpu_s: float
    embed_cpu_s: float
    load: tuple[float, float, float]


def cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def measure(ns: argparse.Namespace) -> Measured:
    topology = variant(load_topology(TOPOLOGY), "dynamic", ns.rounds, ns.max_output)
    me = psutil.Process()
    async with ManagedStack(slots=2, ctx_per_slot=4096) as stack:
        assert stack.chat is not None
        assert stack.embed is not None
        server, embed_server = psutil.Process(stack.chat.pid), psutil.Process(stack.embed.pid)
        settings = topology.backend.model_copy(update={"base_url": stack.chat_url})
        backend = WatchedBackend(settings)
        embedder = WatchedEmbedder(stack.embed_url or stack.chat_url)
        watch = Watch()
        try:
            info = await backend.connect()
            with tempfile.TemporaryDirectory() as tmp:
                cpu0, srv0, emb0 = sum(me.cpu_times()[:2]), cpu(server), cpu(embed_server)
                started = time.monotonic()
                async with asyncio.TaskGroup() as group:
                    poller = group.create_task(poll(stack.chat_url, backend, embedder, watch))
                    try:
                        result = await run_once(
                            topology, topology.task or "", backend, embedder, Path(tmp) / "t.jsonl"
                        )
                    finally:
                        poller.cancel()
                wall = time.monotonic() - started
            return Measured(
                result=result,
                watch=watch,
                waits=backend.timed.waits,
                slots=info.slots,
                wall_s=wall,
                started=started,
                client_cpu_s=sum(me.cpu_times()[:2]) - cpu0,
                server_cpu_s=cpu(server) - srv0,
                embed_cpu_s=cpu(embed_server) - emb0,
                load=os.getloadavg(),
            )
        finally:
            await embedder.aclose()
            await backend.aclose()


def weighted(m: Measured) -> list[tuple[Sample, float]]:
    """Each sample with the time it stands for (until the next sample, or the run's end)."""
    s = m.watch.samples
    ends = [x.at for x in s[1:]] + [m.started + m.wall_s]
    return [(x, max(0.0, end - x.at)) for x, end in zip(s, ends, strict=True)]


def report(m: Measured, ns: argparse.Namespace, command: str) -> str:
    spans = weighted(m)
    total = sum(d for _, d in spans)
    full = m.slots

    def share(pred: Any) -> str:
        return pct(sum(d for x, d in spans if pred(x)), total)

    waits = np.array(m.waits) if m.waits else np.zeros(1)

    def stat(f: Any) -> str:
        return f"{float(f(waits)):.2f}"

    u = m.result.usage
    gaps = np.diff([x.at for x in m.watch.samples]) if len(m.watch.samples) > 1 else np.zeros(1)
    lines = [
        "## Saturation of the real server during one research-swarm run",
        "",
        "Machine:",
        *machine_lines(),
        "",
        f"Command: `{command}`",
        "",
        f"Run: research topology, min_rounds = max_rounds = {ns.rounds}, every reply capped at "
        f"{ns.max_output} tokens, {len(m.result.rounds)} rounds, {u.requests} chat requests, "
        f"prompt {u.prompt_tokens} tok (cached {100 * u.cached_share:.0f}%), completion "
        f"{u.completion_tokens} tok; wall {m.wall_s:.1f} s; CPU: client {m.client_cpu_s:.1f} s, "
        f"chat server {m.server_cpu_s:.1f} s, embedding server {m.embed_cpu_s:.1f} s; load "
        f"average at the end {', '.join(f'{x:.1f}' for x in m.load)}.",
        f"Poller: {len(m.watch.samples)} samples of GET /slots, interval mean "
        f"{1000 * float(np.mean(gaps)):.0f} ms, p95 {1000 * float(np.percentile(gaps, 95)):.0f} ms "
        f"(asked every {int(POLL_S * 1000)} ms; a busy server answers late), "
        f"{m.watch.polls_failed} failed.",
        "",
        "| share of the run's wall time | value |",
        "| --- | --- |",
        f"| all {full} slots busy AND requests waiting in the client queue "
        f"| {share(lambda x: x.busy >= full and x.waiting > 0)} |",
        f"| all {full} slots busy | {share(lambda x: x.busy >= full)} |",
        f"| exactly 1 slot busy | {share(lambda x: x.busy == 1)} |",
        f"| idle: no slot busy | {share(lambda x: x.busy == 0)} |",
        f"| requests waiting in the client queue, any slot state "
        f"| {share(lambda x: x.waiting > 0)} |",
        f"| client holds all {full} slots but the server processes fewer "
        f"| {share(lambda x: x.held >= full and x.busy < full)} |",
        "",
        f"Client queue wait per request (limiter acquire, {len(m.waits)} requests, "
        f"{sum(1 for w in m.waits if w > 0.001)} waited > 1 ms): mean {stat(np.mean)} s, "
        f"p50 {stat(np.median)} s, p95 {stat(lambda w: np.percentile(w, 95))} s, "
        f"max {stat(np.max)} s.",
        "",
        "What the client was doing, by how many slots the server had busy (share of wall time):",
        "",
        "| client phase | 0 busy (idle) | 1 busy | 2 busy | total |",
        "| --- | --- | --- | --- | --- |",
    ]
    phases = Counter(x.phase for x in m.watch.samples)
    for name, _ in phases.most_common():
        cells = [
            share(lambda x, b=b, name=name: x.phase == name and min(x.busy, full) == b)
            for b in range(full + 1)
        ]
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {share(lambda x, n=name: x.phase == n)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-output", type=int, default=512)
    parser.add_argument("--out", type=Path, default=None, help="Write the report here.")
    ns = parser.parse_args()
    configure_logging("warning")
    command = (
        f".venv/bin/python benchmarks/saturation.py --rounds {ns.rounds} "
        f"--max-output {ns.max_output}"
    )
    measured = asyncio.run(measure(ns))
    text = report(measured, ns, command)
    print(text)
    if ns.out:
        ns.out.write_text(text)


if __name__ == "__main__":
    main()
