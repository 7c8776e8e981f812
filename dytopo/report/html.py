"""The report as one self-contained HTML page: Jinja2 with autoescaping (model text is hostile
data), SVG drawn inline from the geometry in graph.py, heatmap.py and charts.py."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import jinja2
from markupsafe import Markup

from dytopo.report.charts import BarChart, usage_chart
from dytopo.report.graph import GraphDrawing, draw_round, positions
from dytopo.report.heatmap import Heatmap, draw_heatmap
from dytopo.report.limits import PAGE_BYTES
from dytopo.report.load import load_run
from dytopo.report.views import RoundView, RunView

MISSING = "\N{EN DASH}"
"""Shown for a number the trace does not have."""


@dataclass
class RoundPage:
    view: RoundView
    graph: GraphDrawing
    heatmap: Heatmap | None
    incoming: dict[str, list[str]]
    """Per agent, "sender (score)" of each private message it received this round."""


def render_html(run: RunView) -> str:
    """The page. Rounds are drawn one by one until the page passes `limits.PAGE_BYTES`; the
    rest are named in a notice (the trace holds them; dot and Mermaid draw any round)."""
    places = positions(run.agents)
    template = _ENV.get_template("round.jinja")
    drawn: list[Markup] = []
    size = 0
    for r in run.rounds:
        if size > PAGE_BYTES:
            break
        heatmap = draw_heatmap(r.routing) if r.routing and r.routing.agents else None
        html = template.render(p=RoundPage(r, draw_round(r, places), heatmap, _incoming(r)))
        drawn.append(Markup(html))  # escaped by Jinja already
        size += len(html.encode())
    undrawn = [r.number for r in run.rounds[len(drawn) :]]
    by_agent = usage_chart(list(run.usage_by_agent.items()), biggest_first=True)
    rows = [(f"round {r.number}", r.usage) for r in run.rounds]
    if run.more_rounds is not None:
        more = run.more_rounds
        rows.append((f"rounds {more.first} to {more.last}", more.usage))
    by_round: BarChart = usage_chart(rows)
    return _ENV.get_template("report.html.jinja").render(
        run=run,
        rounds=run.rounds[: len(drawn)],
        drawn=drawn,
        undrawn=undrawn,
        page_mb=PAGE_BYTES >> 20,
        by_agent=by_agent,
        by_round=by_round,
    )


def write_report(trace: Path, out: Path | None = None) -> Path:
    """Write the report of the run in `trace` (default: beside it, `.html`); its path."""
    trace = Path(trace)
    out = Path(out) if out is not None else trace.with_suffix(".html")
    page = render_html(load_run(trace))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def _incoming(rnd: RoundView) -> dict[str, list[str]]:
    incoming: dict[str, list[str]] = {}
    for d in rnd.deliveries:
        score = "" if d.score is None else f" ({d.score:.2f})"
        incoming.setdefault(d.target, []).append(d.source + score)
    return incoming


def _tokens(value: int | None) -> str:
    return MISSING if value is None else f"{value:,}"


def _seconds(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return MISSING
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds:02d} s" if minutes < 60 else f"{value / 3600:.1f} h"


def _score(value: float | None) -> str:
    return MISSING if value is None or not math.isfinite(value) else f"{value:.2f}"


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("dytopo.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters.update(tokens=_tokens, seconds=_seconds, score=_score)
