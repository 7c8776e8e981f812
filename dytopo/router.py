"""Semantic matching and graph induction: similarity matrix, edges, delivery order sigma."""

from __future__ import annotations

import random
from collections.abc import Sequence

import networkx as nx
from pydantic import BaseModel

from dytopo.embedders.base import Embedder
from dytopo.routing import RoutingConfig


class Edge(BaseModel):
    """`source` sends its private message to `target`; `score` is cos(query_target, key_source)."""

    source: str
    target: str
    score: float
    forced: bool = False
    """Added by force_connect below tau."""


class Routing(BaseModel):
    """One round's graph, as it goes into the trace."""

    mode: str
    agents: list[str]
    """Ids in matrix order."""
    similarity: list[list[float]]
    """similarity[i][j] = cos(query_i, key_j); diagonal included for completeness."""
    tau: float
    edges: list[Edge]
    order: list[str]
    """Delivery order sigma."""
    acyclic: bool
    hub: str | None = None
    """star mode: this round's hub. The configured `routing.hub`, or, when that agent failed its
    step (or none is configured), the first agent that finished its step."""

    def graph(self) -> nx.DiGraph[str]:
        return build_graph(self.agents, self.edges)


def similarity_matrix(
    queries: Sequence[Sequence[float]], keys: Sequence[Sequence[float]]
) -> list[list[float]]:
    """Cosine of L2-normalised vectors: r[i][j] = q_i . k_j."""
    return [
        [round(sum(a * b for a, b in zip(q, k, strict=True)), 6) for k in keys] for q in queries
    ]


def dynamic_edges(
    agents: Sequence[str], sim: Sequence[Sequence[float]], cfg: RoutingConfig
) -> list[Edge]:
    """The paper's rule (strict `> tau`, no self-loops) plus the optional, labelled extensions."""
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


def baseline_edges(
    agents: Sequence[str],
    sim: Sequence[Sequence[float]],
    cfg: RoutingConfig,
    *,
    rng: random.Random,
    dynamic_count: int,
) -> list[Edge]:
    """Fixed patterns through the same code path; scores are still the measured similarities."""
    n = len(agents)
    pairs: list[tuple[int, int]]  # (source j, target i)
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
    else:  # single: one agent, nobody to talk to
        pairs = []
    return [Edge(source=agents[j], target=agents[i], score=sim[i][j]) for j, i in pairs]


def star_hub(agents: Sequence[str], cfg: RoutingConfig) -> str | None:
    """The configured hub if it finished its step this round, else the first agent that did."""
    if cfg.hub in agents:
        return cfg.hub
    return agents[0] if agents else None


def build_graph(agents: Sequence[str], edges: Sequence[Edge]) -> nx.DiGraph[str]:
    graph: nx.DiGraph[str] = nx.DiGraph()
    graph.add_nodes_from(agents)
    for e in edges:
        graph.add_edge(e.source, e.target, weight=e.score, forced=e.forced)
    return graph


def delivery_order(agents: Sequence[str], graph: nx.DiGraph[str]) -> list[str]:
    """Sigma: topological with ties by agent position; with cycles, repeatedly the agent with the
    fewest incoming edges from agents not yet placed (ties by position). No edge is deleted."""
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


def tiers(agents: Sequence[str], edges: Sequence[Edge]) -> list[list[str]]:
    """`tiered` execution: drop the weakest edge of each cycle until acyclic, then group agents
    into topological generations (each tier only depends on earlier ones)."""
    graph = build_graph(agents, edges)
    while not nx.is_directed_acyclic_graph(graph):
        cycle = nx.find_cycle(graph)
        u, v = min(cycle, key=lambda uv: (graph.edges[uv[0], uv[1]]["weight"], uv))[:2]
        graph.remove_edge(u, v)
    position = {a: k for k, a in enumerate(agents)}
    return [sorted(gen, key=position.__getitem__) for gen in nx.topological_generations(graph)]


async def route(
    agents: Sequence[str],
    queries: Sequence[str],
    keys: Sequence[str],
    embedder: Embedder,
    cfg: RoutingConfig,
    *,
    rng: random.Random,
) -> Routing:
    """Embed every need and offer in one batch, then build the round's graph and sigma."""
    vectors = await embedder.embed([*queries, *keys]) if agents else []
    n = len(agents)
    sim = similarity_matrix(vectors[:n], vectors[n:])
    dynamic = dynamic_edges(agents, sim, cfg)
    edges = (
        dynamic
        if cfg.mode == "dynamic"
        else baseline_edges(agents, sim, cfg, rng=rng, dynamic_count=len(dynamic))
    )
    graph = build_graph(agents, edges)
    return Routing(
        mode=cfg.mode,
        agents=list(agents),
        similarity=sim,
        tau=cfg.tau,
        edges=edges,
        order=delivery_order(agents, graph),
        acyclic=nx.is_directed_acyclic_graph(graph),
        hub=star_hub(agents, cfg) if cfg.mode == "star" else None,
    )
