"""Geometry of a round's graph drawing: agents on one circle at positions fixed for the whole
run (so a node never moves between rounds), edges as arcs with arrowheads, width by score.

Only numbers and names are computed here; the template writes the SVG, so all text passes
through Jinja's escaping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import networkx as nx

from dytopo.report.views import RoundView

WIDTH, HEIGHT = 600.0, 420.0
"""The drawing's size (SVG user units): wider than high, so names left and right fit."""
RADIUS = 160.0
MAX_EDGES = 600
"""More edges than this are unreadable and make the page heavy: the strongest are drawn."""
LABELLED_AGENTS = 24
"""Above this many agents, edge scores are left off (the heatmap has them)."""
NAMED_AGENTS = 48
"""Above this many agents, names are left off the nodes (each keeps a tooltip)."""

Point = tuple[float, float]


@dataclass(frozen=True)
class Node:
    agent: str
    x: float
    y: float
    r: float
    order: int | None
    """1-based position in this round's delivery order sigma; None when it did not take part."""
    label_x: float
    label_y: float
    anchor: str


@dataclass(frozen=True)
class Arc:
    source: str
    target: str
    score: float
    forced: bool
    path: str
    width: float
    label_x: float
    label_y: float


@dataclass
class GraphDrawing:
    width: float
    height: float
    nodes: list[Node]
    arcs: list[Arc]
    labelled: bool
    """Edge scores are written on the arcs."""
    dense: bool
    """Many agents: thin arcs without arrowheads, or they merge into one blot."""
    named: bool
    left_out: int = 0
    """Edges not drawn (beyond MAX_EDGES)."""
    order: list[str] = field(default_factory=list)


def positions(agents: Sequence[str]) -> dict[str, Point]:
    """Where each agent sits, for every round of the run: one circle, the first at the top."""
    ring: nx.DiGraph[str] = nx.DiGraph()
    ring.add_nodes_from(agents)
    laid = nx.circular_layout(ring)
    # networkx starts on the right, counter-clockwise; turn it to start on top, clockwise.
    return {
        a: (WIDTH / 2 + RADIUS * float(laid[a][1]), HEIGHT / 2 - RADIUS * float(laid[a][0]))
        for a in agents
    }


def draw_round(rnd: RoundView, places: dict[str, Point]) -> GraphDrawing:
    routing = rnd.routing
    order = routing.order if routing else []
    edges = routing.edges if routing else []
    count = len(places)
    r = 20.0 if count <= 8 else 13.0 if count <= LABELLED_AGENTS else max(2.5, 260 / count)
    rank = {a: k for k, a in enumerate(order, start=1)}
    nodes = [_node(a, xy, r, rank.get(a)) for a, xy in places.items()]
    drawn = [e for e in edges if e.source in places and e.target in places]
    drawn = sorted(drawn, key=lambda e: -e.score)[:MAX_EDGES]
    dense = count > LABELLED_AGENTS
    arcs = [_arc(e.source, e.target, e.score, e.forced, places, r, dense) for e in drawn]
    return GraphDrawing(
        width=WIDTH,
        height=HEIGHT,
        nodes=nodes,
        arcs=arcs,
        labelled=not dense and len(arcs) <= 60,
        dense=dense,
        named=count <= NAMED_AGENTS,
        left_out=len(edges) - len(arcs),
        order=order,
    )


def _node(agent: str, xy: Point, r: float, order: int | None) -> Node:
    x, y = xy
    dx, dy = x - WIDTH / 2, y - HEIGHT / 2
    norm = math.hypot(dx, dy) or 1.0
    # The name sits outside the circle, on the line from the centre through the node.
    lx, ly = x + dx / norm * (r + 8), y + dy / norm * (r + 8) + 4
    anchor = "middle" if abs(dx) < norm * 0.3 else "start" if dx > 0 else "end"
    return Node(agent, x, y, r, order, lx, ly + (8 if dy > norm * 0.7 else 0), anchor)


def _arc(
    source: str,
    target: str,
    score: float,
    forced: bool,
    places: dict[str, Point],
    r: float,
    dense: bool,
) -> Arc:
    (sx, sy), (tx, ty) = places[source], places[target]
    dx, dy = tx - sx, ty - sy
    length = math.hypot(dx, dy) or 1.0
    # Bend every arc to its left: a -> b and b -> a then stay apart instead of overlapping.
    bend = 0.18 * length
    cx, cy = (sx + tx) / 2 - dy / length * bend, (sy + ty) / 2 + dx / length * bend
    start = _toward((sx, sy), (cx, cy), r)
    end = _toward((tx, ty), (cx, cy), r + 1.5)
    label = (0.25 * sx + 0.5 * cx + 0.25 * tx, 0.25 * sy + 0.5 * cy + 0.25 * ty)
    path = f"M{start[0]:.1f},{start[1]:.1f} Q{cx:.1f},{cy:.1f} {end[0]:.1f},{end[1]:.1f}"
    width = 0.8 + 3.2 * min(1.0, max(0.0, score)) if math.isfinite(score) else 0.8
    if dense:
        width /= 4
    return Arc(source, target, score, forced, path, round(width, 2), label[0], label[1])


def _toward(p: Point, q: Point, distance: float) -> Point:
    dx, dy = q[0] - p[0], q[1] - p[1]
    norm = math.hypot(dx, dy) or 1.0
    return p[0] + dx / norm * distance, p[1] + dy / norm * distance
