"""Running a batch: every (item, mode) pair not yet on record, one after another, one server.

`run_one` is a plain async function of data (an item, a mode, a topology, server roots, a trace
path) to data (a RunRecord), with no shared state: a worker process or a Ray task can call it as
is. `run_batch` walks the pairs in order on one server, grades each answer and appends its
record as it ends, so that an interrupted batch loses only the run in progress.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import structlog

from dytopo.backends.base import Backend
from dytopo.batch.models import BatchItem, Key, RunRecord
from dytopo.batch.overrides import with_overrides
from dytopo.batch.store import RecordStore
from dytopo.embedders.base import Embedder
from dytopo.errors import ConfigError, RunError
from dytopo.managed.resolve import endpoints
from dytopo.routing.config import Mode
from dytopo.runner import arun, run_on
from dytopo.swarm.checkpoint import (
    Checkpoint,
    changed_fields,
    check_resumable,
    checkpoint_path,
    read_checkpoint,
)
from dytopo.swarm.result import RunResult
from dytopo.swarm.trace import Observer
from dytopo.topology import Topology

log = structlog.get_logger("dytopo.batch")

Grader = Callable[[BatchItem, RunRecord], dict[str, Any]]
"""Judges a run's answer (blocking is fine: it runs in a worker thread)."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
SLUG_CHARS = 48
"""The readable part of a trace's name, at most (an id may have 200 characters)."""


def trace_name(item_id: str, mode: str) -> str:
    """A file name for one run's trace, different for every (id, mode): the id made safe and
    short, then a hash of the exact id (`HumanEval/12` in dynamic mode ->
    HumanEval_12-d98e9fb34bc2-dynamic.jsonl). The readable part alone would collide: "a/b",
    "a b" and "a_b" read alike, "問1" and "題1" both read "1", and two runs sharing a file
    delete or resume each other's trace and checkpoint. Hex digits also keep names apart on a
    file system that ignores case."""
    slug = _UNSAFE.sub("_", item_id).strip("._")[:SLUG_CHARS].rstrip("._") or "item"
    digest = hashlib.sha256(item_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{slug}-{digest}-{mode}.jsonl"


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


def resumable(trace_path: Path, item: BatchItem, topology: Topology) -> Checkpoint | None:
    """The checkpoint an earlier attempt of this run left beside its trace, when the run can go
    on from it (it stopped: interrupted, or its server died) and it is this item's run on this
    topology (`topology`: the run's variant); None: start afresh."""
    path = checkpoint_path(trace_path)
    if not path.is_file():
        return None
    try:
        cp = read_checkpoint(path)
        check_resumable(cp)
    except ConfigError as exc:  # complete (its record was lost) or unreadable: run it again
        log.info("batch.fresh_start", trace=str(trace_path), reason=str(exc))
        return None
    other = _not_this_run(cp, item, topology)
    if other:  # an edited task under the same id must not continue the old task
        log.warning(
            "batch.fresh_start",
            item=item.id,
            trace=str(trace_path),
            reason=f"its checkpoint is of another run ({other}): starting it afresh",
        )
        return None
    return cp


_SERVER_FIELDS = ("backend", "backends")
"""What may differ between attempts of one run: a run moved to another server (its URL, its
share of the slots) is the same run."""


def _not_this_run(cp: Checkpoint, item: BatchItem, topology: Topology) -> str:
    """How `cp` differs from `item`'s run on `topology` ("" when it does not)."""
    if cp.task != item.task:
        return "its task differs from the item's"
    agents = [a.id for a in topology.agents]
    if cp.state.agents != agents:
        return f"it ran agents {cp.state.agents}, the topology has {agents}"
    if cp.topology is None:  # a topology built in Python: nothing more to compare
        return ""
    ran = {k: v for k, v in cp.topology.items() if k not in _SERVER_FIELDS}
    now = topology.model_dump(mode="json", exclude=set(_SERVER_FIELDS))
    changed = changed_fields(ran, now)
    return f"the topology changed: {', '.join(changed[:4])}" if changed else ""


def _variant(topology: Topology, mode: Mode, item: BatchItem, slots: int | None) -> Topology:
    variant = with_overrides(topology, mode, item.overrides)
    if slots is None:
        return variant
    # The run's client holds at most `slots` requests in flight: its share of the server.
    return variant.model_copy(
        update={"backend": variant.backend.model_copy(update={"slots": slots})}
    )


def _start_point(
    trace_path: Path, resume: bool, item: BatchItem, topology: Topology
) -> Checkpoint | None:
    """Where the run starts: its checkpoint (with `resume`, when it is this run's), else
    afresh, the trace (and checkpoint) of an earlier attempt replaced."""
    cp = resumable(trace_path, item, topology) if resume else None
    if cp is None:
        for stale in (trace_path, checkpoint_path(trace_path)):
            with suppress(FileNotFoundError):
                stale.unlink()
    return cp


async def _recorded(
    item: BatchItem, mode: Mode, trace_path: Path, running: Awaitable[RunResult]
) -> RunRecord:
    try:
        result = await running
    except RunError as exc:
        line = (str(exc).splitlines() or [type(exc).__name__])[0]
        partial = exc.partial
        if not isinstance(partial, RunResult):
            partial = RunResult(run_id="", task=item.task, final_answer="", halt_reason="error")
        log.warning("batch.run_failed", item=item.id, mode=mode, error=line)
        return _record(item, mode, partial, trace_path, error=line)
    return _record(item, mode, result, trace_path)


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
    slots: int | None = None,
    resume: bool = False,
) -> RunRecord:
    """Run `item` in `mode` and return its record. A run that fails part-way (RunError) is a
    record with `ok=False`, its error line and what it had spent; any other error (the server
    cannot be reached, the topology does not fit it) concerns every run and is raised.

    `slots`: the requests the run may have in flight (its share of the server; default: all
    the server's slots). A trace (and checkpoint) at `trace_path` left by an earlier attempt is
    replaced, unless `resume` and the run can go on from that checkpoint: then it does."""
    variant = _variant(topology, mode, item, slots)
    cp = _start_point(trace_path, resume, item, variant)
    running = arun(
        variant,
        item.task,
        backend_url=backend_url,
        embed_url=embed_url,
        trace_path=trace_path,
        observers=observers,
        base_dir=base_dir,
        trust_topology=trust_topology,
        source=source,
        checkpoint=cp,
    )
    return await _recorded(item, mode, trace_path, running)


