"""Every run of a batch has files of its own, and continues only its own checkpoint.

Item ids that read alike once made safe for a file name ("case/1", "case_1", "case?1"; "問1"
and "題1") once shared one trace: run one after another, the second deleted the first's
trace; run at once, the second resumed the first's checkpoint. And an item whose task was
edited under the same id resumed the old task and recorded its answer under the new one."""

from __future__ import annotations

from pathlib import Path

import pytest
from batch_kit import Server, spec
from structlog.testing import capture_logs

from dytopo.batch import BatchItem, RecordStore, pending, read_records, trace_name
from dytopo.batch.local import LocalExecutor
from dytopo.batch.pool import BackendPool
from dytopo.batch.run import run_one_on
from dytopo.batch.schedule import run_pool
from dytopo.embedders import HashEmbedder
from dytopo.swarm.trace import read_trace

ALIKE = ["a/b", "a b", "a_b", "case/1", "case_1", "case?1", "問1", "題1", "1", "Q1", "q1", "."]


def test_ids_that_read_alike_get_different_plain_file_names() -> None:
    names = [trace_name(i, "dynamic") for i in ALIKE]
    assert len({n.lower() for n in names}) == len(ALIKE)  # also where case is ignored
    for name in names:
        assert "/" not in name
        assert not name.startswith(".")
        assert name.endswith("-dynamic.jsonl")
    assert trace_name("HumanEval/12", "dynamic") == "HumanEval_12-d98e9fb34bc2-dynamic.jsonl"
    assert trace_name("a/b", "dynamic") != trace_name("a/b", "single")
    longest = trace_name("題" * 200, "broadcast")
    assert len(longest.encode()) < 100


async def test_items_whose_ids_read_alike_keep_their_own_trace_and_task(tmp_path: Path) -> None:
    todo = [BatchItem(id=i, task=f"task of {i}") for i in ALIKE[:8]]
    pool = await BackendPool.in_process([Server(), Server()], runs_per_server=2)
    with RecordStore(tmp_path / "records.jsonl") as store:
        await run_pool(
            pool, pending(todo, ["dynamic"], set()), LocalExecutor(spec(tmp_path)), store
        )

    records = read_records(tmp_path / "records.jsonl")
    assert sorted(r.item for r in records) == sorted(ALIKE[:8])
    assert all(r.ok for r in records)
    assert len({r.trace for r in records}) == len(records)
    for record in records:
        assert record.trace is not None
        events = read_trace(Path(record.trace))
        assert [e["task"] for e in events if e["event"] == "run_start"] == [
            f"task of {record.item}"
        ]
        assert not any(e["event"] == "run_resumed" for e in events)


async def test_an_item_whose_task_was_edited_starts_afresh_and_says_why(
    tmp_path: Path,
) -> None:
    run = spec(tmp_path)
    trace = run.trace(BatchItem(id="q7", task="x"), "dynamic")
    old = BatchItem(id="q7", task="the old task")
    mortal = Server(die_after=4)  # answers round 1 (goal, two steps, decision), then dies
    stopped = await run_one_on(
        old, "dynamic", run.topology, mortal, HashEmbedder(), trace_path=trace, source=run.source
    )
    assert not stopped.ok  # its checkpoint stays, resumable

    new = BatchItem(id="q7", task="the new task")
    healthy = Server()
    with capture_logs() as logs:
        record = await run_one_on(
            new,
            "dynamic",
            run.topology,
            healthy,
            HashEmbedder(),
            trace_path=trace,
            source=run.source,
            resume=True,
        )
    assert record.ok
    events = read_trace(trace)
    assert [e["task"] for e in events if e["event"] == "run_start"] == ["the new task"]
    assert not any(e["event"] == "run_resumed" for e in events)
    prompts = " ".join(m.content or "" for r in healthy.requests for m in r.messages)
    assert "the new task" in prompts
    assert "the old task" not in prompts
    fresh = [e for e in logs if e["event"] == "batch.fresh_start"]
    assert len(fresh) == 1
    assert fresh[0]["log_level"] == "warning"
    assert "its task differs" in fresh[0]["reason"]


@pytest.mark.parametrize("change", ["rounds", "agents"])
async def test_a_checkpoint_of_another_topology_is_not_resumed(tmp_path: Path, change: str) -> None:
    run = spec(tmp_path)
    item = BatchItem(id="q7", task="the task")
    trace = run.trace(item, "dynamic")
    await run_one_on(
        item,
        "dynamic",
        run.topology,
        Server(die_after=4),
        HashEmbedder(),
        trace_path=trace,
        source=run.source,
    )
    if change == "rounds":
        topology = run.topology.model_copy(update={"max_rounds": 3})
    else:
        agents = [
            a.model_copy(update={"id": f"new-{a.id}", "card": a.id}) for a in run.topology.agents
        ]
        topology = run.topology.model_copy(update={"agents": agents})
    with capture_logs() as logs:
        record = await run_one_on(
            item,
            "dynamic",
            topology,
            Server(),
            HashEmbedder(),
            trace_path=trace,
            source=run.source,
            resume=True,
        )
    assert record.ok
    assert not any(e["event"] == "run_resumed" for e in read_trace(trace))
    assert [e["event"] for e in logs if e["event"] == "batch.fresh_start"] == ["batch.fresh_start"]
