"""The router against a plain reference of ALGORITHM.md, steps 3 to 5, on random inputs.

`reference_*` below is the algorithm written as loops over agents (O(n^2 * dim) for the matrix,
O(n^2 * degree) for sigma, a path search per edge for tiers), slow and obviously right. The
router must give the same `Routing` and the same tiers.

Two kinds of input. `grid_vectors` are exact in floating point (unit vectors of entries +-1/8:
every dot product is exact, in any summation order), so `route` can be compared end to end,
float for float, and their coarse scores tie often. `topic_vectors` are
realistic (scores around 0.6 and 0 with float noise); on those the matrix is compared within a
tolerance, and the edge rule, sigma and tiers on the very same exact scores.
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
from dytopo.routing.config import RoutingConfig
from dytopo.routing.router import (
    Edge,
    Routing,
    baseline_edges,
    build_graph,
    cosine_similarity,
    delivery_order,
    dynamic_edges,
    route,
    similarity_matrix,
    star_hub,
    tiers,
)

# -- the reference ---------------------------------------------------------------------------


def reference_similarity(
    queries: Sequence[Sequence[float]], keys: Sequence[Sequence[float]]
) -> list[list[float]]:
    """cos(q, k) = q . k: embedders hand out unit vectors."""
    return [[sum(a * b for a, b in zip(q, k, strict=True)) for k in keys] for q in queries]


def reference_dynamic_edges(
    agents: Sequence[str], exact: Sequence[Sequence[float]], cfg: RoutingConfig
) -> list[Edge]:
    """Edge j -> i iff exact[i][j] > tau, i != j; ranked (and shown) by the 6-place score."""
    n = len(agents)
    shown = [[round(s, 6) for s in row] for row in exact]
    edges: list[Edge] = []
    for i in range(n):
        incoming = sorted(
            ((shown[i][j], j) for j in range(n) if j != i and exact[i][j] > cfg.tau),
            key=lambda sj: (-sj[0], sj[1]),
        )
        if cfg.top_k is not None:
            incoming = incoming[: cfg.top_k]
        forced = False
        if not incoming and cfg.force_connect and n > 1:
            best = max((shown[i][j], -j) for j in range(n) if j != i)
            incoming, forced = [(best[0], -best[1])], True
        if cfg.max_in_degree is not None:
            incoming = incoming[: cfg.max_in_degree]
        edges += [
            Edge(source=agents[j], target=agents[i], score=s, forced=forced) for s, j in incoming
        ]
    return edges


def reference_baseline_edges(
    agents: Sequence[str],
    shown: Sequence[Sequence[float]],
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
        hub = agents.index(cfg.hub) if cfg.hub in agents else 0
        pairs = [(hub, k) for k in range(n) if k != hub] + [(k, hub) for k in range(n) if k != hub]
    elif cfg.mode == "random":
        every = [(j, i) for i in range(n) for j in range(n) if i != j]
        pairs = sorted(rng.sample(every, min(dynamic_count, len(every))))
    else:
        pairs = []
    return [Edge(source=agents[j], target=agents[i], score=shown[i][j]) for j, i in pairs]


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


def reference_tiers(agents: Sequence[str], edges: Sequence[Edge]) -> list[list[str]]:
    """Edges strongest first (ties: source, then target position); keep each unless the kept
    ones already lead from its target back to its source; generations in agent order."""
    position = {a: k for k, a in enumerate(agents)}
    kept: nx.DiGraph[str] = nx.DiGraph()
    kept.add_nodes_from(agents)
    for e in sorted(edges, key=lambda e: (-e.score, position[e.source], position[e.target])):
        if e.source != e.target and not nx.has_path(kept, e.target, e.source):
            kept.add_edge(e.source, e.target)
    return [sorted(tier, key=position.__getitem__) for tier in nx.topological_generations(kept)]


def reference_routing(
    agents: Sequence[str],
    exact: Sequence[Sequence[float]],
    cfg: RoutingConfig,
    *,
    rng: random.Random,
) -> Routing:
    """Steps 3 to 5 from the exact score matrix."""
    shown = [[round(s, 6) for s in row] for row in exact]
    dynamic = reference_dynamic_edges(agents, exact, cfg)
    edges = (
        dynamic
        if cfg.mode == "dynamic"
        else reference_baseline_edges(agents, shown, cfg, rng=rng, dynamic_count=len(dynamic))
    )
    graph = reference_graph(agents, edges)
    return Routing(
        mode=cfg.mode,
        agents=list(agents),
        similarity=shown,
        tau=cfg.tau,
        edges=edges,
        order=reference_order(agents, graph),
        acyclic=nx.is_directed_acyclic_graph(graph),
        hub=star_hub(agents, cfg) if cfg.mode == "star" else None,
    )


def reference_route(
    agents: Sequence[str],
    vectors: Sequence[Sequence[float]],
    cfg: RoutingConfig,
    *,
    rng: random.Random,
) -> Routing:
    """`route` after embedding: `vectors` are the queries, then the keys."""
    n = len(agents)
    return reference_routing(agents, reference_similarity(vectors[:n], vectors[n:]), cfg, rng=rng)


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


def grid_vectors(n: int, rng: random.Random, topics: int) -> list[list[float]]:
    """2n unit vectors whose cosines are exact in floating point: 64 entries of +-1/8, each a
    topic's signs with a fifth flipped, so cosines are multiples of 1/32 around 0.36 within a
    topic and 0 across, with many ties."""
    signs = [[rng.choice((-1.0, 1.0)) for _ in range(64)] for _ in range(topics)]
    return [
        [s / 8 * (-1 if rng.random() < 0.2 else 1) for s in rng.choice(signs)] for _ in range(2 * n)
    ]


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


def exact_edges(edges: Sequence[Edge]) -> str:
    return json.dumps([e.model_dump() for e in edges])


async def new_route(
    agents: Sequence[str], vectors: Sequence[Sequence[float]], cfg: RoutingConfig, seed: int
) -> Routing:
    n = len(agents)
    return await route(agents, ["q"] * n, ["k"] * n, Fixed(vectors), cfg, rng=random.Random(seed))


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


# -- equality --------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.mode}-{c.tau}")
async def test_route_equals_the_reference_end_to_end(cfg: RoutingConfig) -> None:
    # Exact inputs: the same Routing, float for float, whatever order the sums run in.
    rng = random.Random(7)
    for n in (0, 1, 2, 3, 5, 10, 24, 60):
        for _ in range(3):
            agents = [f"a{k}" for k in range(n)]
            vectors = grid_vectors(n, rng, max(2, n // 4))
            seed = rng.randrange(1000)
            old = reference_route(agents, vectors, cfg, rng=random.Random(seed))
            new = await new_route(agents, vectors, cfg, seed)
            assert exact(new) == exact(old)


@pytest.mark.parametrize("dim", [3, 64, 384])
def test_cosine_equals_the_loop_and_the_trace_shows_6_places(dim: int) -> None:
    rng = np.random.default_rng(dim)
    for n in (1, 2, 7, 40, 100):  # 100 x 100 at dim 384: several product blocks, one ragged
        v = topic_vectors(n, dim, rng, max(2, n // 4))
        v[0] = [0.0] * dim  # an empty text's zero vector scores 0 against everything
        scores = cosine_similarity(v[:n], v[n:])
        assert np.allclose(scores, reference_similarity(v[:n], v[n:]), rtol=0, atol=1e-12)
        assert scores[0].tolist() == [0.0] * n
        shown = np.array(similarity_matrix(v[:n], v[n:]))
        assert np.all(np.abs(shown - scores) <= 5e-7 + 1e-15)
        assert np.array_equal(shown, np.round(shown * 1e6) / 1e6)


async def test_route_on_realistic_vectors_follows_the_reference_rules() -> None:
    # tau is the recorded value of a real score a hair above it: only the exact score makes
    # that edge, and it shows as tau in the trace.
    rng = np.random.default_rng(5)
    for n in (4, 7, 12, 40):
        for top_k in (None, 2):
            agents = [f"a{k}" for k in range(n)]
            vectors = topic_vectors(n, 384, rng, max(2, n // 4))
            scores = cosine_similarity(vectors[:n], vectors[n:])  # the loop's, within 1e-12
            hair = max(
                s
                for i, row in enumerate(scores.tolist())
                for j, s in enumerate(row)
                if i != j and s > round(s, 6)
            )
            cfg = RoutingConfig(tau=round(hair, 6), top_k=top_k)
            expected = reference_routing(agents, scores.tolist(), cfg, rng=random.Random(0))
            assert exact(await new_route(agents, vectors, cfg, 0)) == exact(expected)
            assert any(e.score == cfg.tau for e in expected.edges)


def near_tau_scores(n: int, rng: random.Random, tau: float) -> list[list[float]]:
    """Scores at tau, a hair above or below it, and ties that only the 6-place rounding makes
    (0.6000001 and 0.6000004 both show as 0.6)."""
    choices = [tau, tau + 4e-7, tau - 4e-7, tau + 1e-12, 0.6000001, 0.6000004, 0.6, 0.2]
    return [[rng.choice(choices) for _ in range(n)] for _ in range(n)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.mode}-{c.tau}")
def test_edge_rule_sigma_and_tiers_equal_the_reference_on_the_same_scores(
    cfg: RoutingConfig,
) -> None:
    rng = random.Random(11)
    np_rng = np.random.default_rng(11)
    for n in (1, 2, 5, 12, 40, 90):
        agents = [f"a{k}" for k in range(n)]
        vectors = topic_vectors(n, 32, np_rng, max(2, n // 4))
        for scores in (
            cosine_similarity(vectors[:n], vectors[n:]),
            np.array(near_tau_scores(n, rng, max(cfg.tau, 0.0))),
        ):
            seed = rng.randrange(1000)
            expected = reference_routing(agents, scores.tolist(), cfg, rng=random.Random(seed))
            shown = scores.round(6)
            edges = (
                dynamic_edges(agents, shown, cfg, exact=scores)
                if cfg.mode == "dynamic"
                else baseline_edges(
                    agents,
                    shown,
                    cfg,
                    rng=random.Random(seed),
                    dynamic_count=len(dynamic_edges(agents, shown, cfg, exact=scores)),
                )
            )
            assert exact_edges(edges) == exact_edges(expected.edges)
            graph = build_graph(agents, edges)
            assert delivery_order(agents, graph) == expected.order
            assert tiers(agents, edges) == reference_tiers(agents, edges)


def random_graph(n: int, p: float, rng: random.Random) -> list[Edge]:
    """Scores on two decimals: many equal ones."""
    return [
        Edge(source=f"a{j}", target=f"a{i}", score=round(rng.uniform(-1, 1), 2))
        for i in range(n)
        for j in range(n)
        if i != j and rng.random() < p
    ]


def test_delivery_order_equals_the_reference_on_random_graphs() -> None:
    rng = random.Random(3)
    for n in (1, 2, 4, 9, 25, 60):
        agents = [f"a{k}" for k in range(n)]
        for p in (0.0, 0.02, 0.05, 0.15, 0.4, 1.0):
            for _ in range(3):
                graph = build_graph(agents, random_graph(n, p, rng))
                assert delivery_order(agents, graph) == reference_order(agents, graph)


def test_tiers_equal_the_reference_on_random_graphs() -> None:
    rng = random.Random(4)
    for n in (1, 2, 4, 9, 25, 50):
        agents = [f"a{k}" for k in range(n)]
        for p in (0.0, 0.05, 0.15, 0.4, 1.0):
            for _ in range(3):
                edges = random_graph(n, p, rng)
                rng.shuffle(edges)  # the result must not depend on the list's order
                assert tiers(agents, edges) == reference_tiers(agents, edges)


# -- tiers, by their properties --------------------------------------------------------------


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
    from dytopo.agents.base import AgentOutput
    from dytopo.swarm.delivery import deliver
    from dytopo.swarm.state import RunState

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
