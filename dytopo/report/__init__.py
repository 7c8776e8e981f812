"""`dytopo report`: a run's trace as one self-contained HTML page, or its graphs as dot/mermaid.

run = load_run("runs/x.jsonl")      # typed views of the rounds, graphs and totals
write_report(Path("runs/x.jsonl"))  # runs/x.html
"""

from dytopo.report.html import render_html, write_report
from dytopo.report.load import load_run
from dytopo.report.text_graphs import render_dot, render_mermaid
from dytopo.report.views import RunView

__all__ = ["RunView", "load_run", "render_dot", "render_html", "render_mermaid", "write_report"]
