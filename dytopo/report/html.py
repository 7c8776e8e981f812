"""The report as one self-contained HTML page (Jinja2, autoescaped: model text is hostile)."""

from __future__ import annotations

from pathlib import Path

import jinja2

from dytopo.report.load import load_run
from dytopo.report.views import RunView

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("dytopo.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_html(run: RunView) -> str:
    return _ENV.get_template("report.html.jinja").render(run=run)


def write_report(trace: Path, out: Path | None = None) -> Path:
    """Write the report of the run in `trace` (default: beside it, `.html`); its path."""
    trace = Path(trace)
    out = Path(out) if out is not None else trace.with_suffix(".html")
    page = render_html(load_run(trace))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
