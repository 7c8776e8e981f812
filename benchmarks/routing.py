"""Routing cost (similarity matrix + edges + graph + sigma): the router as of --previous against
the current one, alternately in one run, with equal results asserted.

    .venv/bin/python benchmarks/routing.py --no-embed      # 8, 64, 256, 1,024 agents
    .venv/bin/python benchmarks/routing.py                 # the same, then an embedding probe

Target: 256 agents, dynamic, under 20 ms on this 2-core machine.

Vectors are 384-dimension unit vectors (all-MiniLM-L6-v2's size) clustered around n/4 topics:
a need and an offer on one topic score about 0.6, others about 0, so tau = 0.35 gives each
agent about four incoming edges, the sparsity of a real round. `dense` is the same rule at
tau = -1 (every pair, the worst case of the cyclic sigma), `broadcast` the baseline mode.

`previous` is dytopo/router.py as of --previous (default a250295: BLAS tiles, the rounding
boundary fallback, heap and scan sigmas, bitset tiers), read with `git show`; `new` is the
current plain router. Both are fed `Embeddings` (the rows plus their float64 array), as the
built-in embedders return them, take turns, best of 5 each (2 at 1,024 agents), and every
`Routing` and every `tiers` result is asserted equal, float for float. `cpu` is the process CPU
time of the best call, `load` the 1-minute load average when the row ran. `trace event` is
`json.dumps(routing.model_dump())` (the n x n matrix and every edge); `tiers` is the cycle
breaking of `execution: tiered`, previous against new. A revision that runs its product on
OpenBLAS's threads also slows the other side (the threads spin on after the call): time such
a pair apart too.

The embedding probe starts the embedded embedding server (llama-server --embeddings with
all-MiniLM-L6-v2), embeds batches of need/offer sentences through dytopo's HttpEmbedder, and
stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from common import machine_lines

from dytopo.embedders import Embedder, Embeddings
from dytopo.routing.config import RoutingConfig
from dytopo.routing.router import route, tiers

ROOT = Path(__file__).resolve().parents[1]
PREVIOUS = "a250295"  # the last router with the fast paths

CASES = {
    "dynamic": RoutingConfig(mode="dynamic", tau=0.35),
    "dense": RoutingConfig(mode="dynamic", tau=-1.0),
    "broadcast": RoutingConfig(mode="broadcast"),
}


def topic_vectors(n: int, dim: int, rng: np.random.Generator, topics: int) -> Embeddings:
    """2n unit vectors (n needs, then n offers) around shared topics."""
    centers = rng.standard_normal((topics, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    noise = rng.standard_normal((2 * n, dim))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    v = 0.8 * centers[rng.integers(0, topics, 2 * n)] + 0.6 * noise
    return Embeddings(v / np.linalg.norm(v, axis=1, keepdims=True))


class Fixed(Embedder):
    """Hands out the same vectors whatever the texts."""

    def __init__(self, vectors: Embeddings) -> None:
        self.vectors = vectors

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        return self.vectors


def best_of(repeats: int, run: Callable[[], Any]) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - started)
    return best, out


def alternately(repeats: int, runs: list[Callable[[], Any]]) -> list[tuple[float, float, Any]]:
    """(best wall s, CPU s of that call, result) of each run, the runs taking turns."""
    best: list[tuple[float, float, Any]] = [(float("inf"), 0.0, None)] * len(runs)
    for _ in range(repeats):
        for k, run in enumerate(runs):
            wall, cpu = time.perf_counter(), time.process_time()
            out = run()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if wall < best[k][0]:
                best[k] = (wall, cpu, out)
    return best


def load_previous(rev: str) -> types.ModuleType:
    """dytopo/router.py as of `rev`, as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{rev}:dytopo/router.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType("previous_router")
    module.__file__ = f"{rev}:dytopo/router.py"
    sys.modules[module.__name__] = module  # pydantic resolves the models' annotations there
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def run_route(route_fn: Any, agents: list[str], embedder: Embedder, cfg: RoutingConfig) -> Any:
    """`route` as the swarm awaits it, timed without starting an event loop each time."""
    n = len(agents)
    step = route_fn(agents, ["q"] * n, ["k"] * n, embedder, cfg, rng=random.Random(0))
    try:
        step.send(None)  # the embedder returns at once: route never suspends
    except StopIteration as done:
        return done.value
    raise RuntimeError("route suspended")


