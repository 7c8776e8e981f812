"""Semantic matching and graph induction: similarity matrix, edges, delivery order sigma.

A round of n agents has n^2 scores and up to n^2 edges, so the matrix, the edge rule and sigma
work on numpy arrays of agent positions; only the edges the trace shows become objects. Their
results are exactly those of the plain definitions in ALGORITHM.md (the unit tests keep a loop
reference and compare on random inputs).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator, Sequence
from typing import TypeAlias

import networkx as nx
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, TypeAdapter

from dytopo.embedders.base import Embedder, Embeddings
from dytopo.routing import RoutingConfig

Ints = npt.NDArray[np.intp]
Floats = npt.NDArray[np.float64]

# Unit roundoff of float64: the error bound of a dot product is about dim * _U * |q| * |k|.
_U = 2.0**-53


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


# Edges are built in one validation call: pydantic's core makes the objects without a Python
# __init__ per edge (1,000 edges: 1.9 ms instead of 2.9).
_EDGE_LIST = TypeAdapter(list[Edge])

Matrix: TypeAlias = Sequence[Sequence[float]] | Floats
"""Vectors as rows of floats or as one float64 array (which is used without a copy)."""


def similarity_matrix(queries: Matrix, keys: Matrix) -> list[list[float]]:
    """Cosine of L2-normalised vectors: r[i][j] = q_i . k_j, rounded to 6 places."""
    rows: list[list[float]] = similarity_array(queries, keys).tolist()
    return rows


def similarity_array(queries: Matrix, keys: Matrix) -> Floats:
    """`similarity_matrix` as an array, each score exactly `round(sum(q * k), 6)`.

    The matrix product sums in another order than a plain loop, so a score may differ in its
    last bits; that changes the rounded value only within that error of a rounding boundary
    (an odd multiple of 5e-7). The few scores that close are summed again the plain way.
    """
    if not len(queries) or not len(keys):
        return np.zeros((len(queries), len(keys)))
    q, k = np.asarray(queries, dtype=np.float64), np.asarray(keys, dtype=np.float64)
    if q.ndim != 2 or k.ndim != 2 or q.shape[1] != k.shape[1]:
        raise ValueError(f"queries {q.shape} and keys {k.shape} are not vectors of one length")
    scaled = _product(q, k) * 1e6
    nearest = np.rint(scaled)
    # Both sums lie within (dim + 1) * _U * |q| * |k| of the exact one, whatever their order
    # (Higham, Accuracy and Stability, 3.1); 8x that bound, for the largest norms, leaves a
    # wide margin. Scaling by 1e6 adds an error of _U * |scaled| at most.
    top_q, top_k = np.linalg.norm(q, axis=1).max(), np.linalg.norm(k, axis=1).max()
    slack = 8 * _U * ((q.shape[1] + 2) * 1e6 * top_q * top_k + np.abs(scaled).max())
    near = np.abs(scaled - nearest) >= 0.5 - slack
    out: Floats = nearest / 1e6
    if near.any():
        for i, j in zip(*np.nonzero(near), strict=True):
            # Python floats: numpy's round(x, 6) is rint(x * 1e6) / 1e6, not the decimal rounding
            pairs = zip(q[i].tolist(), k[j].tolist(), strict=True)
            out[i, j] = round(sum(a * b for a, b in pairs), 6)
    return out


# OpenBLAS splits a product over threads above m * n * k = 262,144 multiply-adds. Next to a busy
# llama-server (or any other work) the threads wait for a core: a 64-agent matrix took 20 ms
# instead of 0.2. Tiles under that size stay on the calling thread; a product of more than
# _MAX_TILES tiles is big enough to pay for its threads.
_TILE = 262_144
_MAX_TILES = 256


def _product(q: Floats, k: Floats) -> Floats:
    """q @ k.T, in tiles small enough for BLAS to compute on the calling thread."""
    dim = max(1, q.shape[1])
    # 16 rows by a multiple of 8 columns fit OpenBLAS's kernels best (256 agents: 4.2 ms in
    # 16 x 40 tiles, 5.0 in 8 x 85, on an EPYC).
    rows = max(1, min(len(q), 16, _TILE // dim))
    cols = max(1, min(len(k), _TILE // (rows * dim)))
    cols -= cols % 8 if cols > 8 else 0
    tiles = -(-len(q) // rows) * -(-len(k) // cols)
    if tiles == 1 or tiles > _MAX_TILES:
        product: Floats = q @ k.T
        return product
    out = np.empty((len(q), len(k)))
    for i in range(0, len(q), rows):
        for j in range(0, len(k), cols):
            np.matmul(q[i : i + rows], k[j : j + cols].T, out=out[i : i + rows, j : j + cols])
    return out


def _dynamic_pairs(
    sim: Floats, cfg: RoutingConfig, exact: Floats | None = None
) -> tuple[Ints, Ints, npt.NDArray[np.bool_]]:
    """The dynamic rule as (targets, sources, forced), ordered by target, then score
    descending, then source position. `exact`: the unrounded scores, for the `> tau` test
    (0.3500004 is above tau 0.35, although it shows as 0.35)."""
    n = sim.shape[0]
    above = (sim if exact is None else exact) > cfg.tau
    np.fill_diagonal(above, False)
    tgt, src = np.nonzero(above)
    order = np.lexsort((src, -sim[tgt, src], tgt))
    tgt, src = tgt[order], src[order]
    counts = np.bincount(tgt, minlength=n)
    caps = [c for c in (cfg.top_k, cfg.max_in_degree) if c is not None]
    if caps:
        rank = np.arange(len(tgt)) - (np.cumsum(counts) - counts)[tgt]
        keep = rank < min(caps)
        tgt, src = tgt[keep], src[keep]
    forced = np.zeros(len(tgt), dtype=bool)
    lonely = np.flatnonzero(counts == 0)
    if cfg.force_connect and n > 1 and len(lonely):
        rows = sim[lonely]  # a copy: fancy indexing
        rows[np.arange(len(lonely)), lonely] = -np.inf
        best = np.argmax(rows, axis=1)  # the first maximum: ties go to the lower position
        tgt = np.concatenate([tgt, lonely])
        src = np.concatenate([src, best])
        forced = np.concatenate([forced, np.ones(len(lonely), dtype=bool)])
        order = np.argsort(tgt, kind="stable")
        tgt, src, forced = tgt[order], src[order], forced[order]
    return tgt, src, forced


def _edges(
    agents: Sequence[str],
    sim: Floats,
    tgt: Ints,
    src: Ints,
    forced: npt.NDArray[np.bool_] | None = None,
) -> list[Edge]:
    scores = sim[tgt, src].tolist()
    flags = forced.tolist() if forced is not None else [False] * len(scores)
    edges: list[Edge] = _EDGE_LIST.validate_python(
        [
            {"source": agents[j], "target": agents[i], "score": s, "forced": f}
            for i, j, s, f in zip(tgt.tolist(), src.tolist(), scores, flags, strict=True)
        ]
    )
    return edges


def dynamic_edges(
    agents: Sequence[str], sim: Sequence[Sequence[float]], cfg: RoutingConfig
) -> list[Edge]:
    """The paper's rule (strict `> tau`, no self-loops) plus the optional, labelled extensions."""
    scores = np.asarray(sim, dtype=np.float64).reshape(len(agents), len(agents))
    return _edges(agents, scores, *_dynamic_pairs(scores, cfg))


