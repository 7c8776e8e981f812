"""`dytopo eval`: a benchmark through the swarm in several routing modes, graded in the sandbox."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from dytopo.batch import RecordStore, RunRecord, pending, run_batch, with_overrides
from dytopo.batch.local import run_local
from dytopo.cli import options
from dytopo.cli._common import check_urls, err, fail, out, run_async
from dytopo.cli.runs_progress import RunsProgress
from dytopo.eval import BENCHMARKS, benchmark, default_topology
from dytopo.eval.summary import ModeSummary, summarize, table
from dytopo.loader import load_topology
from dytopo.routing import Mode
from dytopo.sandbox import SandboxUnavailable, sandbox_problem

DEFAULT_LIMIT = 5
DEFAULT_MODES = "single,dynamic"
ALL_MODES: tuple[str, ...] = Mode.__args__  # type: ignore[attr-defined]


def _verdict(record: RunRecord) -> str:
    if not record.ok:
        return f"run failed: {record.error}"
    return "passed" if record.grade.get("passed") else str(record.grade.get("status", ""))


def _modes(text: str) -> list[Mode]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in ALL_MODES]
    if bad or not modes:
        shown = repr(bad[0]) if bad else "(none)"
        fail(f"--modes: {shown} is not a routing mode; give some of {', '.join(ALL_MODES)}", 2)
    return list(dict.fromkeys(modes))  # type: ignore[arg-type]


def eval_command(
    name: str = typer.Argument(
        "humaneval", metavar="[BENCHMARK]", help=f"One of: {', '.join(BENCHMARKS)}."
    ),
    modes: str = typer.Option(
        DEFAULT_MODES,
        "--modes",
        help="Comma-separated routing modes to compare: single, dynamic, broadcast, chain, "
        "star, random.",
    ),
    limit: int = typer.Option(
        DEFAULT_LIMIT, "--limit", help="The first N problems (HumanEval has 164)."
    ),
    rounds: int | None = typer.Option(None, "--rounds", help="Override max_rounds."),
    topology: Path | None = typer.Option(
        None, "--topology", help="Topology file (default: topologies/BENCHMARK.yaml)."
    ),
    backend_url: list[str] | None = typer.Option(
        None,
        "--backend-url",
        help="LLM server root (default: $DYTOPO_BASE_URL, else embedded); repeat it to spread "
        "the runs over several servers, as `dytopo batch` does.",
    ),
    embed_url: str | None = typer.Option(
        None, "--embed-url", help="Embedding server root (default: as for `dytopo run`)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON, no progress."),
    out_dir: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for records.jsonl and traces/ (default: runs/eval-BENCHMARK[-rN]). The "
        "same command with the same folder resumes: graded runs are skipped.",
    ),
    trust_topology: bool = options.TRUST,
) -> None:
    """Run a benchmark's problems through the swarm in each mode, grade every answer in the
    code sandbox, and print pass@1 with tokens, rounds and time per problem for each mode.

    With no arguments: the first 5 HumanEval problems, modes single and dynamic, embedded server.

    The full table on your server: --limit 164 --modes single,dynamic,broadcast,chain,random
    --backend-url http://HOST:8080
    """
    bench = benchmark(name)
    chosen = _modes(modes)
    if limit < 1:
        fail(f"--limit {limit}: give a number of problems of at least 1", 2)
    if rounds is not None and rounds < 1:
        fail(f"--rounds {rounds}: give at least 1", 2)
    urls = backend_url or []
    check_urls(urls[0] if urls else None, embed_url)
    for url in urls[1:]:
        check_urls(url)
    problem = sandbox_problem()  # no grading without it: refuse before any run
    if problem is not None:
        raise SandboxUnavailable(problem)
    path = topology or default_topology(bench)
    loaded = with_overrides(
        load_topology(path, trust_topology=trust_topology),
        None,
        {"rounds": rounds} if rounds else {},
    )
    items = bench.items(limit)
    folder = out_dir or Path("runs") / (f"eval-{bench.name}" + (f"-r{rounds}" if rounds else ""))
    with RecordStore(folder / "records.jsonl") as store:
        store.pin(
            {"benchmark": bench.name, "topology": loaded.model_dump(mode="json")}, what="eval"
        )
        skipped = len(items) * len(chosen) - len(pending(items, chosen, store.done()))
        if skipped and not as_json:
            err.print(
                f"resuming {folder}: {skipped} of {len(items) * len(chosen)} runs already graded, "
                f"{len(items) * len(chosen) - skipped} to run",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        view = None if as_json else RunsProgress(err, len(items) * len(chosen) - skipped, _verdict)

        async def batch() -> list[RunRecord]:
            try:
                if len(urls) > 1:
                    return await run_local(
                        items,
                        chosen,
                        loaded,
                        store,
                        urls=urls,
                        traces_dir=folder / "traces",
                        embed_url=embed_url,
                        base_dir=path.parent,
                        source=path,
                        trust_topology=trust_topology,
                        grader=bench.grade,
                        on_start=view.start if view else None,
                        on_record=view.finished if view else None,
                    )
                return await run_batch(
                    items,
                    chosen,
                    loaded,
                    store,
                    traces_dir=folder / "traces",
                    backend_url=urls[0] if urls else None,
                    embed_url=embed_url,
                    base_dir=path.parent,
                    source=path,
                    trust_topology=trust_topology,
                    grader=bench.grade,
                    on_start=view.start if view else None,
                    on_record=view.finished if view else None,
                )
            finally:
                if view is not None:
                    view.stop()  # before any error line

        _interruptible(batch(), store.path)
        records = store.records()
    ids = {i.id for i in items}
    rows = summarize([r for r in records if r.item in ids], chosen)
    _show(rows, bench.name, folder, len(items), skipped, as_json)


def _interruptible(batch: Coroutine[Any, Any, list[RunRecord]], records: Path) -> None:
    """Run the batch; on Ctrl-C (exit 130) say where the graded runs are and how to go on."""
    try:
        run_async(batch)
    except typer.Exit as stop:
        if stop.exit_code == 130:
            again = shlex.join(["dytopo", *sys.argv[1:]])
            err.print(
                f"graded runs are kept in {records}; resume with the same command: {again}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        raise


def _show(
    rows: list[ModeSummary], name: str, folder: Path, problems: int, skipped: int, as_json: bool
) -> None:
    if as_json:
        shown: dict[str, Any] = {
            "benchmark": name,
            "problems": problems,
            "out": str(folder),
            "records": str(folder / "records.jsonl"),
            "skipped": skipped,
            "modes": [r.model_dump() for r in rows],
        }
        print(json.dumps(shown, ensure_ascii=False))
        return
    title = f"{name}: {problems} problems; tokens, rounds and wall s per problem"
    # Off a terminal (a pipe, a log) rich would squeeze the table into 80 columns.
    (out if out.is_terminal else Console(width=120)).print(table(rows, title))
    out.print(
        f"records: {folder / 'records.jsonl'}  traces: {folder / 'traces'}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
