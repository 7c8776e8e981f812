"""Geometry of a round's similarity heatmap: row i is receiver i's query, column j sender j's
key (similarity[i][j] = cos(query_i, key_j), the router's convention), so an outlined cell
(score > tau, the edge rule) is the edge j -> i.

Up to CELL_TEXT agents each cell carries its score; up to CELL_SHAPES agents each cell is an SVG
rectangle; above that the matrix is one inline PNG, so a 256-agent round stays small.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from dataclasses import dataclass

from dytopo.report.views import RoutingView

CELL_TEXT = 24
CELL_SHAPES = 64
NAME_CHARS = 14

RGB = tuple[int, int, int]
_LOW: RGB = (244, 246, 251)
_HIGH: RGB = (29, 78, 137)
_EDGE_HIGH: RGB = (217, 72, 15)  # image mode has no outlines: edge cells take another hue
_NO_SCORE: RGB = (210, 210, 210)

MISSING = "\N{EN DASH}"


@dataclass(frozen=True)
class Cell:
    x: float
    y: float
    color: str
    ink: str
    """Text colour readable on `color`."""
    text: str
    edge: bool
    """score > tau: this cell is an edge (column agent -> row agent)."""
    title: str


@dataclass
class Heatmap:
    width: float
    height: float
    left: float
    top: float
    cell: float
    rows: list[str]
    """Agent names, shortened; rows and columns are the same agents in the same order."""
    names: list[str]
    cells: list[Cell]
    image: str | None
    """A data: URI of the whole matrix (large rounds), instead of `cells`."""
    tau: float | None
    texted: bool
    named: bool


def draw_heatmap(routing: RoutingView) -> Heatmap:
    agents, tau = routing.agents, routing.tau
    n = len(agents)
    cell = min(52.0, max(3.0, 360.0 / max(n, 1)))
    named = n <= CELL_SHAPES
    short = [a if len(a) <= NAME_CHARS else a[: NAME_CHARS - 1] + "…" for a in agents]
    margin = 12 + 6.6 * max((len(s) for s in short), default=0) if named else 12
    side = cell * n
    heat = Heatmap(
        width=margin + side + 8,
        height=margin + side + 8,
        left=margin,
        top=margin,
        cell=cell,
        rows=short,
        names=list(agents),
        cells=[],
        image=None,
        tau=tau,
        texted=n <= CELL_TEXT,
        named=named,
    )
    if n > CELL_SHAPES:
        heat.image = _png_uri(
            [[_color(_at(routing, i, j), tau, i == j, True) for j in range(n)] for i in range(n)]
        )
        return heat
    for i in range(n):
        for j in range(n):
            score = _at(routing, i, j)
            edge = i != j and score is not None and tau is not None and score > tau
            rgb = _color(score, tau, i == j, False)
            text = "" if not heat.texted else MISSING if score is None else f"{score:.2f}"
            shown = "n/a" if score is None else f"{score:.3f}"
            title = f"{agents[i]} needs, {agents[j]} offers: {shown}"
            ink = "#fff" if sum(rgb) < 380 else "#1f2933"
            x, y = margin + j * cell, margin + i * cell
            heat.cells.append(Cell(x, y, _hex(rgb), ink, text, edge, title))
    return heat


def _at(routing: RoutingView, i: int, j: int) -> float | None:
    try:
        value = routing.similarity[i][j]
    except IndexError:
        return None  # a matrix cut short (hand-edited or crashed trace)
    return value if value is not None and math.isfinite(value) else None


def _color(score: float | None, tau: float | None, diagonal: bool, hue: bool) -> RGB:
    if score is None or diagonal:
        return _NO_SCORE if score is None else (232, 232, 232)
    t = min(1.0, max(0.0, score))
    high = _EDGE_HIGH if hue and tau is not None and score > tau else _HIGH
    return (
        round(_LOW[0] + (high[0] - _LOW[0]) * t),
        round(_LOW[1] + (high[1] - _LOW[1]) * t),
        round(_LOW[2] + (high[2] - _LOW[2]) * t),
    )


def _hex(rgb: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _png_uri(pixels: list[list[RGB]]) -> str:
    """An RGB PNG, one pixel per cell (the SVG scales it up without smoothing)."""
    height, width = len(pixels), len(pixels[0]) if pixels else 0
    raw = b"".join(b"\x00" + bytes(v for rgb in row for v in rgb) for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode()
