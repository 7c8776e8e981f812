"""`dytopo batch`: every task of a file through one topology, spread over several servers."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import typer

from dytopo.batch import BatchItem, RecordStore, RunRecord, pending, with_overrides
from dytopo.batch.pool import BackendPool, ServerStats
from dytopo.batch.schedule import Executor, RunSpec, run_pool
from dytopo.batch.summary import BatchSummary, mode_rows, tables
from dytopo.batch.tasks import read_tasks
from dytopo.cli import options
from dytopo.cli._common import State, check_urls, err, fail, out, run_async
from dytopo.cli._terminal import SafeConsole, json_text
from dytopo.cli.runs_progress import RunsProgress
from dytopo.errors import PoolExhausted
from dytopo.loader import load_topology
from dytopo.managed.resolve import endpoints
from dytopo.routing.config import Mode
from dytopo.topology import Topology

RAY_HELP = (
    "Run each run as a Ray task: on a local Ray instance started for the batch, or with "
    "--ray-address on a cluster whose nodes declare each server as a resource "
    "(`ray start --resources '{\"dytopo_server_0\": SLOTS}'`). Needs the ray extra."
)


def batch_command(
    tasks: Path = typer.Argument(
        ...,
        metavar="TASKS.jsonl",
        help='One task per line: "text", or {"task": "...", "id": "...", "overrides": '
        '{"rounds": 2, "seed": 1, "tau": 0.4}}.',
    ),
    topology: Path = typer.Option(..., "--topology", "-t", help="Topology YAML for every run."),
    modes: str | None = typer.Option(
        None,
        "--modes",
        help="Routing modes, comma-separated: each task in each (default: the topology's mode).",
    ),
    backend_url: list[str] | None = typer.Option(
        None,
        "--backend-url",
        help="An LLM server root; repeat for several (default: the topology's `backends:`, "
        "else its server, $DYTOPO_BASE_URL or the embedded one).",
    ),
    embed_url: str | None = typer.Option(
        None, "--embed-url", help="Embedding server root (default: as `dytopo run`)."
    ),
    model: str | None = options.MODEL,
    runs_per_server: int | None = typer.Option(
        None,
        "--runs-per-server",
        help="Runs sharing one server at once, each with slots // N of its slots (default: 1 "
        "run with all its slots).",
    ),
    out_dir: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for records.jsonl, summary.json and traces/ (default: "
        "runs/batch-TASKS-TOPOLOGY). The same command resumes: finished runs are skipped.",
    ),
    use_ray: bool = typer.Option(False, "--ray", help=RAY_HELP),
    ray_address: str | None = typer.Option(
        None, "--ray-address", metavar="ADDRESS", help="A Ray cluster (implies --ray)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON, no progress."),
    trust_topology: bool = options.TRUST,
) -> None:
    """Run every task of TASKS.jsonl through a topology (in each of --modes), spread over the
    servers: one run per server at a time by default, each on the server with the most free
    slots; a server that dies has its runs continued elsewhere from their checkpoints. One
    trace and record per run, a summary at the end; rerun the same command to resume.
    """
    from dytopo.compare import parse_modes

    if runs_per_server is not None and runs_per_server < 1:
        fail(f"--runs-per-server {runs_per_server}: give at least 1", 2)
    for url in backend_url or []:
        check_urls(url)
    check_urls(None, embed_url)
    loaded = load_topology(topology, trust_topology=trust_topology)
    chosen = cast(list[Mode], parse_modes(modes) if modes else [loaded.routing.mode])

    def check(overrides: Mapping[str, Any]) -> None:
        with_overrides(loaded, None, overrides)

    items = read_tasks(tasks, check=check)
    urls = list(backend_url or loaded.backends or [])
    folder = out_dir or Path("runs") / f"batch-{tasks.stem}-{loaded.name}"
    total = len(items) * len(chosen)
    with RecordStore(folder / "records.jsonl") as store:
        store.pin({"topology": _pinned(loaded)}, what="batch")
        todo = pending(items, chosen, store.done())
        skipped = total - len(todo)
        if skipped and not as_json:
            _say(f"resuming {folder}: {skipped} of {total} runs already done, {len(todo)} to run")
        spec = RunSpec(
            topology=loaded,
            traces_dir=folder / "traces",
            embed_url=embed_url,
            base_dir=topology.parent,
            source=topology,
            trust_topology=trust_topology,
        )
        view = None if as_json or not todo else RunsProgress(err, len(todo))
        ray = use_ray or ray_address is not None
        batch = _Batch(
            spec, urls, runs_per_server, ray_address if ray else None, ray, view, model=model
        )
        _interruptible(batch, todo, store, folder)
        records = [r for r in store.records() if r.item in {i.id for i in items}]
    summary = BatchSummary(
        out=str(folder),
        records=str(folder / "records.jsonl"),
        tasks=len(items),
        runs=len({r.key for r in records if r.mode in chosen}),
        skipped=skipped,
        ran=len(batch.written),
        wall_s=round(batch.wall_s, 2),
        runs_per_minute=round(len(batch.written) / batch.wall_s * 60, 2) if batch.wall_s else 0.0,
        modes=mode_rows(records, chosen),
        servers=batch.servers,
    )
    (folder / "summary.json").write_text(summary.model_dump_json(indent=1), encoding="utf-8")
    _show(summary, as_json)
    if summary.runs and all(row.ok == 0 for row in summary.modes):
        raise typer.Exit(1)


def _pinned(topology: Topology) -> dict[str, Any]:
    """What the runs' results depend on: the topology, not where its servers are."""
    return topology.model_dump(mode="json", exclude={"backend", "backends"})


