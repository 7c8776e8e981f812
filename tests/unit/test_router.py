import random
from collections.abc import Sequence

import numpy as np
import pytest

from dytopo.embedders import Embedder, HashEmbedder
from dytopo.routing.config import RoutingConfig
from dytopo.routing.router import (
    Edge,
    baseline_edges,
    build_graph,
    delivery_order,
    dynamic_edges,
    route,
    similarity_matrix,
    tiers,
)

AGENTS = ["a", "b", "c", "d"]
RNG = random.Random(0)


def pairs(edges: list[Edge]) -> set[tuple[str, str]]:
    return {(e.source, e.target) for e in edges}


def test_similarity_is_query_dot_key() -> None:
    sim = similarity_matrix([[1.0, 0.0], [0.0, 1.0]], [[0.6, 0.8], [1.0, 0.0]])
    assert sim == [[0.6, 1.0], [0.8, 0.0]]


def test_edges_are_strictly_above_tau_and_never_self_loops() -> None:
    sim = [
        [1.0, 0.5, 0.4, 0.0],
        [0.9, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
    edges = dynamic_edges(AGENTS, sim, RoutingConfig(tau=0.4))
    # r[i][j] > tau gives j -> i; 0.4 == tau is not an edge; the diagonal never is.
    assert pairs(edges) == {("b", "a"), ("a", "b")}
    assert all(e.score > 0.4 for e in edges)


def test_top_k_max_in_degree_and_force_connect() -> None:
    sim = [
        [0.0, 0.9, 0.8, 0.7],
        [0.1, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],
    ]
    assert pairs(dynamic_edges(AGENTS, sim, RoutingConfig(tau=0.5, top_k=2))) == {
        ("b", "a"),
        ("c", "a"),
    }
    assert pairs(dynamic_edges(AGENTS, sim, RoutingConfig(tau=0.5, max_in_degree=1))) == {
        ("b", "a")
    }
    forced = dynamic_edges(AGENTS, sim, RoutingConfig(tau=0.5, force_connect=True))
    assert ("a", "b") in pairs(forced)
    assert next(e for e in forced if e.target == "b").forced
    assert len([e for e in forced if e.target == "c"]) == 1  # every agent gets its best edge


def test_dag_order_is_topological_with_ties_by_position() -> None:
    edges = [Edge(source="c", target="a", score=0.9), Edge(source="d", target="b", score=0.8)]
    order = delivery_order(AGENTS, build_graph(AGENTS, edges))
    assert order == ["c", "a", "d", "b"]


def test_cycle_order_uses_fewest_unplaced_incoming_edges_and_keeps_edges() -> None:
    edges = [
        Edge(source="a", target="b", score=0.9),
        Edge(source="b", target="c", score=0.8),
        Edge(source="c", target="a", score=0.7),
        Edge(source="d", target="a", score=0.6),
    ]
    graph = build_graph(AGENTS, edges)
    order = delivery_order(AGENTS, graph)
    assert order == ["d", "a", "b", "c"]
    assert sorted(order) == AGENTS
    assert graph.number_of_edges() == 4


def test_isolated_agents_still_get_an_order() -> None:
    assert delivery_order(AGENTS, build_graph(AGENTS, [])) == AGENTS


@pytest.mark.parametrize(
    ("mode", "count"), [("broadcast", 12), ("chain", 3), ("star", 6), ("single", 0)]
)
def test_baselines_have_their_edge_counts(mode: str, count: int) -> None:
    sim = [[0.0] * 4 for _ in range(4)]
    edges = baseline_edges(
        AGENTS,
        sim,
        RoutingConfig(mode=mode),  # type: ignore[arg-type]
        rng=random.Random(0),
        dynamic_count=5,
    )
    assert len(edges) == count
    assert all(e.source != e.target for e in edges)


def test_star_hub_and_random_is_seeded_with_the_dynamic_count() -> None:
    sim = [[0.0] * 4 for _ in range(4)]
    star = baseline_edges(
        AGENTS, sim, RoutingConfig(mode="star", hub="c"), rng=random.Random(0), dynamic_count=0
    )
    assert all("c" in (e.source, e.target) for e in star)
    one = baseline_edges(
        AGENTS, sim, RoutingConfig(mode="random"), rng=random.Random(3), dynamic_count=5
    )
    two = baseline_edges(
        AGENTS, sim, RoutingConfig(mode="random"), rng=random.Random(3), dynamic_count=5
    )
    assert len(one) == 5
    assert pairs(one) == pairs(two)


def test_tiers_break_cycles_at_the_weakest_edge() -> None:
    edges = [
        Edge(source="a", target="b", score=0.9),
        Edge(source="b", target="a", score=0.5),  # weakest edge of the cycle: dropped
        Edge(source="b", target="c", score=0.7),
    ]
    assert tiers(AGENTS, edges) == [["a", "d"], ["b"], ["c"]]


async def test_route_embeds_in_one_batch_and_matches_needs_to_offers() -> None:
    calls: list[int] = []

    class Counting(HashEmbedder):
        async def embed(self, texts: list[str]) -> list[list[float]]:  # type: ignore[override]
            calls.append(len(texts))
            return await super().embed(texts)

    routing = await route(
        ["writer", "researcher"],
        ["sourced facts about cache eviction", "nothing relevant here"],
        ["polished final report draft", "sourced facts about cache eviction"],
        Counting(),
        RoutingConfig(tau=0.5),
        rng=random.Random(0),
    )
    assert calls == [4]
    assert len(routing.similarity) == 2
    assert all(len(row) == 2 for row in routing.similarity)
    assert [(e.source, e.target) for e in routing.edges] == [("researcher", "writer")]
    assert routing.order == ["researcher", "writer"]


async def test_a_score_just_above_tau_makes_an_edge_although_it_shows_rounded() -> None:
    import math
    import random

    from dytopo.routing.router import route

    class Fixed:
        """Need of a and offer of b at cos 0.3500004; the other pair orthogonal."""

        async def embed(self, texts: list[str]) -> list[list[float]]:
            c = 0.3500004
            return [
                [1.0, 0.0, 0.0],
                [0.0, 0.0, 1.0],
                [0.0, 1.0, 0.0],
                [c, math.sqrt(1 - c * c), 0.0],
            ]

    routing = await route(
        ["a", "b"],
        ["qa", "qb"],
        ["ka", "kb"],
        Fixed(),
        RoutingConfig(tau=0.35),
        rng=random.Random(0),
    )  # type: ignore[arg-type]
    assert [(e.source, e.target) for e in routing.edges] == [("b", "a")]
    assert routing.edges[0].score == 0.35  # shown rounded


def test_tiers_break_ties_as_sigma_does_by_agent_order() -> None:
    from dytopo.routing.router import Edge, tiers

    agents = ["writer", "analyst"]  # not in name order
    edges = [
        Edge(source="writer", target="analyst", score=0.5),
        Edge(source="analyst", target="writer", score=0.5),
    ]
    # sigma puts the first agent first in a tie; the tiers agree: writer, then analyst.
    assert tiers(agents, edges) == [["writer"], ["analyst"]]


# -- the rules one by one --------------------------------------------------------------------


def test_similarity_takes_the_embedders_unit_vectors_as_they_are() -> None:
    sim = similarity_matrix([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], [[0.6, 0.8], [1.0, 0.0]])
    assert sim == [[0.6, 1.0], [0.8, 0.0], [0.0, 0.0]]  # an empty text's zero vector: 0


async def test_a_hash_embedded_pair_exactly_at_tau_is_no_edge() -> None:
    # "zebra words" and "walrus words" share one of two words: cosine 0.5 as the embedder
    # computes it. Normalised a second time, it would come out a bit above 0.5: an edge.
    routing = await route(
        ["a", "b"],
        ["zebra words", "unit tests"],
        ["unit tests", "walrus words"],
        HashEmbedder(),
        RoutingConfig(tau=0.5),
        rng=RNG,
    )
    assert routing.similarity == [[0.0, 0.5], [1.0, 0.0]]
    assert [(e.source, e.target) for e in routing.edges] == [("a", "b")]


def test_vectors_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="not vectors of one length"):
        similarity_matrix([[1.0, 0.0]], [[1.0, 0.0, 0.0]])
    assert similarity_matrix([], [[1.0]]) == []


async def test_a_score_of_exactly_tau_is_no_edge_and_one_just_above_is() -> None:
    # cos([1, 0, 0, 0], [1/2, 1/2, 1/2, 1/2]) is exactly 0.5 in floating point.
    class Half(Embedder):
        async def embed(self, texts: Sequence[str]) -> list[list[float]]:
            return [[1.0, 0, 0, 0], [0, 0, 0, 1.0], [0, 1.0, 0, 0], [0.5, 0.5, 0.5, 0.5]]

    for tau, edges in ((0.5, []), (0.4999999, [("b", "a")])):
        routing = await route(
            ["a", "b"], ["qa", "qb"], ["ka", "kb"], Half(), RoutingConfig(tau=tau), rng=RNG
        )
        assert [(e.source, e.target) for e in routing.edges] == edges
        assert routing.similarity[0][1] == 0.5


def test_the_tau_test_reads_exact_scores_and_edges_show_the_recorded_ones() -> None:
    shown = [[1.0, 0.35, 0.35], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    exact = np.array([[1.0, 0.3500004, 0.3499996], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    edges = dynamic_edges(["a", "b", "c"], shown, RoutingConfig(tau=0.35), exact=exact)
    assert [(e.source, e.target, e.score) for e in edges] == [("b", "a", 0.35)]


def test_each_receiver_lists_its_edges_strongest_first_ties_by_position() -> None:
    sim = [
        [1.0, 0.5, 0.7, 0.5],
        [0.9, 1.0, 0.9, 0.6],
        [0.0, 0.0, 1.0, 0.0],
        [0.8, 0.0, 0.0, 1.0],
    ]
    edges = dynamic_edges(AGENTS, sim, RoutingConfig(tau=0.4))
    assert [(e.source, e.target) for e in edges] == [
        ("c", "a"),
        ("b", "a"),  # 0.5, like d: b comes first
        ("d", "a"),
        ("a", "b"),  # 0.9, like c
        ("c", "b"),
        ("d", "b"),
        ("a", "d"),
    ]


def test_top_k_keeps_the_best_recorded_scores_ties_to_the_earlier_source() -> None:
    # b, c and d all show 0.6; d is the strongest exactly, but the trace cannot tell them
    # apart, so the rule does not either: b and c, the earlier ones.
    shown = [[1.0, 0.6, 0.6, 0.6], [0.0] * 4, [0.0] * 4, [0.0] * 4]
    exact = np.array([[1.0, 0.6000001, 0.6000002, 0.6000004]] + [[0.0] * 4] * 3)
    edges = dynamic_edges(AGENTS, shown, RoutingConfig(tau=0.5, top_k=2), exact=exact)
    assert [(e.source, e.target) for e in edges] == [("b", "a"), ("c", "a")]
    strongest = [[0.0, 0.6, 0.7, 0.6]] + [[0.0] * 4] * 3
    edges = dynamic_edges(AGENTS, strongest, RoutingConfig(tau=0.5, top_k=2))
    assert [(e.source, e.target) for e in edges] == [("c", "a"), ("b", "a")]


def test_force_connect_gives_the_best_below_tau_ties_to_the_earlier_source() -> None:
    sim = [
        [0.9, 0.2, 0.2, 0.1],  # a's own score is the highest: never a self-loop
        [0.3, 0.0, 0.3, 0.3],
        [0.1, 0.9, 0.0, 0.0],  # above tau: not forced
        [0.0, 0.0, 0.0, 0.0],
    ]
    edges = dynamic_edges(AGENTS, sim, RoutingConfig(tau=0.5, force_connect=True))
    assert [(e.source, e.target, e.forced) for e in edges] == [
        ("b", "a", True),
        ("a", "b", True),
        ("b", "c", False),
        ("a", "d", True),
    ]
    assert dynamic_edges(["a"], [[0.0]], RoutingConfig(force_connect=True)) == []


def test_max_in_degree_caps_after_top_k() -> None:
    sim = [[0.0, 0.9, 0.8, 0.7], [0.0] * 4, [0.0] * 4, [0.0] * 4]
    cfg = RoutingConfig(tau=0.5, top_k=3, max_in_degree=2)
    assert pairs(dynamic_edges(AGENTS, sim, cfg)) == {("b", "a"), ("c", "a")}


def test_sigma_in_a_cycle_breaks_ties_by_position_and_route_reports_it() -> None:
    # a <-> b and c <-> d: every agent waits for one other; a first, then b (nobody left
    # before it), then c and d.
    edges = [
        Edge(source="b", target="a", score=0.9),
        Edge(source="a", target="b", score=0.9),
        Edge(source="d", target="c", score=0.9),
        Edge(source="c", target="d", score=0.9),
    ]
    assert delivery_order(AGENTS, build_graph(AGENTS, edges)) == ["a", "b", "c", "d"]
    agents = ["d", "c", "b", "a"]  # positions, not names
    assert delivery_order(agents, build_graph(agents, edges)) == ["d", "c", "b", "a"]


async def test_route_reports_acyclic_graphs_and_the_star_hub() -> None:
    embedder = HashEmbedder()
    chain = await route(
        AGENTS, ["x"] * 4, ["y"] * 4, embedder, RoutingConfig(mode="chain"), rng=RNG
    )
    assert chain.acyclic
    assert chain.order == AGENTS
    assert chain.hub is None
    star = await route(
        AGENTS, ["x"] * 4, ["y"] * 4, embedder, RoutingConfig(mode="star", hub="c"), rng=RNG
    )
    assert not star.acyclic
    assert star.hub == "c"
    # The spokes wait for one agent each (the hub), the hub for three: spokes first, then the
    # hub as soon as it waits for no more than the spoke after it.
    assert star.order == ["a", "b", "c", "d"]


def test_tiers_ignore_self_loops_and_keep_isolated_agents_in_the_first_tier() -> None:
    edges = [
        Edge(source="b", target="b", score=0.99),
        Edge(source="c", target="a", score=0.5),
    ]
    assert tiers(AGENTS, edges) == [["b", "c", "d"], ["a"]]


def test_tiers_keep_the_stronger_direction_of_a_pair() -> None:
    edges = [
        Edge(source="a", target="b", score=0.4),
        Edge(source="b", target="a", score=0.6),
    ]
    assert tiers(AGENTS, edges) == [["b", "c", "d"], ["a"]]
