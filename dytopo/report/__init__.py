"""`dytopo report`: a run's trace as one self-contained HTML page, or its graphs as dot/mermaid."""

from dytopo.report.html import render_html, write_report
from dytopo.report.load import load_run
from dytopo.report.views import RunView

__all__ = ["RunView", "load_run", "render_html", "write_report"]