def baseline_edges(
    agents: Sequence[str],
    sim: Sequence[Sequence[float]],
    cfg: RoutingConfig,
    *,
    rng: random.Random,
    dynamic_count: int,
) -> list[Edge]:
    """Fixed patterns through the same code path; scores are still the measured similarities."""
    scores = np.asarray(sim, dtype=np.float64).reshape(len(agents), len(agents))
    return _edges(agents, scores, *_baseline_pairs(agents, cfg, rng, dynamic_count))


def _baseline_pairs(
    agents: Sequence[str], cfg: RoutingConfig, rng: random.Random, dynamic_count: int
) -> tuple[Ints, Ints]:
    """(targets, sources) of a fixed pattern, in the order its edges are listed."""
    n = len(agents)
    k = np.arange(n)
    if cfg.mode == "broadcast":
        tgt, src = np.nonzero(~np.eye(n, dtype=bool))
    elif cfg.mode == "chain":
        tgt, src = k[1:], k[:-1]
    elif cfg.mode == "star":
        center = star_hub(agents, cfg)
        hub = agents.index(center) if center is not None else 0
        others = k[k != hub]
        src = np.concatenate([np.full(len(others), hub), others])
        tgt = np.concatenate([others, np.full(len(others), hub)])
    elif cfg.mode == "random":
        # Sampled from the (source, target) pairs listed target by target; sampling the pairs'
        # indices draws exactly what sampling the list would, without building n^2 tuples.
        every = n * (n - 1)
        picks = np.array(rng.sample(range(every), min(dynamic_count, every)), dtype=int)
        tgt, rest = np.divmod(picks, max(1, n - 1))
        src = rest + (rest >= tgt)
        order = np.lexsort((tgt, src))  # sorted as (source, target) pairs
        tgt, src = tgt[order], src[order]
    else:  # single: one agent, nobody to talk to
        tgt = src = np.zeros(0, dtype=int)
    return tgt, src


