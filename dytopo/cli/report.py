"""`dytopo report TRACE`: the run's HTML report, or each round's graph as dot or Mermaid."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from dytopo.cli._common import fail, out
from dytopo.cli._terminal import visible
from dytopo.errors import ConfigError
from dytopo.report import load_run, render_dot, render_html, render_mermaid

Format = Literal["html", "dot", "mermaid"]
FORMATS: tuple[Format, ...] = ("html", "dot", "mermaid")


def report(
    trace: Path = typer.Argument(..., help="The run's trace (JSONL), e.g. runs/x.jsonl."),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Where to write (html default: the trace's path with .html; dot/mermaid: stdout).",
    ),
    fmt: str = typer.Option(
        "html", "--format", "-f", help="html (one self-contained page), dot or mermaid."
    ),
    round: int | None = typer.Option(
        None, "--round", "-r", help="dot/mermaid: only this round (default: every round)."
    ),
) -> None:
    """Write a run's report: one self-contained HTML page (graphs, heatmaps, messages, totals;
    opens without network), or each round's graph as Graphviz dot or a Mermaid flowchart."""
    if fmt not in FORMATS:
        fail(f"--format {fmt!r}: use one of {', '.join(FORMATS)}", 2)
    try:
        run = load_run(trace)
    except ConfigError as exc:
        fail(str(exc), 2)
    numbers = [r.number for r in run.rounds]
    if round is not None and round not in numbers:
        have = "rounds " + ", ".join(map(str, numbers)) if numbers else "no rounds"
        fail(f"--round {round}: {trace} has {have}", 2)
    if fmt != "html" and not numbers:
        fail(f"{trace} has no rounds: no graph to draw", 2)
    if fmt == "html":
        target = output or trace.with_suffix(".html")
        _write(target, render_html(run))
        out.print(str(target), highlight=False, soft_wrap=True)
        return
    draw = render_dot if fmt == "dot" else render_mermaid
    text = "\n".join(draw(run, n) for n in ([round] if round is not None else numbers))
    if output is None:
        print(visible(text), end="")
    else:
        _write(output, text)
        out.print(str(output), highlight=False, soft_wrap=True)


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"--output {path}: cannot write it ({exc.strerror or exc})", 2)