class _Batch:
    """The servers and the executor for the runs left, used once."""

    def __init__(
        self,
        spec: RunSpec,
        urls: list[str],
        runs_per_server: int | None,
        ray_address: str | None,
        ray: bool,
        view: RunsProgress | None,
        *,
        model: str | None = None,
    ) -> None:
        self.spec, self.urls, self.runs_per_server = spec, urls, runs_per_server
        self.ray, self.ray_address, self.view = ray, ray_address, view
        self.model = model
        """The embedded server's model when no server is given (None: the topology's)."""
        self.written: list[RunRecord] = []
        self.servers: list[ServerStats] = []
        self.wall_s = 0.0
        """From the first run's start to the last run's end (servers and Ray up already)."""

    async def run(self, todo: list[tuple[BatchItem, Mode]], store: RecordStore) -> None:
        if not todo:
            return
        try:
            async with self._pool() as (pool, execute):
                began = time.monotonic()
                try:
                    await run_pool(
                        pool,
                        todo,
                        execute,
                        store,
                        on_start=self.view.start if self.view else None,
                        on_record=self._record,
                        on_moved=self.view.moved if self.view else None,
                    )
                finally:
                    self.wall_s = time.monotonic() - began
                    self.servers = pool.stats()
        finally:
            if self.view is not None:
                self.view.stop()  # before any error line

    def _record(self, record: RunRecord) -> None:
        self.written.append(record)
        if self.view is not None:
            self.view.finished(record)

    @asynccontextmanager
    async def _pool(self) -> AsyncIterator[tuple[BackendPool, Executor]]:
        """The pool (the embedded server when none is given) and the executor over it."""
        s = self.spec
        # Given servers are used as they are; with none, the one `dytopo run` would use.
        chat = self.urls[0] if self.urls else s.topology.backend.base_url
        embed = s.embed_url or s.topology.embedder.base_url
        model = self.model or s.topology.backend.model
        async with endpoints(chat, embed, model=model) as ends:
            urls = self.urls or [ends.chat_url]
            spec = replace(s, embed_url=ends.embed_url)
            pool = await BackendPool.connect(
                urls, s.topology.backend, runs_per_server=self.runs_per_server
            )
            for server in pool.servers:
                if server.problem:
                    _say(f"left out of this batch: {server.problem}")
            try:
                if self.ray:
                    executor = await _ray_executor(spec, pool, self.ray_address)
                    async with executor:
                        yield pool, executor
                else:
                    from dytopo.batch.local import LocalExecutor

                    yield pool, LocalExecutor(spec)
            finally:
                await pool.aclose()


async def _ray_executor(spec: RunSpec, pool: BackendPool, address: str | None) -> Any:
    from dytopo.batch.ray_exec import RayExecutor  # imports ray: only for --ray

    return RayExecutor(spec, pool, address=address, verbose=State.debug)


def _interruptible(
    batch: _Batch, todo: list[tuple[BatchItem, Mode]], store: RecordStore, folder: Path
) -> None:
    """Run the batch; on Ctrl-C (exit 130) or when no server is left, say how to go on."""
    again = shlex.join(["dytopo", *sys.argv[1:]])
    try:
        run_async(batch.run(todo, store))
    except PoolExhausted as exc:
        raise PoolExhausted(
            f"{exc}; the finished runs are kept in {store.path}: start a server and continue "
            f"with the same command: {again}"
        ) from None
    except typer.Exit as stop:
        if stop.exit_code == 130:
            _say(f"finished runs are kept in {store.path}; continue with the same command: {again}")
        raise


def _say(text: str) -> None:
    err.print(text, markup=False, highlight=False, soft_wrap=True)


def _show(summary: BatchSummary, as_json: bool) -> None:
    if as_json:
        print(json_text(summary.model_dump(mode="json")))
        return
    # Off a terminal (a pipe, a log) rich would squeeze the tables into 80 columns.
    (out if out.is_terminal else SafeConsole(width=120)).print(tables(summary))
    out.print(
        f"records: {summary.records}  traces: {Path(summary.out) / 'traces'}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
