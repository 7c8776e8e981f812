"""`dytopo eval`: a benchmark through the swarm in several routing modes, graded in the sandbox."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast

import typer

from dytopo.batch import BatchItem, RecordStore, RunRecord, with_overrides
from dytopo.batch.models import RunMode
from dytopo.cli import options
from dytopo.cli._common import check_urls, err, fail, out, run_async
from dytopo.cli._terminal import SafeConsole, json_text
from dytopo.cli.runs_progress import RunsProgress
from dytopo.errors import SandboxUnavailable
from dytopo.eval import BENCHMARKS, benchmark, default_topology
from dytopo.eval import plain as plain_run
from dytopo.eval.run import run_eval, todo
from dytopo.eval.selection import select
from dytopo.eval.summary import ModeSummary, oracle_passed, server_work, summarize
from dytopo.eval.table import comparisons, runs_table, table
from dytopo.loader import load_topology
from dytopo.routing.config import Mode
from dytopo.sandbox.bwrap import sandbox_problem

DEFAULT_LIMIT = 5
DEFAULT_MODES = "plain,single,dynamic"
ALL_MODES: tuple[str, ...] = (plain_run.MODE, *Mode.__args__)  # type: ignore[attr-defined]


def _verdict(record: RunRecord) -> str:
    """How a run ended, with its oracle and its cost (the progress line adds tokens and time)."""
    if not record.ok:
        final = f"run failed: {record.error[:80]}"
    else:
        final = "passed" if record.grade.get("passed") else str(record.grade.get("status", ""))
    oracle = {None: "", True: "; oracle passed", False: "; oracle failed"}[oracle_passed(record)]
    if oracle_passed(record) and not record.grade.get("passed"):
        oracle += " (LOST: " + str(record.grade["oracle"].get("source", "")) + ")"
    asked = record.usage.requests
    cost = f"{asked} request{'' if asked == 1 else 's'}, server work {server_work(record):,.0f}"
    return f"{final[:60]}{oracle}; {cost}"


def _modes(text: str) -> list[RunMode]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in ALL_MODES]
    if bad or not modes:
        shown = repr(bad[0]) if bad else "(none)"
        fail(f"--modes: {shown} is not a mode; give some of {', '.join(ALL_MODES)}", 2)
    return cast(list[RunMode], list(dict.fromkeys(modes)))


def eval_command(
    name: str = typer.Argument(
        "humaneval", metavar="[BENCHMARK]", help=f"One of: {', '.join(BENCHMARKS)}."
    ),
    modes: str = typer.Option(
        DEFAULT_MODES,
        "--modes",
        help="Comma-separated modes to compare: plain (one call of the same model, no swarm) "
        "and the routing modes single, dynamic, broadcast, chain, star, random.",
    ),
    limit: int | None = typer.Option(
        None,
        "--limit",
        help=f"The first N problems (HumanEval has 164; default {DEFAULT_LIMIT}).",
    ),
    problems: str | None = typer.Option(
        None,
        "--problems",
        help="These problems only: HumanEval/3,HumanEval/17 or 3,17.",
    ),
    sample: int | None = typer.Option(
        None,
        "--sample",
        help="N problems drawn at random by --seed (the same seed, the same problems), run in "
        "problem order.",
    ),
    seed: int | None = typer.Option(None, "--seed", help="The seed of --sample (default 0)."),
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
    model: str | None = options.MODEL,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON, no progress."),
    per_problem: bool = typer.Option(
        False, "--per-problem", help="Also print a row per run: verdicts, tokens, time."
    ),
    out_dir: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for records.jsonl and traces/ (default: runs/eval-BENCHMARK[-rN]). The "
        "same command with the same folder resumes: graded runs are skipped.",
    ),
    trust_topology: bool = options.TRUST,
) -> None:
    """Run a benchmark's problems through the swarm in each mode and as one plain call of the
    same model, grade every answer in the code sandbox, and print per mode pass@1 (95% interval),
    the oracle (some agent's code passed), lost answers, and tokens, server work, requests and
    time per problem.

    With no arguments: the first 5 HumanEval problems, modes plain, single and dynamic, on the
    embedded server.

    The full table on your server: --limit 164 --modes plain,single,dynamic,broadcast,random
    --backend-url http://HOST:8080
    """
    bench = benchmark(name)
    chosen = _modes(modes)
    if rounds is not None and rounds < 1:
        fail(f"--rounds {rounds}: give at least 1", 2)
    items = select(
        bench.items(None),
        problems=problems,
        sample_size=sample,
        seed=seed,
        limit=limit,
        default_limit=DEFAULT_LIMIT,
    )
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
    folder = out_dir or Path("runs") / (f"eval-{bench.name}" + (f"-r{rounds}" if rounds else ""))
    with RecordStore(folder / "records.jsonl") as store:
        settings: dict[str, Any] = {
            "benchmark": bench.name,
            "topology": loaded.model_dump(mode="json"),
        }
        if plain_run.MODE in chosen:
            settings["plain"] = plain_run.settings(loaded)
        store.pin(settings, what="eval")
        skipped = len(items) * len(chosen) - len(todo(items, chosen, store.done()))
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
                return await run_eval(
                    items,
                    chosen,
                    loaded,
                    store,
                    traces_dir=folder / "traces",
                    grader=bench.grade,
                    urls=urls,
                    embed_url=embed_url,
                    base_dir=path.parent,
                    source=path,
                    trust_topology=trust_topology,
                    model=model,
                    on_start=view.start if view else None,
                    on_record=view.finished if view else None,
                )
            finally:
                if view is not None:
                    view.stop()  # before any error line

        _interruptible(batch(), store.path)
        records = store.records()
    ids = {i.id for i in items}
    mine = [r for r in records if r.item in ids]
    rows = summarize(mine, chosen)
    _show(rows, mine, items, chosen, bench.name, folder, skipped, as_json, per_problem)


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
    rows: list[ModeSummary],
    records: list[RunRecord],
    items: list[BatchItem],
    modes: list[RunMode],
    name: str,
    folder: Path,
    skipped: int,
    as_json: bool,
    per_problem: bool,
) -> None:
    lines = comparisons(records, modes)
    if as_json:
        shown: dict[str, Any] = {
            "benchmark": name,
            "problems": len(items),
            "items": [i.id for i in items],
            "out": str(folder),
            "records": str(folder / "records.jsonl"),
            "skipped": skipped,
            "modes": [r.model_dump() for r in rows],
            "comparisons": lines,
        }
        print(json_text(shown))
        return
    # Off a terminal (a pipe, a log) rich would squeeze the tables into 80 columns.
    console = out if out.is_terminal else SafeConsole(width=170)
    if per_problem:
        console.print(runs_table(records, items, modes))
    title = (
        f"{name}: {len(items)} problems; tokens, server work (prompt tokens not from cache + "
        "generated), requests and wall s per problem"
    )
    console.print(table(rows, title))
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    out.print(
        f"records: {folder / 'records.jsonl'}  traces: {folder / 'traces'}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
