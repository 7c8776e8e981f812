"""`dytopo compare`: one task in several routing modes, a table, a report per run, an index."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from dytopo.cli import options
from dytopo.cli._common import check_urls, err, out
from dytopo.cli._terminal import json_text
from dytopo.cli.progress import RoundProgress
from dytopo.errors import ConfigError
from dytopo.loader import load_topology
from dytopo.routing.config import Mode
from dytopo.swarm.trace import Observer

if TYPE_CHECKING:
    from dytopo.compare import Comparison, ModeRow

ALL_MODES = ",".join(Mode.__args__)  # type: ignore[attr-defined]


def compare(
    topology: Path = typer.Argument(..., help="Topology YAML, e.g. topologies/research.yaml."),
    task: str | None = typer.Option(None, "--task", "-t", help="The task (default: the file's)."),
    modes: str = typer.Option(
        ALL_MODES, "--modes", help="Routing modes to run, comma-separated, in this order."
    ),
    rounds: int | None = typer.Option(
        None, min=1, help="Exactly N rounds in every mode (min_rounds = max_rounds = N)."
    ),
    seed: int | None = typer.Option(None, help="Override the seed (the same in every mode)."),
    backend_url: str | None = typer.Option(
        None, "--backend-url", help="LLM server root (default: $DYTOPO_BASE_URL, else embedded)."
    ),
    embed_url: str | None = typer.Option(
        None, "--embed-url", help="Embedding server root (default: as `dytopo run`)."
    ),
    model: str | None = options.MODEL,
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object (a row per mode), no progress."
    ),
    out_dir: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for each mode's trace and report and index.html "
        "(default: runs/compare-NAME-TIME/).",
    ),
    trust_topology: bool = options.TRUST,
) -> None:
    """Run one task in several routing modes (same seed, same server, one after another) and
    compare rounds, edges, tokens, time and answers. Exit 1 when no mode finished."""
    from dytopo.compare import Comparison, parse_modes, run_modes, write_comparison

    chosen = parse_modes(modes)
    loaded = load_topology(topology, trust_topology=trust_topology)
    check_urls(backend_url or loaded.backend.base_url, embed_url or loaded.embedder.base_url)
    if not (task or loaded.task):
        raise ConfigError(f"no task: pass --task, or set `task:` in {topology}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = out_dir or Path("runs") / f"compare-{loaded.name}-{stamp}"
    comparison = Comparison(
        topology=loaded.name,
        source=str(topology),
        task=task or loaded.task or "",
        seed=loaded.seed if seed is None else seed,
        rounds=rounds,
        modes=chosen,
        started=time.strftime("%Y-%m-%d %H:%M:%S"),
        out_dir=str(folder),
    )
    view = None if as_json else _Progress(len(chosen))

    def on_row(rows: list[ModeRow]) -> None:
        comparison.rows = rows
        write_comparison(comparison)
        if view:
            view.finished(rows[-1])

    try:
        asyncio.run(
            run_modes(
                loaded,
                chosen,
                out_dir=folder,
                task=task,
                rounds=rounds,
                seed=seed,
                backend_url=backend_url,
                embed_url=embed_url,
                base_dir=topology.parent,
                source=topology,
                trust_topology=trust_topology,
                model=model,
                observers=view.observers if view else lambda index, mode: (),
                on_row=on_row,
            )
        )
    except KeyboardInterrupt:
        if view:
            view.stop()
        done = len(comparison.rows)
        where = f"; their rows: {folder / 'index.html'}" if done else ""
        err.print(
            f"interrupted: {done} of {len(chosen)} modes finished{where}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    finally:
        if view:
            view.stop()
    _show(comparison, as_json)
    if not any(row.ok for row in comparison.rows):
        raise typer.Exit(1)


def _show(comparison: Comparison, as_json: bool) -> None:
    if as_json:
        print(json_text(comparison.as_json()))
        return
    out.print(_table(comparison))
    index = Path(comparison.out_dir) / "index.html"
    out.print(f"traces, reports and index: {index}", markup=False, highlight=False, soft_wrap=True)


def _table(comparison: Comparison) -> Table:
    from dytopo.compare import relative_tokens

    fixed = f", {comparison.rounds} rounds each" if comparison.rounds else ""
    table = Table(title=f"{comparison.topology}: seed {comparison.seed}{fixed}")
    columns = ["mode", "rounds", "edges/round", "prompt", "cached", "generated", "vs first"]
    columns += ["wall s", "halt", "answer chars"]
    failed = any(row.error or row.report_error for row in comparison.rows)
    for column in [*columns, *(["error"] if failed else [])]:
        left = column in ("mode", "edges/round", "halt", "error")
        table.add_column(column, justify="left" if left else "right", overflow="fold")
    for row, ratio in zip(comparison.rows, relative_tokens(comparison.rows), strict=True):
        cells = [
            row.mode,
            str(row.rounds),
            " ".join(str(e) for e in row.edges_per_round) or "-",
            str(row.prompt_tokens),
            str(row.cached_tokens),
            str(row.completion_tokens),
            f"{ratio:.2f}" if ratio is not None else "-",
            f"{row.wall_s:.1f}",
            row.halt_reason,
            str(row.answer_chars),
        ]
        table.add_row(*cells, *([_problems(row)] if failed else []))
    return table


def _problems(row: ModeRow) -> str:
    report = f"report not written: {row.report_error}" if row.report_error else ""
    return "; ".join(p for p in (row.error, report) if p)


class _Progress:
    """On stderr: which mode is running, its rounds (RoundProgress), and how it ended."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.view: RoundProgress | None = None

    def observers(self, index: int, mode: str) -> list[Observer]:
        self.stop()
        err.print(f"[bold]mode {index + 1}/{self.total}: {mode}[/]", highlight=False)
        self.view = RoundProgress(err)
        return [self.view]

    def finished(self, row: ModeRow) -> None:
        self.stop()
        if row.ok:
            line = (
                f"{row.mode}: {row.rounds} rounds, {row.tokens} tokens, {row.wall_s:.1f}s, "
                f"halt: {row.halt_reason}"
            )
        else:
            line = f"{row.mode} failed: {row.error}"
        if row.report_error:
            line += f" (report not written: {row.report_error})"
        err.print(line, markup=False, highlight=False, soft_wrap=True)

    def stop(self) -> None:
        if self.view is not None:
            self.view.stop()
            self.view = None
