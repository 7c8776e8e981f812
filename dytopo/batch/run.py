"""Running a batch: every (item, mode) pair not yet on record, one after another, one server.

`run_one` is a plain async function of data (an item, a mode, a topology, server roots, a trace
path) to data (a RunRecord), with no shared state: a worker process or a Ray task can call it as
is. `run_batch` walks the pairs in order on one server, grades each answer and appends its
record as it ends, so that an interrupted batch loses only the run in progress.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import structlog

from dytopo.batch.models import BatchItem, Key, RunRecord
from dytopo.batch.overrides import with_overrides
from dytopo.batch.store import RecordStore
from dytopo.checkpoint import checkpoint_path
from dytopo.errors import RunError
from dytopo.managed.resolve import endpoints
from dytopo.result import RunResult
from dytopo.routing import Mode
from dytopo.runner import run_topology
from dytopo.topology import Topology
from dytopo.trace import Observer

log = structlog.get_logger("dytopo.batch")

Grader = Callable[[BatchItem, RunRecord], dict[str, Any]]
"""Judges a run's answer (blocking is fine: it runs in a worker thread)."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def trace_name(item_id: str, mode: str) -> str:
    """A file name for one run's trace: `HumanEval/12` in dynamic mode -> HumanEval_12-dynamic."""
    return f"{_UNSAFE.sub('_', item_id).strip('_') or 'item'}-{mode}.jsonl"


def pending(
    items: Sequence[BatchItem], modes: Sequence[Mode], done: set[Key]
) -> list[tuple[BatchItem, Mode]]:
    """The pairs still to run, item by item (each item in every mode before the next item, so a
    stopped batch has compared the modes on the same items)."""
    return [(i, m) for i in items for m in modes if (i.id, m) not in done]


def _record(
    item: BatchItem, mode: Mode, result: RunResult, trace: Path, error: str = ""
) -> RunRecord:
    return RunRecord(
        item=item.id,
        mode=mode,
        ok=not error,
        final_answer=result.final_answer,
        rounds=len(result.rounds),
        halt_reason=result.halt_reason,
        usage=result.usage,
        wall_s=round(result.wall_s, 3),
        run_id=result.run_id,
        trace=str(trace),
        error=error,
    )


async def run_one(
    item: BatchItem,
    mode: Mode,
    topology: Topology,
    *,
    backend_url: str | None,
    embed_url: str | None,
    trace_path: Path,
    base_dir: Path | None = None,
    source: Path | None = None,
    trust_topology: bool = False,
    observers: Sequence[Observer] = (),
) -> RunRecord:
    """Run `item` in `mode` and return its record. A run that fails part-way (RunError) is a
    record with `ok=False`, its error line and what it had spent; any other error (the server
    cannot be reached, the topology does not fit it) concerns every run and is raised.

    A trace (and checkpoint) at `trace_path` left by an interrupted attempt is replaced."""
    variant = with_overrides(topology, mode, item.overrides)
    for stale in (trace_path, checkpoint_path(trace_path)):
        with suppress(FileNotFoundError):
            stale.unlink()
    try:
        result = await run_topology(
            variant,
            item.task,
            backend_url=backend_url,
            embed_url=embed_url,
            trace_path=trace_path,
            observers=observers,
            base_dir=base_dir,
            trust_topology=trust_topology,
            source=source,
        )
    except RunError as exc:
        line = (str(exc).splitlines() or [type(exc).__name__])[0]
        partial = exc.partial
        if not isinstance(partial, RunResult):
            partial = RunResult(run_id="", task=item.task, final_answer="", halt_reason="error")
        log.warning("batch.run_failed", item=item.id, mode=mode, error=line)
        return _record(item, mode, partial, trace_path, error=line)
    return _record(item, mode, result, trace_path)


async def run_batch(
    items: Sequence[BatchItem],
    modes: Sequence[Mode],
    topology: Topology,
    store: RecordStore,
    *,
    traces_dir: Path,
    backend_url: str | None = None,
    embed_url: str | None = None,
    base_dir: Path | None = None,
    source: Path | None = None,
    trust_topology: bool = False,
    grader: Grader | None = None,
    on_start: Callable[[BatchItem, Mode], None] | None = None,
    on_record: Callable[[RunRecord], None] | None = None,
) -> list[RunRecord]:
    """Run every (item, mode) pair that `store` has no record of, in order, and return the new
    records (each appended to `store`, graded, as it ends).

    With no server configured (argument, topology, $DYTOPO_BASE_URL), one embedded server is
    started for the whole batch. Cancelling (Ctrl-C) stops the run in progress; the records of
    the finished ones are on disk, and the same call later runs only what is left."""
    if len({i.id for i in items}) != len(items):
        raise ValueError("batch item ids must be unique")
    todo = pending(items, modes, store.done())
    if not todo:
        return []
    written: list[RunRecord] = []
    chat = backend_url or topology.backend.base_url
    async with endpoints(chat, embed_url or topology.embedder.base_url) as ends:
        for item, mode in todo:
            if on_start is not None:
                on_start(item, mode)
            record = await run_one(
                item,
                mode,
                topology,
                backend_url=ends.chat_url,
                embed_url=ends.embed_url,
                trace_path=traces_dir / trace_name(item.id, mode),
                base_dir=base_dir,
                source=source,
                trust_topology=trust_topology,
            )
            if grader is not None:
                grade = await asyncio.to_thread(grader, item, record)
                record = record.model_copy(update={"grade": grade})
            store.append(record)
            written.append(record)
            if on_record is not None:
                on_record(record)
    return written
