"""The backend pool and its scheduler on in-process servers: placement, per-server limits, an
interrupted batch resumed, a server dying mid-batch."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from batch_kit import Server, items, spec
from helpers import after_each_checkpoint

from dytopo.batch import RecordStore, RunRecord, pending, read_records, trace_name
from dytopo.batch.local import LocalExecutor
from dytopo.batch.pool import BackendPool, PoolServer, share
from dytopo.batch.schedule import run_pool
from dytopo.errors import PoolExhausted
from dytopo.swarm.checkpoint import Checkpoint
from dytopo.swarm.trace import read_trace


def servers(*slots: int) -> BackendPool:
    return BackendPool(
        [
            PoolServer(k, f"s{k}", url=f"http://s{k}", slots=n, per_run=n)
            for k, n in enumerate(slots)
        ]
    )


def test_a_run_takes_the_whole_server_unless_runs_share_it() -> None:
    assert share(4, None) == (4, 1)
    assert share(4, 2) == (2, 2)
    assert share(4, 3) == (1, 3)  # slots // 3 = 1 slot each, and no more runs than asked
    assert share(2, 5) == (1, 2)  # never more runs than slots
    assert share(1, 1) == (1, 1)


def test_the_next_run_goes_to_the_alive_server_with_the_most_free_slots() -> None:
    pool = servers(2, 4, 4)
    for server in pool.servers:
        server.per_run, server.capacity = 1, server.slots
    placed = []
    for _ in range(10):
        server = pool.place()
        assert server is not None
        pool.take(server)
        placed.append(server.name)
    # 4-slot servers first (ties: the first), then whoever has most room left
    assert placed == ["s1", "s2", "s1", "s2", "s0", "s1", "s2", "s0", "s1", "s2"]
    assert pool.place() is None  # every slot taken
    pool.give(pool.servers[0])
    assert pool.place() is pool.servers[0]
    pool.servers[0].alive = False
    assert pool.place() is None  # a dead server gets nothing, free or not


def test_capacity_counts_runs_not_slots() -> None:
    pool = servers(4)
    server = pool.servers[0]
    server.per_run, server.capacity = 2, 2
    pool.take(server)
    pool.take(server)
    assert pool.place() is None
    with pytest.raises(RuntimeError, match="no room"):
        pool.take(server)


async def test_servers_are_sized_from_their_props_and_one_that_does_not_answer_is_dead() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "down":
            raise httpx.ConnectError("refused", request=request)
        slots = {"a": 4, "b": 2}[request.url.host]
        props = {"total_slots": slots, "default_generation_settings": {"n_ctx": 2048}}
        return httpx.Response(200, json=props)

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    pool = await BackendPool.connect(
        ["http://a", "http://down", "http://b"], runs_per_server=2, client=client
    )
    shape = [(s.index, s.name, s.slots, s.per_run, s.capacity, s.alive) for s in pool.servers]
    assert shape == [
        (0, "http://a", 4, 2, 2, True),
        (1, "http://down", 0, 0, 0, False),  # keeps its place: Ray names resources by index
        (2, "http://b", 2, 1, 2, True),
    ]
    assert pool.servers[1].problem.startswith("http://down: LLM server at http://down did not")
    with pytest.raises(Exception, match="no server of the pool answers"):
        await BackendPool.connect(["http://down"], client=client)
    await client.aclose()


async def batch(
    tmp_path: Path, backends: list[Server], n: int, runs_per_server: int | None = None
) -> tuple[BackendPool, list[RunRecord]]:
    pool = await BackendPool.in_process(backends, runs_per_server=runs_per_server)
    todo = pending(items(n), ["dynamic"], set())
    with RecordStore(tmp_path / "records.jsonl") as store:
        records = await run_pool(pool, todo, LocalExecutor(spec(tmp_path)), store)
    return pool, records


@pytest.mark.parametrize(("runs_per_server", "runs_at_once"), [(None, 1), (2, 2), (4, 2)])
async def test_a_server_never_has_more_runs_than_slots_per_run_nor_requests_than_slots(
    tmp_path: Path, runs_per_server: int | None, runs_at_once: int
) -> None:
    # The servers accept any number of requests: only the pool and the runs' limits hold them.
    backends = [Server(slots=2), Server(slots=2)]

    pool, records = await batch(tmp_path, backends, 8, runs_per_server)

    assert sorted(r.item for r in records) == [f"line-{k}" for k in range(1, 9)]
    assert all(r.ok and r.rounds == 2 for r in records)
    for server, backend in zip(pool.servers, backends, strict=True):
        assert server.max_running == runs_at_once
        assert backend.limiter.max_in_use == 2  # both slots used, never more
        assert server.served >= 3  # both servers serve runs
    stats = pool.stats()
    assert [s.max_in_flight for s in stats] == [2, 2]
    assert {r.server for r in records} == {"in-process-0", "in-process-1"}


async def test_an_interrupted_batch_runs_only_what_is_left_and_continues_stopped_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backends = [Server(), Server()]
    pool = await BackendPool.in_process(backends)
    execute = LocalExecutor(spec(tmp_path))
    loop = asyncio.get_running_loop()
    third_past_round_1 = asyncio.Event()

    def landed(cp: Checkpoint, path: Path) -> None:
        if path.name.startswith("line-3-") and cp.state.round >= 1:
            loop.call_soon_threadsafe(third_past_round_1.set)

    after_each_checkpoint(monkeypatch, landed)
    with RecordStore(tmp_path / "records.jsonl") as store:
        first = asyncio.create_task(
            run_pool(pool, pending(items(6), ["dynamic"], set()), execute, store)
        )
        await third_past_round_1.wait()
        first.cancel()  # Ctrl-C, once line-3 is past its first round
        with pytest.raises(asyncio.CancelledError):
            await first
        done = store.done()
        assert 2 <= len(done) < 6
        stopped = [
            k for k in range(1, 7)
            if (tmp_path / "traces" / trace_name(f"line-{k}", "dynamic")).exists()
            and ("line-" + str(k), "dynamic") not in done
        ]  # fmt: skip
        assert stopped  # runs were in flight when it stopped

        todo = pending(items(6), ["dynamic"], done)
        again = await run_pool(pool, todo, execute, store)

    assert sorted(r.item for r in again) == sorted(i.id for i, _ in todo)
    records = read_records(tmp_path / "records.jsonl")
    assert sorted(r.item for r in records) == [f"line-{k}" for k in range(1, 7)]
    assert all(r.ok and r.rounds == 2 for r in records)
    for k in range(1, 7):
        trace = tmp_path / "traces" / trace_name(f"line-{k}", "dynamic")
        events = [e["event"] for e in read_trace(trace)]
        assert events.count("run_start") == 1  # no run started over
        assert events.count("run_resumed") == (1 if k in stopped else 0)
        assert events[-1] == "run_end"


async def test_a_dead_servers_run_continues_from_its_checkpoint_elsewhere(tmp_path: Path) -> None:
    # Server 0 answers its first run's first round (goal, two agents, decision), then dies.
    mortal, healthy = Server(die_after=4), Server()

    pool, records = await batch(tmp_path, [mortal, healthy], 4)

    assert sorted(r.item for r in records) == ["line-1", "line-2", "line-3", "line-4"]
    assert all(r.ok and r.rounds == 2 and r.server == "in-process-1" for r in records)
    dead, alive = pool.stats()
    assert (dead.alive, dead.runs, dead.moved_off) == (False, 0, 1)
    assert (alive.alive, alive.runs) == (True, 4)
    assert len(mortal.requests) == 4  # what it answered before it died
    events = read_trace(tmp_path / "traces" / trace_name("line-1", "dynamic"))
    resumed = next(e for e in events if e["event"] == "run_resumed")
    assert (resumed["from_round"], resumed["status"]) == (2, "failed")
    assert [e["round"] for e in events if e["event"] == "round_end"] == [1, 2]
    moved = json.loads((tmp_path / "records.jsonl").read_text().splitlines()[0])
    assert moved["item"] == "line-2"  # line-1 ended later, on the other server


async def test_when_every_server_dies_the_batch_stops_keeping_what_finished(
    tmp_path: Path,
) -> None:
    # Each server completes one whole run (9 requests: goal, 2 x (2 steps + decision), final)
    # and dies during its second.
    backends = [Server(die_after=11), Server(die_after=11)]
    pool = await BackendPool.in_process(backends)
    with (
        RecordStore(tmp_path / "records.jsonl") as store,
        pytest.raises(PoolExhausted, match=r"no server of the batch answers any more .* runs"),
    ):
        await run_pool(
            pool, pending(items(5), ["dynamic"], set()), LocalExecutor(spec(tmp_path)), store
        )

    records = read_records(tmp_path / "records.jsonl")
    assert sorted(r.item for r in records) == ["line-1", "line-2"]
    assert all(r.ok for r in records)
    assert not any(s.alive for s in pool.servers)