def row(n: int, case: str, previous: types.ModuleType) -> tuple[str, float]:
    agents = [f"a{k}" for k in range(n)]
    embedder = Fixed(topic_vectors(n, 384, np.random.default_rng(n), max(2, n // 4)))
    cfg = CASES[case]
    repeats = 5 if n <= 256 else 2
    load = os.getloadavg()[0]
    (prev_s, prev_cpu, prev), (new_s, new_cpu, routing) = alternately(
        repeats,
        [
            lambda: run_route(previous.route, agents, embedder, cfg),
            lambda: run_route(route, agents, embedder, cfg),
        ],
    )
    assert json.dumps(prev.model_dump()) == json.dumps(routing.model_dump())
    trace_s, _ = best_of(repeats, lambda: json.dumps(routing.model_dump()))
    edges = routing.edges
    (prev_tiers_s, _, prev_tiers), (tiers_s, _, new_tiers) = alternately(
        min(repeats, 2), [lambda: previous.tiers(agents, edges), lambda: tiers(agents, edges)]
    )
    assert prev_tiers == new_tiers
    print(
        f"{n} {case}: new {new_s * 1000:.2f} ms, previous {prev_s * 1000:.2f}",
        file=sys.stderr,
        flush=True,
    )
    line = (
        f"| {n:,} | {case} | {len(routing.edges):,} | {load:.1f} "
        f"| {prev_s * 1000:,.2f} | **{new_s * 1000:,.2f}** | {prev_s / new_s:,.2f}x "
        f"| {prev_cpu * 1000:,.2f} | **{new_cpu * 1000:,.2f}** | {trace_s * 1000:,.1f} "
        f"| {prev_tiers_s * 1000:,.1f} | {tiers_s * 1000:,.1f} |"
    )
    return line, new_s


DESCRIPTORS = [
    "A list of sourced facts about {t} trade-offs.",
    "Benchmarks of {t} under a read-heavy load.",
    "A reviewed draft section on {t} with open questions.",
    "Test cases that break the {t} design.",
]
TOPICS = [
    "cache eviction", "CDN invalidation", "database sharding", "leader election",
    "retry backoff", "bloom filters", "write-ahead logging", "rate limiting",
]  # fmt: skip


async def embedding_probe(batches: list[int], repeats: int) -> list[str]:
    from dytopo.embedders.http import HttpEmbedder
    from dytopo.managed.server import embedding_server

    texts = [d.format(t=t) for t in TOPICS for d in DESCRIPTORS]
    server = embedding_server()
    await server.start()
    lines = ["| descriptors per batch | ms per batch | ms per descriptor |", "|---:|---:|---:|"]
    try:
        embedder = HttpEmbedder(server.url)
        await embedder.embed(texts[:2])  # warm the model
        for size in batches:
            batch = [texts[k % len(texts)] + f" ({k})" for k in range(size)]
            best = float("inf")
            for _ in range(repeats):
                started = time.perf_counter()
                vectors = await embedder.embed(batch)
                best = min(best, time.perf_counter() - started)
            assert len(vectors) == size
            assert len(vectors[0]) == 384
            lines.append(f"| {size} | {best * 1000:,.1f} | {best * 1000 / size:,.2f} |")
            print(f"embed {size}: {best * 1000:.1f} ms", file=sys.stderr, flush=True)
        await embedder.aclose()
    finally:
        server.stop()
    return lines


def main(args: argparse.Namespace) -> None:
    previous = load_previous(args.previous)
    rows, seconds = [], {}
    for n in args.agents:
        for case in CASES:
            line, seconds[(n, case)] = row(n, case, previous)
            rows.append(line)
    print(f"Command: `.venv/bin/python {' '.join(sys.argv)}` (previous = {args.previous})\n")
    print(
        "| agents | case | edges | load | previous ms | **new ms** | previous/new "
        "| previous CPU ms | **new CPU ms** | trace event ms | previous tiers ms | new tiers ms |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    if (256, "dynamic") in seconds:
        ms = seconds[(256, "dynamic")] * 1000
        print(
            f"\n256 agents, dynamic: {ms:.2f} ms; target < 20 ms: {'met' if ms < 20 else 'NOT met'}"
        )
    if args.embed:
        print("\nEmbedding through llama-server (all-MiniLM-L6-v2, HttpEmbedder):\n")
        print("\n".join(asyncio.run(embedding_probe([2, 16, 64], 2))))
    print("\nMachine:\n" + "\n".join(machine_lines()))


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--agents", type=int, nargs="+", default=[8, 64, 256, 1024])
    p.add_argument("--no-embed", dest="embed", action="store_false")
    p.add_argument(
        "--previous", default=PREVIOUS, help="git revision of the router to compare against"
    )
    return p.parse_args()


if __name__ == "__main__":
    main(parse())