def star_hub(agents: Sequence[str], cfg: RoutingConfig) -> str | None:
    """The configured hub if it finished its step this round, else the first agent that did."""
    if cfg.hub in agents:
        return cfg.hub
    return agents[0] if agents else None


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
    pairs = np.array([(position[u], position[v]) for u, v in graph.edges], dtype=int)
    src, tgt = pairs.reshape(-1, 2).T
    return [agents[k] for k in _sigma(len(agents), src, tgt)[0]]


def _sigma(n: int, src: Ints, tgt: Ints) -> tuple[list[int], bool]:
    """Sigma over positions, and whether the graph is acyclic.

    One greedy rule serves both cases: on a DAG the agent with the fewest unplaced
    predecessors has none, so the rule is the topological sort with ties by position; the
    graph has a cycle exactly when some pick still had an unplaced predecessor.
    """
    # A heap costs per edge, the array scan per agent (a pass over n counts each): a round of
    # dynamic routing has a few edges per agent, a dense one n.
    if len(src) <= _HEAP_EDGES_PER_AGENT * n:
        return _sigma_heap(n, src, tgt)
    return _sigma_scan(n, src, tgt)


_HEAP_EDGES_PER_AGENT = 16


def _sigma_heap(n: int, src: Ints, tgt: Ints) -> tuple[list[int], bool]:
    """`_sigma` with a heap of (unplaced predecessors, position): O((n + edges) log n)."""
    waiting: list[int] = np.bincount(tgt, minlength=n).tolist()
    by_source = np.argsort(src, kind="stable")
    successors: list[int] = tgt[by_source].tolist()
    bounds: list[int] = np.searchsorted(src[by_source], np.arange(n + 1)).tolist()
    heap = list(zip(waiting, range(n), strict=True))
    heapq.heapify(heap)
    placed = [False] * n
    order: list[int] = []
    acyclic = True
    while heap:
        count, pick = heapq.heappop(heap)
        if placed[pick] or count != waiting[pick]:
            continue  # placed, or a count from before a predecessor was placed
        acyclic = acyclic and count == 0
        order.append(pick)
        placed[pick] = True
        for v in successors[bounds[pick] : bounds[pick + 1]]:
            if not placed[v]:
                waiting[v] -= 1
                heapq.heappush(heap, (waiting[v], v))
    return order, acyclic


def _sigma_scan(n: int, src: Ints, tgt: Ints) -> tuple[list[int], bool]:
    """`_sigma` as n scans of an array of counts: O(n^2) in numpy, for dense graphs."""
    waiting = np.bincount(tgt, minlength=n).astype(np.int64)  # predecessors not yet placed
    placed = 2 * len(tgt) + 1  # above any count, even after the decrements it still gets
    by_source = np.argsort(src, kind="stable")
    successors = tgt[by_source]
    bounds = np.searchsorted(src[by_source], np.arange(n + 1))
    order: list[int] = []
    acyclic = True
    for _ in range(n):
        pick = int(np.argmin(waiting))  # the first minimum: ties go to the lower position
        acyclic = acyclic and waiting[pick] == 0
        order.append(pick)
        waiting[pick] = placed
        waiting[successors[bounds[pick] : bounds[pick + 1]]] -= 1
    return order, bool(acyclic)


