"""Running an eval: every (problem, mode) pair not yet on record, the plain baseline included.

Swarm modes run as `dytopo batch` runs them (`run_one`; over several servers, `run_local`); the
`plain` mode is one call on a client of the same server (`dytopo.eval.plain`). On one server
the pairs run problem by problem, each problem in every mode before the next one, so a stopped
eval has compared the modes on the same problems. Over several servers the plain calls run
first, on the first server, then the swarm runs are spread over all of them. Each record is
graded and appended as its run ends: an interrupted eval resumes where it stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from dytopo.backends.base import Backend
from dytopo.backends.llamacpp import LlamaCppBackend
from dytopo.batch import BatchItem, Grader, RecordStore, RunRecord, run_one, trace_name
from dytopo.batch.local import run_local
from dytopo.batch.models import RunMode
from dytopo.eval.plain import MODE as PLAIN
from dytopo.eval.plain import run_plain
from dytopo.managed.resolve import endpoints
from dytopo.topology import Topology

Started = Callable[[BatchItem, str], None]
Recorded = Callable[[RunRecord], None]


def plain_backend(topology: Topology, url: str) -> Backend:
    """The client plain runs use: the topology's backend settings (key, timeouts) on `url`."""
    return LlamaCppBackend(topology.backend.model_copy(update={"base_url": url}))


def todo(
    items: Sequence[BatchItem], modes: Sequence[RunMode], done: set[tuple[str, str]]
) -> list[tuple[BatchItem, RunMode]]:
    """The pairs still to run, problem by problem."""
    return [(i, m) for i in items for m in modes if (i.id, m) not in done]


class _Eval:
    """One eval's settings, shared by its runs."""

    def __init__(
        self,
        topology: Topology,
        store: RecordStore,
        traces_dir: Path,
        grader: Grader,
        on_start: Started | None,
        on_record: Recorded | None,
    ) -> None:
        self.topology, self.store, self.traces_dir = topology, store, traces_dir
        self.grader, self.on_start, self.on_record = grader, on_start, on_record

    async def keep(self, item: BatchItem, record: RunRecord) -> RunRecord:
        grade = await asyncio.to_thread(self.grader, item, record)
        record = record.model_copy(update={"grade": grade})
        self.store.append(record)
        if self.on_record is not None:
            self.on_record(record)
        return record

    async def plain(self, item: BatchItem, backend: Backend) -> RunRecord:
        if self.on_start is not None:
            self.on_start(item, PLAIN)
        trace = self.traces_dir / trace_name(item.id, PLAIN)
        return await self.keep(
            item, await run_plain(item, self.topology, backend, trace_path=trace)
        )


async def run_eval(
    items: Sequence[BatchItem],
    modes: Sequence[RunMode],
    topology: Topology,
    store: RecordStore,
    *,
    traces_dir: Path,
    grader: Grader,
    urls: Sequence[str] = (),
    embed_url: str | None = None,
    base_dir: Path | None = None,
    source: Path | None = None,
    trust_topology: bool = False,
    model: str | None = None,
    on_start: Started | None = None,
    on_record: Recorded | None = None,
) -> list[RunRecord]:
    """Run and grade every (item, mode) pair `store` has no record of; the new records.

    With no server given (`urls`, the topology, $DYTOPO_BASE_URL) one embedded server is
    started for the whole eval on `model` (else the topology's backend.model, else
    $DYTOPO_MODEL, else the default), and the plain calls go to it as well."""
    pairs = todo(items, modes, store.done())
    if not pairs:
        return []
    run = _Eval(topology, store, traces_dir, grader, on_start, on_record)
    if len(urls) > 1:
        return await _pooled(run, pairs, urls, embed_url, base_dir, source, trust_topology)
    written: list[RunRecord] = []
    chat = urls[0] if urls else topology.backend.base_url
    embed = embed_url or topology.embedder.base_url
    async with endpoints(chat, embed, model=model or topology.backend.model) as ends:
        with_plain = any(mode == PLAIN for _, mode in pairs)
        backend = plain_backend(topology, ends.chat_url) if with_plain else None
        try:
            for item, mode in pairs:
                if mode == PLAIN:
                    assert backend is not None
                    written.append(await run.plain(item, backend))
                    continue
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
                written.append(await run.keep(item, record))
        finally:
            if backend is not None:
                await backend.aclose()
    return written


async def _pooled(
    run: _Eval,
    pairs: list[tuple[BatchItem, RunMode]],
    urls: Sequence[str],
    embed_url: str | None,
    base_dir: Path | None,
    source: Path | None,
    trust_topology: bool,
) -> list[RunRecord]:
    """Over several servers: the plain calls on the first, then the swarm runs on all."""
    written: list[RunRecord] = []
    plain = [item for item, mode in pairs if mode == PLAIN]
    if plain:
        backend = plain_backend(run.topology, urls[0])
        try:
            for item in plain:
                written.append(await run.plain(item, backend))
        finally:
            await backend.aclose()
    swarm_items = list({item.id: item for item, mode in pairs if mode != PLAIN}.values())
    swarm_modes = list(dict.fromkeys(mode for _, mode in pairs if mode != PLAIN))
    if swarm_items:
        written += await run_local(
            swarm_items,
            swarm_modes,
            run.topology,
            run.store,
            urls=urls,
            traces_dir=run.traces_dir,
            embed_url=embed_url,
            base_dir=base_dir,
            source=source,
            trust_topology=trust_topology,
            grader=run.grader,
            on_start=run.on_start,
            on_record=run.on_record,
        )
    return written
