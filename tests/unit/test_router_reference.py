"""The array router gives exactly what the plain loops of ALGORITHM.md give.

`reference_*` below is the router as it was written first (pure Python, O(n^2 * dim) for the
matrix and O(n^2 * degree) for sigma); benchmarks/routing.py imports it to time old against new.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import networkx as nx
import numpy as np
import pytest

from dytopo.embedders.base import Embedder, normalise
from dytopo.router import (
    Edge,
    Routing,
    baseline_edges,
    build_graph,
    delivery_order,
    dynamic_edges,
    route,
    similarity_matrix,
    star_hub,
    tiers,
)
from dytopo.routing import RoutingConfig

# -- the reference: the first, loop-based router ---------------------------------------------


def reference_similarity(
    queries: Sequence[Sequence[float]], keys: Sequence[Sequence[float]]
) -> list[list[float]]:
    return [
        [round(sum(a * b for a, b in zip(q, k, strict=True)), 6) for k in keys] for q in queries
    ]


def reference_dynamic_edges(
    agents: Sequence[str], sim: Sequence[Sequence[float]], cfg: RoutingConfig
) -> list[Edge]:
    n = len(agents)
    edges: list[Edge] = []
    for i in range(n):
        incoming = sorted(
            ((sim[i][j], j) for j in range(n) if j != i and sim[i][j] > cfg.tau),
            key=lambda sj: (-sj[0], sj[1]),
        )
        if cfg.top_k is not None:
            incoming = incoming[: cfg.top_k]
        forced = False
        if not incoming and cfg.force_connect and n > 1:
            best = max((sim[i][j], -j) for j in range(n) if j != i)
            incoming, forced = [(best[0], -best[1])], True
        if cfg.max_in_degree is not None:
            incoming = incoming[: cfg.max_in_degree]
        edges += [
            Edge(source=agents[j], target=agents[i], score=s, forced=forced) for s, j in incoming
        ]
    return edges


def reference_baseline_edges(
    agents: Sequence[str],
    sim: Sequence[Sequence[float]],
    cfg: RoutingConfig,
    *,
    rng: random.Random,
    dynamic_count: int,
) -> list[Edge]:
    n = len(agents)
    pairs: list[tuple[int, int]]
    if cfg.mode == "broadcast":
        pairs = [(j, i) for i in range(n) for j in range(n) if i != j]
    elif cfg.mode == "chain":
        pairs = [(k, k + 1) for k in range(n - 1)]
    elif cfg.mode == "star":
        center = star_hub(agents, cfg)
        hub = agents.index(center) if center is not None else 0
        pairs = [(hub, k) for k in range(n) if k != hub] + [(k, hub) for k in range(n) if k != hub]
    elif cfg.mode == "random":
        every = [(j, i) for i in range(n) for j in range(n) if i != j]
        pairs = sorted(rng.sample(every, min(dynamic_count, len(every))))
    else:
        pairs = []
    return [Edge(source=agents[j], target=agents[i], score=sim[i][j]) for j, i in pairs]


def reference_graph(agents: Sequence[str], edges: Sequence[Edge]) -> nx.DiGraph[str]:
    graph: nx.DiGraph[str] = nx.DiGraph()
    graph.add_nodes_from(agents)
    for e in edges:
        graph.add_edge(e.source, e.target, weight=e.score, forced=e.forced)
    return graph


def reference_order(agents: Sequence[str], graph: nx.DiGraph[str]) -> list[str]:
    position = {a: k for k, a in enumerate(agents)}
    if nx.is_directed_acyclic_graph(graph):
        return list(nx.lexicographical_topological_sort(graph, key=position.__getitem__))
    placed: list[str] = []
    remaining = list(agents)
    while remaining:

        def unplaced_in(a: str) -> int:
            return sum(1 for p in graph.predecessors(a) if p not in placed)

        pick = min(remaining, key=lambda a: (unplaced_in(a), position[a]))
        placed.append(pick)
        remaining.remove(pick)
    return placed


def reference_route(
    agents: Sequence[str],
    vectors: Sequence[Sequence[float]],
    cfg: RoutingConfig,
    *,
    rng: random.Random,
) -> Routing:
    """`route` after embedding: `vectors` are the queries, then the keys."""
    n = len(agents)
    sim = reference_similarity(vectors[:n], vectors[n:])
    dynamic = reference_dynamic_edges(agents, sim, cfg)
    edges = (
        dynamic
        if cfg.mode == "dynamic"
        else reference_baseline_edges(agents, sim, cfg, rng=rng, dynamic_count=len(dynamic))
    )
    graph = reference_graph(agents, edges)
    return Routing(
        mode=cfg.mode,
        agents=list(agents),
        similarity=sim,
        tau=cfg.tau,
        edges=edges,
        order=reference_order(agents, graph),
        acyclic=nx.is_directed_acyclic_graph(graph),
        hub=star_hub(agents, cfg) if cfg.mode == "star" else None,
    )


# -- inputs ----------------------------------------------------------------------------------


def topic_vectors(n: int, dim: int, rng: np.random.Generator, topics: int) -> list[list[float]]:
    """2n unit vectors (n queries, then n keys) around shared topics: needs and offers on one
    topic score about 0.6, others about 0, as sentence embeddings of descriptors do."""
    centers = rng.standard_normal((topics, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    noise = rng.standard_normal((2 * n, dim))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    v = 0.8 * centers[rng.integers(0, topics, 2 * n)] + 0.6 * noise
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.tolist()  # type: ignore[no-any-return]


class Fixed(Embedder):
    """Hands out given vectors in order, whatever the texts."""

    name = "fixed"

    def __init__(self, vectors: Sequence[Sequence[float]]) -> None:
        self.vectors = [list(v) for v in vectors]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        assert len(texts) == len(self.vectors)
        return self.vectors


def exact(routing: Routing) -> str:
    """Every field, floats written out (so -0.0 and 0.0 differ)."""
    return json.dumps(routing.model_dump())


async def new_route(
    agents: Sequence[str], vectors: Sequence[Sequence[float]], cfg: RoutingConfig, seed: int
) -> Routing:
    n = len(agents)
    return await route(agents, ["q"] * n, ["k"] * n, Fixed(vectors), cfg, rng=random.Random(seed))


# -- equality --------------------------------------------------------------------------------


def test_scores_next_to_a_rounding_boundary_round_as_the_loop_rounds_them() -> None:
    # q . k is exactly q[0] here: odd multiples of 5e-7, where a matrix product's last bits and
    # numpy's own rounding (x * 1e6, then to even) both disagree with round(x, 6).
    rng = random.Random(1)
    queries = [[(rng.randrange(-999_999, 999_999) + 0.5) / 1e6, 0.0] for _ in range(300)]
    queries += [[rng.uniform(-1, 1), rng.uniform(-1, 1)] for _ in range(50)]
    keys = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]
    assert json.dumps(similarity_matrix(queries, keys)) == json.dumps(
        reference_similarity(queries, keys)
    )


@pytest.mark.parametrize("dim", [3, 64, 384])
def test_similarity_equals_the_loop_bit_for_bit(dim: int) -> None:
    rng = np.random.default_rng(dim)
    for n in (1, 2, 7, 40):
        vectors = topic_vectors(n, dim, rng, max(2, n // 4))
        unnormalised = (np.asarray(vectors) * rng.uniform(0.1, 3.0, (2 * n, 1))).tolist()
        for v in (vectors, unnormalised):
            assert json.dumps(similarity_matrix(v[:n], v[n:])) == json.dumps(
                reference_similarity(v[:n], v[n:])
            )


CONFIGS = [
    RoutingConfig(tau=0.35),
    RoutingConfig(tau=0.0),
    RoutingConfig(tau=-1.0),  # every pair: a dense, cyclic graph
    RoutingConfig(tau=0.9),  # nobody: isolated agents
    RoutingConfig(tau=0.3, top_k=2),
    RoutingConfig(tau=0.1, max_in_degree=1),
    RoutingConfig(tau=0.3, top_k=3, max_in_degree=2, force_connect=True),
    RoutingConfig(tau=0.95, force_connect=True),
    RoutingConfig(mode="broadcast"),
    RoutingConfig(mode="chain"),
    RoutingConfig(mode="star"),
    RoutingConfig(mode="star", hub="a3"),
    RoutingConfig(mode="random", tau=0.3),
    RoutingConfig(mode="single"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.mode}-{c.tau}")
async def test_route_equals_the_loop_router(cfg: RoutingConfig) -> None:
    rng = np.random.default_rng(7)
    for n in (0, 1, 2, 3, 5, 12, 33):
        for _ in range(3):
            agents = [f"a{k}" for k in range(n)]
            vectors = topic_vectors(n, 16, rng, max(2, n // 4)) if n else []
            seed = int(rng.integers(1000))
            old = reference_route(agents, vectors, cfg, rng=random.Random(seed))
            new = await new_route(agents, vectors, cfg, seed)
            assert exact(new) == exact(old)


def test_ties_go_to_the_lower_position() -> None:
    agents = ["a", "b", "c", "d"]
    sim = [[0.5] * 4 for _ in range(4)]  # every score equal
    for cfg in (
        RoutingConfig(tau=0.1, top_k=2),
        RoutingConfig(tau=0.9, force_connect=True),
        RoutingConfig(tau=0.1, max_in_degree=1),
    ):
        assert exact_edges(dynamic_edges(agents, sim, cfg)) == exact_edges(
            reference_dynamic_edges(agents, sim, cfg)
        )
    broadcast = RoutingConfig(mode="broadcast")
    assert exact_edges(
        baseline_edges(agents, sim, broadcast, rng=random.Random(0), dynamic_count=0)
    ) == exact_edges(
        reference_baseline_edges(agents, sim, broadcast, rng=random.Random(0), dynamic_count=0)
    )


def exact_edges(edges: Sequence[Edge]) -> str:
    return json.dumps([e.model_dump() for e in edges])


def random_graph(n: int, p: float, rng: random.Random) -> list[Edge]:
    return [
        Edge(source=f"a{j}", target=f"a{i}", score=round(rng.uniform(-1, 1), 2))
        for i in range(n)
        for j in range(n)
        if i != j and rng.random() < p
    ]


def test_delivery_order_equals_the_loop_on_random_graphs() -> None:
    rng = random.Random(3)
    for n in (1, 2, 4, 9, 25):
        agents = [f"a{k}" for k in range(n)]
        for p in (0.0, 0.05, 0.15, 0.4, 1.0):
            for _ in range(4):
                graph = build_graph(agents, random_graph(n, p, rng))
                assert delivery_order(agents, graph) == reference_order(agents, graph)


# -- tiers -----------------------------------------------------------------------------------


def test_tiers_are_topological_and_drop_only_the_weakest_edge_of_a_cycle() -> None:
    rng = random.Random(5)
    for n in (1, 3, 6, 12):
        agents = [f"a{k}" for k in range(n)]
        for p in (0.0, 0.2, 0.5, 1.0):
            edges = random_graph(n, p, rng)
            layers = tiers(agents, edges)
            tier_of = {a: t for t, layer in enumerate(layers) for a in layer}
            assert sorted(tier_of) == sorted(agents)
            assert all(layer == sorted(layer, key=agents.index) for layer in layers)
            kept = [e for e in edges if tier_of[e.source] < tier_of[e.target]]
            graph = reference_graph(agents, kept)
            for e in edges:
                if tier_of[e.source] < tier_of[e.target]:
                    continue
                # A dropped edge closes a cycle of kept edges, each at least as strong.
                strong = graph.edge_subgraph(
                    (k.source, k.target) for k in kept if k.score >= e.score
                )
                assert e.target in strong
                assert e.source in strong
                assert nx.has_path(strong, e.target, e.source)
            # Every tier after the first waits for an agent of the tier before it.
            for t, layer in enumerate(layers[1:], start=1):
                for a in layer:
                    assert any(tier_of[k.source] == t - 1 for k in kept if k.target == a)


def test_tiers_of_one_cycle_drop_its_weakest_edge() -> None:
    agents = ["a", "b", "c", "d"]
    edges = [
        Edge(source="a", target="b", score=0.9),
        Edge(source="b", target="c", score=0.4),
        Edge(source="c", target="d", score=0.8),
        Edge(source="d", target="a", score=0.7),
    ]
    assert tiers(agents, edges) == [["c"], ["d"], ["a"], ["b"]]


# -- no per-pair Python loops ----------------------------------------------------------------


@contextmanager
def python_calls() -> Iterator[list[int]]:
    """Counts Python-level function calls and generator resumptions while it is open."""
    count = [0]

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            count[0] += 1

    sys.setprofile(profile)
    try:
        yield count
    finally:
        sys.setprofile(None)


async def test_routing_256_agents_makes_no_per_pair_python_calls() -> None:
    # Speed is measured by benchmarks/routing.py; here, structure: routing costs Python calls
    # per agent and per edge, never per pair of agents (65,280 pairs) or per vector component.
    n = 256
    agents = [f"a{k}" for k in range(n)]
    vectors = topic_vectors(n, 384, np.random.default_rng(0), n // 4)
    cfg = RoutingConfig(tau=0.35)
    with python_calls() as calls:
        routing = await new_route(agents, vectors, cfg, 0)
    assert not routing.acyclic  # the cyclic sigma, the costly case
    assert 2 * n < len(routing.edges) < 20 * n
    assert calls[0] < 20 * (n + len(routing.edges))


class CountingList(list[Edge]):
    iterations = 0

    def __iter__(self) -> Iterator[Edge]:
        CountingList.iterations += 1
        return super().__iter__()


def test_delivery_reads_the_edge_list_once_not_once_per_agent() -> None:
    # A dense round of n agents has n^2 edges: a pass per agent would be n^3.
    from dytopo.agent import AgentOutput
    from dytopo.delivery import deliver
    from dytopo.state import RunState

    agents = [f"a{k}" for k in range(6)]
    edges = CountingList(
        Edge(source=s, target=t, score=0.5) for t in agents for s in agents if s != t
    )
    routing = Routing.model_construct(
        mode="broadcast",
        agents=agents,
        similarity=[],
        tau=0.0,
        edges=edges,
        order=agents,
        acyclic=False,
    )
    outputs = {a: AgentOutput(public=a, private=f"from {a}", query="q", key="k") for a in agents}
    state = RunState.begin("run", "task", agents, 0)
    CountingList.iterations = 0
    _, deliveries = deliver(state, 1, routing, outputs)
    assert len(deliveries) == 30
    assert CountingList.iterations == 1


def test_normalising_an_embedding_makes_no_python_call_per_component() -> None:
    vector = [float(k % 7) - 3.5 for k in range(10_000)]
    with python_calls() as calls:
        unit = normalise(vector)
    assert calls[0] < 10
    assert abs(sum(x * x for x in unit) - 1.0) < 1e-12
