"""Routing cost: similarity matrix + edges + graph + sigma: the first loop router, the previous
numpy router and the current one, side by side in one run.

    .venv/bin/python benchmarks/routing.py                 # 8, 64, 256, 1,024 agents + embedding
    .venv/bin/python benchmarks/routing.py --no-embed      # without the llama-server probe

Vectors are 384-dimension unit vectors (all-MiniLM-L6-v2's size) clustered around n/4 topics:
a need and an offer on one topic score about 0.6, others about 0, so tau = 0.35 gives each
agent about four incoming edges, the sparsity of a real round. `dense` is the same rule at
tau = -1 (every pair: the worst case of the cyclic sigma), `broadcast` the baseline mode.

`old` is the loop router as first written, imported from tests/unit/test_router_reference.py
(the unit tests prove the new one returns the same Routing, float for float). Old cases that
would take more than --old-budget seconds are not run; their cost is extrapolated from the
measured growth and marked `~`. `previous` is dytopo/router.py as of --previous (a git
revision, read with `git show`), fed the vectors as lists, as embedders returned them then;
`new` is fed `Embeddings` (lists plus their float64 array), as they return them now. The two
run alternately, best of 5 each (2 at 1,024), and every result is asserted equal. `cpu` is the
process CPU time of the best call (less noisy than wall time on a shared machine), `load` the
1-minute load average when the row ran. The second table is the embedder's own work on the
2n raw vectors of a round (normalising them): the previous per-vector lists against one array.
`trace` is the routing event's conversion to JSON (it holds the n x n matrix and every edge);
`tiers` is the `tiered` mode's cycle breaking on the graph.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from common import machine_lines

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))

from test_router_reference import (  # the reference lives with its tests
    Fixed,
    reference_route,
    topic_vectors,
)

from dytopo.embedders import Embedder, Embeddings, normalise, normalise_rows
from dytopo.router import route, tiers
from dytopo.routing import RoutingConfig

ROOT = Path(__file__).resolve().parents[1]
PREVIOUS = "3322eac~1"  # the router before embedders returned arrays and sigma got its heap

CASES = {
    "dynamic": RoutingConfig(mode="dynamic", tau=0.35),
    "dense": RoutingConfig(mode="dynamic", tau=-1.0),
    "broadcast": RoutingConfig(mode="broadcast"),
}


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


class FixedArrays(Fixed):
    """The vectors as built-in embedders return them now: lists plus one float64 array."""

    def __init__(self, vectors: list[list[float]]) -> None:
        super().__init__(vectors)
        self.embeddings = Embeddings(np.array(vectors, dtype=np.float64))

    async def embed(self, texts: Any) -> Embeddings:
        return self.embeddings


def old_estimate(case: str, n: int, measured: dict[tuple[str, int], float]) -> float | None:
    """Old seconds at n from the case's largest measured size: the matrix grows as n^2 and the
    cyclic sigma as n^2 * edges (n^3 dense, n^2 * 4n sparse): take n^3 as the floor."""
    sizes = [m for (c, m) in measured if c == case and m < n]
    if not sizes:
        return None
    m = max(sizes)
    return measured[(case, m)] * (n / m) ** 3


def row(
    n: int,
    case: str,
    args: argparse.Namespace,
    old_s: dict[tuple[str, int], float],
    previous: types.ModuleType,
) -> str:
    agents = [f"a{k}" for k in range(n)]
    vectors = topic_vectors(n, 384, np.random.default_rng(n), max(2, n // 4))
    cfg = CASES[case]
    repeats = 5 if n <= 256 else 2
    lists, arrays = Fixed(vectors), FixedArrays(vectors)
    load = os.getloadavg()[0]
    (prev_s, prev_cpu, prev), (new_s, new_cpu, routing) = alternately(
        repeats,
        [
            lambda: run_route(previous.route, agents, lists, cfg),
            lambda: run_route(route, agents, arrays, cfg),
        ],
    )
    assert json.dumps(prev.model_dump()) == json.dumps(routing.model_dump())
    trace_s, _ = best_of(repeats, lambda: json.dumps(routing.model_dump()))
    tiers_s, _ = best_of(min(repeats, 2), lambda: tiers(agents, routing.edges))
    estimate = old_estimate(case, n, old_s)
    if estimate is None or estimate <= args.old_budget:
        seconds, old = best_of(
            1, lambda: reference_route(agents, vectors, cfg, rng=random.Random(0))
        )
        assert json.dumps(old.model_dump()) == json.dumps(routing.model_dump())
        old_s[(case, n)] = seconds
        old_text = f"{seconds * 1000:,.1f}"
    else:
        old_text = f"~{estimate:,.0f} s (not run)"
    print(
        f"{n} {case}: new {new_s * 1000:.2f} ms, previous {prev_s * 1000:.2f}, old {old_text}",
        file=sys.stderr,
        flush=True,
    )
    return (
        f"| {n:,} | {case} | {len(routing.edges):,} | {load:.1f} | {old_text} "
        f"| {prev_s * 1000:,.2f} | **{new_s * 1000:,.2f}** | {prev_s / new_s:,.1f}x "
        f"| {prev_cpu * 1000:,.2f} | **{new_cpu * 1000:,.2f}** | {trace_s * 1000:,.1f} "
        f"| {tiers_s * 1000:,.1f} |"
    )


def normalising_row(n: int) -> str:
    """The embedder's work on a round's 2n raw vectors: previous lists against one array."""
    raw = (np.random.default_rng(n).standard_normal((2 * n, 384)) * 3).tolist()
    load = os.getloadavg()[0]
    (prev_s, prev_cpu, prev), (new_s, new_cpu, new) = alternately(
        5 if n <= 256 else 2,
        [lambda: [normalise(v) for v in raw], lambda: normalise_rows(raw)],
    )
    assert json.dumps(prev) == json.dumps(new)
    return (
        f"| {n:,} | {2 * n:,} | {load:.1f} | {prev_s * 1000:,.2f} | **{new_s * 1000:,.2f}** "
        f"| {prev_cpu * 1000:,.2f} | **{new_cpu * 1000:,.2f}** |"
    )


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
    old_s: dict[tuple[str, int], float] = {}
    rows = [
        row(n, case, args, old_s, previous)
        for n in args.agents
        for case in ("dynamic", "dense", "broadcast")
    ]
    normalising = [normalising_row(n) for n in args.agents]
    print(f"Command: `.venv/bin/python {' '.join(sys.argv)}` (previous = {args.previous})\n")
    print(
        "| agents | case | edges | load | old ms | previous ms | **new ms** | previous/new "
        "| previous CPU ms | **new CPU ms** | trace event ms | tiers ms |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print("\nEmbedder side: normalising a round's raw vectors (384 floats each):\n")
    print(
        "| agents | vectors | load | previous ms (lists) | **new ms (array)** "
        "| previous CPU ms | **new CPU ms** |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(normalising))
    if args.embed:
        print("\nEmbedding through llama-server (all-MiniLM-L6-v2, HttpEmbedder):\n")
        print("\n".join(asyncio.run(embedding_probe([2, 16, 64], 2))))
    print("\nMachine:\n" + "\n".join(machine_lines()))


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--agents", type=int, nargs="+", default=[8, 64, 256, 1024])
    p.add_argument(
        "--old-budget", type=float, default=60.0, help="skip old cases estimated above this (s)"
    )
    p.add_argument("--no-embed", dest="embed", action="store_false")
    p.add_argument(
        "--previous", default=PREVIOUS, help="git revision of the router to compare against"
    )
    return p.parse_args()


if __name__ == "__main__":
    main(parse())
