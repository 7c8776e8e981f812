"""Semantic matching and graph induction: ALGORITHM.md, steps 3 to 5, for one round.

1. Normalise: every need (`query`) and offer (`key`) arrives as a unit vector (the `Embedder`
   contract; the built-in embedders call `normalise_rows`). Normalising again here would move
   scores by a last bit, and a score exactly at tau (a hash embedding's 0.5) would turn into
   an edge.
2. Similarity: r[i][j] = cos(query_i, key_j) = query_i . key_j, one numpy matrix product.
3. Edges: j -> i (provider j sends its private message to consumer i) iff r[i][j] > tau,
   strictly, on the exact score; never i -> i. Extensions, off unless configured: `top_k` and
   `max_in_degree` keep a receiver's best incoming edges, `force_connect` gives a receiver left
   without any its best one. The baselines (broadcast, chain, star, random, single) replace this
   step with a fixed pattern.
4. The graph: a networkx DiGraph of the agents, each edge weighted by its score.
5. Sigma, the delivery order: topological on a DAG; with cycles, repeatedly the agent with the
   fewest incoming edges from agents not yet placed. Ties go to the earlier agent (position in
   `agents`).

The trace records every score to 6 decimal places; an edge shows, and is ranked by, that
recorded score, but the `> tau` test reads the exact one (0.3500004 is an edge at tau 0.35).
`tiers` orders the agents for `execution: tiered`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import networkx as nx
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from dytopo.embedders.base import Embedder, Embeddings
from dytopo.routing.config import RoutingConfig

Floats = npt.NDArray[np.float64]

PLACES = 6
"""Decimal places of a score in the trace."""


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


# -- steps 1 and 2: the cosine matrix of unit vectors -----------------------------------------


def cosine_similarity(
    queries: Sequence[Sequence[float]] | Floats, keys: Sequence[Sequence[float]] | Floats
) -> Floats:
    """r[i][j] = cos(query_i, key_j) = query_i . key_j for unit vectors; exact (not rounded)."""
    if not len(queries) or not len(keys):
        return np.zeros((len(queries), len(keys)))
    q, k = np.asarray(queries, dtype=np.float64), np.asarray(keys, dtype=np.float64)
    if q.ndim != 2 or k.ndim != 2 or q.shape[1] != k.shape[1]:
        raise ValueError(f"queries {q.shape} and keys {k.shape} are not vectors of one length")
    return _one_thread_product(q, k)


# The one speed measure kept: OpenBLAS runs a product of more than 262,144 multiply-adds on all
# cores, and next to a busy llama-server its threads wait for a core. benchmarks/routing.py
# (load ~3) routed 64 agents in 24 ms and 256 in 37-39 ms with a plain `q @ k.T` (target for
# 256: under 20 ms); blocks under that size stay on the calling thread.
_ONE_THREAD = 262_144


def _one_thread_product(q: Floats, k: Floats) -> Floats:
    """q @ k.T, in blocks of 16 queries by as many keys as keep OpenBLAS on this thread."""
    rows = 16
    cols = max(1, _ONE_THREAD // (rows * max(1, q.shape[1])))
    out = np.empty((len(q), len(k)))
    for i in range(0, len(q), rows):
        for j in range(0, len(k), cols):
            out[i : i + rows, j : j + cols] = q[i : i + rows] @ k[j : j + cols].T
    return out


def similarity_matrix(
    queries: Sequence[Sequence[float]] | Floats, keys: Sequence[Sequence[float]] | Floats
) -> list[list[float]]:
    """The cosine matrix as the trace records it: each score rounded to 6 places."""
    rows: list[list[float]] = cosine_similarity(queries, keys).round(PLACES).tolist()
    return rows


# -- step 3: edges ---------------------------------------------------------------------------


def dynamic_edges(
    agents: Sequence[str],
    sim: Sequence[Sequence[float]] | Floats,
    cfg: RoutingConfig,
    *,
    exact: Floats | None = None,
) -> list[Edge]:
    """The paper's rule (strict `> tau`, no self-loops) plus the optional, labelled extensions.

    `sim` is the matrix as recorded; the edges carry its scores and are ranked by them. `exact`
    (default: `sim`) holds the unrounded scores the `> tau` test reads. Edges are listed
    receiver by receiver in agent order, each receiver's strongest first, equal scores by the
    earlier source.
    """
    n = len(agents)
    shown = np.asarray(sim, dtype=np.float64)
    above_tau = (shown if exact is None else exact) > cfg.tau
    edges: list[Edge] = []
    for i, row in enumerate(shown.tolist()):
        senders = [j for j in np.flatnonzero(above_tau[i]).tolist() if j != i]
        # Strongest first. The sort is stable, reversed too: equal scores keep ascending
        # positions, so a tie goes to the earlier source.
        senders.sort(key=row.__getitem__, reverse=True)
        if cfg.top_k is not None:
            senders = senders[: cfg.top_k]
        forced = not senders and cfg.force_connect and n > 1
        if forced:
            others = shown[i].copy()
            others[i] = -np.inf
            senders = [int(np.argmax(others))]  # the first maximum: the earlier source
        if cfg.max_in_degree is not None:
            senders = senders[: cfg.max_in_degree]
        edges += [
            Edge(source=agents[j], target=agents[i], score=row[j], forced=forced) for j in senders
        ]
    return edges


def baseline_edges(
    agents: Sequence[str],
    sim: Sequence[Sequence[float]] | Floats,
    cfg: RoutingConfig,
    *,
    rng: random.Random,
    dynamic_count: int,
) -> list[Edge]:
    """Fixed patterns through the same code path; scores are still the measured similarities.

    broadcast: every ordered pair, receiver by receiver. chain: each agent to the next. star:
    the hub to every other agent, then every other agent to the hub. random: `dynamic_count`
    pairs sampled with `rng`, sorted by (source, target). single: none.
    """
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
    scores: list[list[float]] = np.asarray(sim, dtype=np.float64).tolist()
    return [Edge(source=agents[j], target=agents[i], score=scores[i][j]) for j, i in pairs]


def star_hub(agents: Sequence[str], cfg: RoutingConfig) -> str | None:
    """The configured hub if it finished its step this round, else the first agent that did."""
    if cfg.hub in agents:
        return cfg.hub
    return agents[0] if agents else None


# -- steps 4 and 5: the graph and sigma ------------------------------------------------------


def build_graph(agents: Sequence[str], edges: Sequence[Edge]) -> nx.DiGraph[str]:
    graph: nx.DiGraph[str] = nx.DiGraph()
    graph.add_nodes_from(agents)
    graph.add_edges_from(
        (e.source, e.target, {"weight": e.score, "forced": e.forced}) for e in edges
    )
    return graph


def delivery_order(agents: Sequence[str], graph: nx.DiGraph[str]) -> list[str]:
    """Sigma: topological with ties by agent position; with cycles, repeatedly the agent with the
    fewest incoming edges from agents not yet placed (ties by position). No edge is deleted."""
    position = {a: k for k, a in enumerate(agents)}
    if nx.is_directed_acyclic_graph(graph):
        return list(nx.lexicographical_topological_sort(graph, key=position.__getitem__))
    unplaced_in = {a: graph.in_degree(a) for a in agents}  # in agent order
    order: list[str] = []
    while unplaced_in:
        pick = min(unplaced_in, key=unplaced_in.__getitem__)  # the first minimum: earliest agent
        del unplaced_in[pick]
        order.append(pick)
        for consumer in graph.successors(pick):
            if consumer in unplaced_in:
                unplaced_in[consumer] -= 1
    return order


def tiers(agents: Sequence[str], edges: Sequence[Edge]) -> list[list[str]]:
    """`tiered` execution: drop the weakest edge of every cycle, then group agents into
    topological generations (each tier only depends on earlier ones), each in agent order.

    Edges are kept strongest first (equal scores: the earlier source, then target, in agent
    order, as sigma breaks its ties), each unless it closes a cycle with the edges already
    kept. So every dropped edge is the weakest of a cycle, and the result does not depend on
    which cycle a search meets first.
    """
    position = {a: k for k, a in enumerate(agents)}
    kept: nx.DiGraph[str] = nx.DiGraph()
    kept.add_nodes_from(agents)
    reaches = {a: {a} for a in agents}  # reaches[x]: x itself and every agent x reaches
    reached_by = {a: {a} for a in agents}  # the converse
    for e in sorted(edges, key=lambda e: (-e.score, position[e.source], position[e.target])):
        u, v = e.source, e.target
        if u in reaches[v]:
            continue  # v reaches u along stronger (or equal, later) edges: a cycle, or u == v
        kept.add_edge(u, v)
        if v not in reaches[u]:  # new pairs: whatever reaches u now reaches all that v reaches
            for x in reached_by[u]:
                reaches[x] |= reaches[v]
            for y in reaches[v]:
                reached_by[y] |= reached_by[u]
    return [sorted(tier, key=position.__getitem__) for tier in nx.topological_generations(kept)]


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
    rows = vectors.array if isinstance(vectors, Embeddings) else vectors  # no list conversion
    exact = cosine_similarity(rows[:n], rows[n:])
    shown = exact.round(PLACES)
    if cfg.mode == "dynamic":
        edges = dynamic_edges(agents, shown, cfg, exact=exact)
    else:
        count = len(dynamic_edges(agents, shown, cfg, exact=exact)) if cfg.mode == "random" else 0
        edges = baseline_edges(agents, shown, cfg, rng=rng, dynamic_count=count)
    graph = build_graph(agents, edges)
    return Routing(
        mode=cfg.mode,
        agents=list(agents),
        similarity=shown.tolist(),
        tau=cfg.tau,
        edges=edges,
        order=delivery_order(agents, graph),
        acyclic=nx.is_directed_acyclic_graph(graph),
        hub=star_hub(agents, cfg) if cfg.mode == "star" else None,
    )
