"""`dytopo run`, `dytopo validate`, `dytopo schema`."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from dytopo.backends.types import Usage
from dytopo.cli import options
from dytopo.cli._common import check_urls, err, fail, out, run_async
from dytopo.cli._terminal import json_text
from dytopo.cli.progress import RoundProgress, summary
from dytopo.errors import ConfigError, DyTopoError, RunError
from dytopo.loader import load_topology, problems_in, shown
from dytopo.routing.config import Mode
from dytopo.runner import arun, default_trace_path
from dytopo.swarm.checkpoint import checkpoint_path, resume_command
from dytopo.swarm.result import RunResult
from dytopo.swarm.trace import Observer
from dytopo.topology import Topology

# Where an overridden field came from, to name the flag in the error.
_FLAGS: dict[tuple[str | int, ...], str] = {
    ("routing", "mode"): "--mode",
    ("routing", "tau"): "--tau",
    ("max_rounds",): "--rounds",
    ("min_rounds",): "--rounds",
    ("seed",): "--seed",
}


def _override(
    topology: Topology, mode: str | None, tau: float | None, rounds: int | None, seed: int | None
) -> Topology:
    routing: dict[str, Any] = {}
    if mode is not None:
        routing["mode"] = mode
    if tau is not None:
        routing["tau"] = tau
    update: dict[str, Any] = {"routing": topology.routing.model_copy(update=routing)}
    if rounds is not None:
        update["max_rounds"] = rounds
        update["min_rounds"] = min(topology.min_rounds, rounds)
    if seed is not None:
        update["seed"] = seed
    # Validate the overridden values like the file's own.
    try:
        return Topology.model_validate(
            {
                **topology.model_dump(),
                **{k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in update.items()},
            }
        )
    except ValidationError as exc:
        lines = []
        for e in exc.errors(include_url=False):
            loc = tuple(e["loc"])
            where = _FLAGS.get(loc) or ".".join(str(p) for p in loc) or "options"
            lines.append(f"{where} {e.get('input')!r}: {e['msg']}")
        raise ConfigError("\n".join(lines)) from None


def run(
    topology: Path = typer.Argument(..., help="Topology YAML, e.g. topologies/research.yaml."),
    task: str | None = typer.Option(None, "--task", "-t", help="The task (default: the file's)."),
    mode: str | None = typer.Option(
        None, help="Override routing.mode: dynamic, broadcast, chain, star, random, single."
    ),
    tau: float | None = typer.Option(None, help="Override routing.tau."),
    rounds: int | None = typer.Option(None, min=1, help="Override max_rounds."),
    seed: int | None = typer.Option(None, help="Override the seed."),
    trace: Path | None = typer.Option(None, help="Trace file (default: runs/TIME-NAME.jsonl)."),
    backend_url: str | None = options.BACKEND_URL,
    embed_url: str | None = options.EMBED_URL,
    model: str | None = options.MODEL,
    as_json: bool = options.JSON,
    quiet: bool = options.QUIET,
    trust_topology: bool = options.TRUST,
    report: bool = options.REPORT,
    report_to: Path | None = options.REPORT_TO,
) -> None:
    """Run a swarm on a task and print the final answer."""
    if mode is not None and mode not in Mode.__args__:  # type: ignore[attr-defined]
        fail(f"--mode {mode!r} is not one of {', '.join(Mode.__args__)}", 2)  # type: ignore[attr-defined]
    loaded = _override(
        load_topology(topology, trust_topology=trust_topology), mode, tau, rounds, seed
    )
    check_urls(backend_url or loaded.backend.base_url, embed_url or loaded.embedder.base_url)
    trace = trace or default_trace_path(loaded)
    show_run(
        lambda observers: arun(
            loaded,
            task,
            backend_url=backend_url,
            embed_url=embed_url,
            trace_path=trace,
            observers=observers,
            base_dir=topology.parent,
            trust_topology=trust_topology,
            source=topology,
            model=model,
        ),
        trace=trace,
        as_json=as_json,
        quiet=quiet,
        report=report_to,
        want_report=report or report_to is not None,
    )


def show_run(
    start: Callable[[list[Observer]], Coroutine[Any, Any, RunResult]],
    *,
    trace: Path | None,
    as_json: bool,
    quiet: bool = False,
    progress: RoundProgress | None = None,
    report: Path | None = None,
    want_report: bool = False,
) -> None:
    """Run `start(observers)` the way `dytopo run` does: a live view on stderr (unless --json
    or --quiet), the result on stdout; Ctrl-C or SIGTERM exits 130 naming the resume command.
    With `want_report`, the HTML report of the trace is written however the run ends."""
    view = None if as_json or quiet else progress or RoundProgress(err)
    seen: list[str] = []
    written: Path | None = None

    def remember(event: dict[str, Any]) -> None:
        if not seen:
            seen.append(event["run_id"])

    try:
        try:
            result = run_async(start([remember, *([view] if view else [])]))
        finally:
            if view:
                view.stop()
            if want_report and trace is not None and seen:
                written = _write_report(trace, report)
    except typer.Exit as stop:
        if stop.exit_code == 130 and seen and trace and checkpoint_path(trace).is_file():
            again = resume_command(seen[0], trace)
            err.print(f"continue it with: {again}", markup=False, highlight=False, soft_wrap=True)
        raise
    if as_json:
        shown = _json(result)
        if want_report:
            shown["report"] = str(written) if written else None
        print(json_text(shown))
    else:
        summary(result, out)


def _write_report(trace: Path, report: Path | None) -> Path | None:
    """The run's report, or None with one line saying why not: a report must never turn a
    finished run into a failure."""
    from dytopo.report import write_report  # Jinja2 and the templates load only when asked

    try:
        written = write_report(trace, report)
    except (DyTopoError, OSError) as exc:
        err.print(f"report not written: {exc}", markup=False, highlight=False, soft_wrap=True)
        return None
    err.print(f"report: {written}", markup=False, highlight=False, soft_wrap=True)
    return written


def _json(result: RunResult) -> dict[str, Any]:
    return {
        "run_id": result.run_id,
        "final_answer": result.final_answer,
        "rounds": len(result.rounds),
        "halt_reason": result.halt_reason,
        "usage": _usage(result.usage),
        "usage_by_agent": {k: _usage(v) for k, v in result.usage_by_agent.items()},
        "edges_per_round": [len(r.routing.edges) for r in result.rounds],
        "usage_by_round": [_usage(r.usage) for r in result.rounds],
        "reasks": result.reasks,
        "stats": dict(result.stats),
        "failures": result.failures,
        "trace": result.trace_path,
        "wall_s": result.wall_s,
    }


def _usage(usage: Usage) -> dict[str, Any]:
    # cached_share: how much of the prompt the server's prompt cache spared it (0 to 1).
    return {**usage.model_dump(), "cached_share": round(usage.cached_share, 4)}


def validate(
    files: list[Path] = typer.Argument(..., help="Topology files to check."),
    trust_topology: bool = options.TRUST,
) -> None:
    """Check topology files without running any of their code: prints OK, or one line per
    problem (FILE:LINE: field: what to do), at most 20 per file."""
    bad = False
    for path in files:
        _, problems = problems_in(path, trust_topology=trust_topology)
        for line in shown(path, problems):
            out.print(line, markup=False, highlight=False, soft_wrap=True)
        if problems:
            bad = True
        else:
            out.print(f"{path}: OK", markup=False, highlight=False, soft_wrap=True)
    if bad:
        raise typer.Exit(2)


def schema() -> None:
    """Print the JSON Schema of topology files (for editor completion)."""
    print(json.dumps(Topology.model_json_schema(), indent=2))


__all__ = ["RunError", "run", "schema", "show_run", "validate"]