async def run_one_on(
    item: BatchItem,
    mode: Mode,
    topology: Topology,
    backend: Backend,
    embedder: Embedder,
    *,
    trace_path: Path,
    base_dir: Path | None = None,
    source: Path | None = None,
    trust_topology: bool = False,
    resume: bool = False,
) -> RunRecord:
    """`run_one` on a backend object the caller owns (an in-process server: benchmarks, tests);
    the backend's `connect()` gives the slots the run may use."""
    variant = _variant(topology, mode, item, None)
    cp = _start_point(trace_path, resume, item, variant)
    running = run_on(
        variant,
        item.task,
        backend,
        embedder,
        trace_path=trace_path,
        base_dir=base_dir,
        source=source,
        checkpoint=cp,
        trust_topology=trust_topology,
    )
    return await _recorded(item, mode, trace_path, running)


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
    model: str | None = None,
) -> list[RunRecord]:
    """Run every (item, mode) pair that `store` has no record of, in order, and return the new
    records (each appended to `store`, graded, as it ends).

    With no server configured (argument, topology, $DYTOPO_BASE_URL), one embedded server is
    started for the whole batch (on `model`, else the topology's backend.model, else
    $DYTOPO_MODEL or the default). Cancelling (Ctrl-C) stops the run in progress; the records of
    the finished ones are on disk, and the same call later runs only what is left."""
    if len({i.id for i in items}) != len(items):
        raise ValueError("batch item ids must be unique")
    todo = pending(items, modes, store.done())
    if not todo:
        return []
    written: list[RunRecord] = []
    chat = backend_url or topology.backend.base_url
    embed = embed_url or topology.embedder.base_url
    async with endpoints(chat, embed, model=model or topology.backend.model) as ends:
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
