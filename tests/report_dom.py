"""What a report page holds, read with the standard library's HTML parser: the figures of each
round (graph nodes and edges, heatmap cells) and anything that could reach the network or run
code. The unit tests read the rendered page; the browser test reads Chromium's DOM."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Figure:
    kind: str
    round: int
    nodes: dict[str, tuple[float, float]] = field(default_factory=dict)
    """agent -> (cx, cy) of its circle."""
    ranks: dict[str, str] = field(default_factory=dict)
    """agent -> the sigma number written on its node."""
    edges: list[tuple[str, str, bool]] = field(default_factory=list)
    """(source, target, forced)."""
    cells: int = 0
    edge_cells: int = 0
    cell_texts: int = 0
    images: int = 0


class Page(HTMLParser):
    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.figures: list[Figure] = []
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.ids: dict[str, str] = {}
        self.text = ""
        """All text, as a reader sees it (entities decoded)."""
        self._figure: Figure | None = None
        self._node: str | None = None
        self._text_class = ""
        self._id_stack: list[tuple[str, str]] = []
        self.feed(html)
        self.close()

    def of(self, kind: str) -> dict[int, Figure]:
        return {f.round: f for f in self.figures if f.kind == kind}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        classes = a.get("class", "").split()
        if tag == "svg" and ({"graph", "heatmap"} & set(classes)):
            kind = "graph" if "graph" in classes else "heatmap"
            self._figure = Figure(kind, int(a["data-round"]))
            self.figures.append(self._figure)
        figure = self._figure
        if "id" in a:
            self.ids.setdefault(a["id"], "")
            self._id_stack.append((tag, a["id"]))
        if figure is None:
            return
        if tag == "g" and "node" in classes:
            self._node = a["data-agent"]
        elif tag == "circle" and self._node is not None:
            figure.nodes[self._node] = (float(a["cx"]), float(a["cy"]))
        elif tag == "path" and "edge" in classes:
            figure.edges.append((a["data-source"], a["data-target"], "forced" in classes))
        elif tag == "rect" and "edge-cell" in classes:
            figure.edge_cells += 1
        elif tag == "rect" and "cell" in classes:
            figure.cells += 1
        elif tag == "image":
            figure.images += 1
        self._text_class = " ".join(classes) if tag == "text" else ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._figure = None
        elif tag == "g":
            self._node = None
        if self._id_stack and self._id_stack[-1][0] == tag:
            self._id_stack.pop()
        self._text_class = ""

    def handle_data(self, data: str) -> None:
        self.text += data
        for _, element_id in self._id_stack:
            self.ids[element_id] += data
        figure = self._figure
        if figure is None:
            return
        if self._text_class == "rank" and self._node is not None:
            figure.ranks[self._node] = data.strip()
        elif self._text_class == "cell-text":
            figure.cell_texts += 1

    def reaches_out(self) -> list[str]:
        """Everything that could load from the network or run code."""
        found = []
        for tag, attrs in self.tags:
            if tag in ("script", "link", "iframe", "object", "embed", "img"):
                found.append(f"<{tag}>")
            for name, value in attrs.items():
                if name.startswith("on"):
                    found.append(f"<{tag} {name}>")
                if name in ("src", "href") and not value.startswith(("#", "data:")):
                    found.append(f"<{tag} {name}={value}>")
        return found
