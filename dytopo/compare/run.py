"""Run one task in several routing modes, one after another on one server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from dytopo.compare.rows import ModeRow, failed_row, row_of, variant
from dytopo.errors import ConfigError, DyTopoError
from dytopo.managed.resolve import endpoints
from dytopo.runner import arun
from dytopo.swarm.trace import Observer
from dytopo.topology import Topology

log = structlog.get_logger("dytopo.compare")


def trace_of(out_dir: Path, mode: str) -> Path:
    return out_dir / f"{mode}.jsonl"


def report_of(out_dir: Path, mode: str) -> Path:
    return out_dir / f"{mode}.html"


def prepare(out_dir: Path, modes: Sequence[str]) -> None:
    """Make `out_dir`, refusing one that holds a trace of these modes already: a trace is
    appended to, so an old one would mix two runs."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; give a folder")
    for mode in modes:
        if trace_of(out_dir, mode).exists():
            raise ConfigError(
                f"{trace_of(out_dir, mode)} exists: give --out a new folder (a trace is "
                "appended to, and two runs in one would be unreadable)"
            )
    out_dir.mkdir(parents=True, exist_ok=True)


async def run_modes(
    topology: Topology,
    modes: Sequence[str],
    *,
    out_dir: Path,
    task: str | None = None,
    rounds: int | None = None,
    seed: int | None = None,
    backend_url: str | None = None,
    embed_url: str | None = None,
    base_dir: Path | None = None,
    source: Path | None = None,
    trust_topology: bool = False,
    model: str | None = None,
    observers: Callable[[int, str], Sequence[Observer]] = lambda index, mode: (),
    on_row: Callable[[list[ModeRow]], None] = lambda rows: None,
) -> list[ModeRow]:
    """Run `task` (default: the topology's) once per mode with the same seed on the same
    server, started once for all of them when none is configured (on `model`, else the
    topology's backend.model, else $DYTOPO_MODEL or the default). A mode that fails is a row
    with its error; the next mode still runs. `on_row(rows so far)` is called after each mode
    (so an interruption keeps every finished row); `observers(index, mode)` watch that mode's
    run. Traces and HTML reports go to `out_dir` as MODE.jsonl and MODE.html."""
    variants = {mode: variant(topology, mode, rounds, seed) for mode in modes}
    if not (task or topology.task):
        raise ConfigError(f"no task: pass --task, or set `task:` in the {topology.name} topology")
    prepare(out_dir, modes)
    rows: list[ModeRow] = []
    url = backend_url or topology.backend.base_url
    embed = embed_url or topology.embedder.base_url
    async with endpoints(url, embed, model=model or topology.backend.model) as ends:
        for index, mode in enumerate(modes):
            trace = trace_of(out_dir, mode)
            try:
                result = await arun(
                    variants[mode],
                    task,
                    backend_url=ends.chat_url,
                    embed_url=ends.embed_url,
                    trace_path=trace,
                    observers=observers(index, mode),
                    base_dir=base_dir,
                    trust_topology=trust_topology,
                    source=source,
                )
                row = row_of(mode, result)
            except DyTopoError as exc:
                log.info("compare.mode_failed", mode=mode, error=str(exc))
                row = failed_row(mode, exc)
            row.trace = str(trace) if trace.is_file() else None
            if row.trace:
                await _report(row, trace, report_of(out_dir, mode))
            rows.append(row)
            on_row(list(rows))
    return rows


async def _report(row: ModeRow, trace: Path, out: Path) -> None:
    """The run's HTML report (in a thread: layouts and rendering are CPU work). A report that
    cannot be written, for whatever reason, is noted in the row (the traceback is logged at
    debug level): the runs it would show took minutes each, so they are kept and the next
    mode runs."""
    from dytopo.report import write_report  # Jinja2 and the templates load only when asked

    try:
        row.report = str(await asyncio.to_thread(write_report, trace, out))
    except Exception as exc:  # a bug in rendering must not cost the comparison its runs
        log.debug("compare.report_failed", mode=row.mode, trace=str(trace), exc_info=True)
        first = (str(exc).splitlines() or [""])[0][:300]
        row.report_error = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
