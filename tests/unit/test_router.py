import random

import pytest

from dytopo.embedders import HashEmbedder
from dytopo.router import (
    Edge,
    baseline_edges,
    build_graph,
    delivery_order,
    dynamic_edges,
    route,
    similarity_matrix,
    tiers,
)
from dytopo.routing import RoutingConfig

AGENTS = ["a", "b", "c", "d"]


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

    from dytopo.router import route

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
    from dytopo.router import Edge, tiers

    agents = ["writer", "analyst"]  # not in name order
    edges = [
        Edge(source="writer", target="analyst", score=0.5),
        Edge(source="analyst", target="writer", score=0.5),
    ]
    # sigma puts the first agent first in a tie; the tiers agree: writer, then analyst.
    assert tiers(agents, edges) == [["writer"], ["analyst"]]