def tiers(agents: Sequence[str], edges: Sequence[Edge]) -> list[list[str]]:
    """`tiered` execution: drop the weakest edge of every cycle, then group agents into
    topological generations (each tier only depends on earlier ones), each in agent order.

    Edges are kept strongest first (equal scores: the earlier source, then target, in agent
    order, as sigma breaks its ties), each unless it closes a cycle with the edges already
    kept. So every dropped edge is the weakest of a cycle, and the result does not depend on
    which cycle a search meets first.
    """
    n = len(agents)
    position = {a: k for k, a in enumerate(agents)}
    src = np.array([position[e.source] for e in edges], dtype=int)
    tgt = np.array([position[e.target] for e in edges], dtype=int)
    scores = np.array([e.score for e in edges], dtype=np.float64)
    # Strongest first; equal scores by source, then target position: the provider sigma would
    # place first (it breaks ties by position) keeps its edge.
    order = np.lexsort((tgt, src, -scores))
    src, tgt = src[order], tgt[order]
    kept = _acyclic(n, src, tgt)
    return [[agents[k] for k in tier] for tier in _generations(n, src[kept], tgt[kept])]


def _acyclic(n: int, src: Ints, tgt: Ints) -> npt.NDArray[np.bool_]:
    """Which edges, taken in this order, do not close a cycle with the ones kept before."""
    # Bit y of below[x]: x reaches y along kept edges; bit x of above[y]: the same. An edge
    # costs two bit tests, and only one that makes new pairs comparable updates the sets.
    below, above = [0] * n, [0] * n
    kept = np.zeros(len(src), dtype=bool)
    for k, (u, v) in enumerate(zip(src.tolist(), tgt.tolist(), strict=True)):
        if u == v or below[v] >> u & 1:
            continue  # closes a cycle of stronger (or equal, larger-named) edges
        if not below[u] >> v & 1:
            down, up = below[v] | 1 << v, above[u] | 1 << u
            for x in _members(up):
                below[x] |= down
            for y in _members(down):
                above[y] |= up
        kept[k] = True
    return kept


def _members(bits: int) -> Iterator[int]:
    while bits:
        low = bits & -bits
        yield low.bit_length() - 1
        bits ^= low


def _generations(n: int, src: Ints, tgt: Ints) -> list[list[int]]:
    """Topological generations of a DAG over positions, each in position order."""
    waiting = np.bincount(tgt, minlength=n)
    by_source = np.argsort(src, kind="stable")
    successors, bounds = tgt[by_source], np.searchsorted(src[by_source], np.arange(n + 1))
    tier = np.flatnonzero(waiting == 0)
    out: list[list[int]] = []
    while len(tier):
        out.append(tier.tolist())
        nxt = np.concatenate([successors[bounds[u] : bounds[u + 1]] for u in tier])
        np.subtract.at(waiting, nxt, 1)
        tier = np.unique(nxt[waiting[nxt] == 0])
    return out


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
    # An embedder's own array is used as it is: no conversion of n * dim floats.
    rows: Matrix = vectors.array if isinstance(vectors, Embeddings) else vectors
    sim = similarity_array(rows[:n], rows[n:])
    exact = (
        _product(np.asarray(rows[:n], np.float64), np.asarray(rows[n:], np.float64)) if n else sim
    )
    forced = None
    if cfg.mode == "dynamic":
        tgt, src, forced = _dynamic_pairs(sim, cfg, exact)
    else:
        count = len(_dynamic_pairs(sim, cfg, exact)[0]) if cfg.mode == "random" else 0
        tgt, src = _baseline_pairs(agents, cfg, rng, count)
    order, acyclic = _sigma(n, src, tgt)
    # Built from checked parts: validating n^2 scores and edges again would cost more than
    # computing them.
    return Routing.model_construct(
        mode=cfg.mode,
        agents=list(agents),
        similarity=sim.tolist(),
        tau=cfg.tau,
        edges=_edges(agents, sim, tgt, src, forced),
        order=[agents[k] for k in order],
        acyclic=acyclic,
        hub=star_hub(agents, cfg) if cfg.mode == "star" else None,
    )
