"""RunService without HTTP: what the MCP server and the app both rely on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from service_kit import Script, backend, settings, until

from dytopo.embedders import HashEmbedder
from dytopo.errors import ConfigError
from dytopo.service.models import RunInfo, RunRequest
from dytopo.service.runs import NotResumable, QueueFull, RunService, ServiceClosed


def service(tmp_path: Path, script: Script | None = None, **options: object) -> RunService:
    return RunService(
        settings(tmp_path, **options), backend=backend(script), embedder=HashEmbedder()
    )


async def test_a_run_cancelled_before_its_task_ever_ran_ends_cancelled(tmp_path: Path) -> None:
    async with service(tmp_path) as runs:
        info = await runs.submit(RunRequest(task="t"))
        cancelled = await asyncio.wait_for(runs.cancel(info.id), 5)
    assert cancelled.status == "cancelled"
    assert cancelled.resumable


async def test_leaving_the_service_interrupts_running_and_queued_runs(tmp_path: Path) -> None:
    async with service(tmp_path, Script(slow={1}, delay_s=60)) as runs:
        running = await runs.submit(RunRequest(task="one"))
        queued = await runs.submit(RunRequest(task="two"))
        await asyncio.sleep(0.05)
    assert runs.get(running.id).status == "interrupted"
    assert runs.get(queued.id).status == "interrupted"
    with pytest.raises(ServiceClosed):
        await runs.submit(RunRequest(task="three"))


async def test_an_error_inside_the_service_block_is_not_wrapped_in_a_group(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="mine"):
        async with service(tmp_path):
            raise ConfigError("mine")


async def test_events_of_a_queued_run_wait_for_its_trace(tmp_path: Path) -> None:
    async with service(tmp_path, Script(slow={1}, delay_s=0.2), max_running=1) as runs:
        first = await runs.submit(RunRequest(task="one"))
        second = await runs.submit(RunRequest(task="two"))
        names = [e["event"] async for _, e in runs.events(second.id)]
        assert runs.get(first.id).status == "succeeded"
    assert names[0] == "run_start"
    assert names[-1] == "run_end"
    with pytest.raises(KeyError):
        runs.get("../../etc/passwd")


async def test_topologies_and_counts(tmp_path: Path) -> None:
    async with service(tmp_path) as runs:
        assert [t["name"] for t in runs.topologies()] == ["pair"]
        assert runs.counts() == {"running": 0, "queued": 0}


async def test_concurrent_resumes_start_the_run_once_and_the_others_are_refused(
    tmp_path: Path,
) -> None:
    script = Script(slow={1}, delay_s=60)
    async with service(tmp_path, script, max_running=1, max_queued=0) as runs:
        info = await runs.submit(RunRequest(task="t"))
        await until(lambda: len(script.rounds) == 2)  # round 1's two steps in flight
        assert (await runs.cancel(info.id)).resumable
        results = await asyncio.gather(
            *(runs.resume(info.id) for _ in range(4)), return_exceptions=True
        )
        started = [r for r in results if isinstance(r, RunInfo)]
        refused = [r for r in results if isinstance(r, NotResumable)]
        assert len(started) == 1, results
        assert len(refused) == 3, results
        assert "is queued: there is nothing to resume" in str(refused[0])
        assert sum(runs.counts().values()) == 1
        with pytest.raises(QueueFull):  # the one resumed run holds the only turn
            await runs.submit(RunRequest(task="another"))
        ended = await asyncio.wait_for(runs.wait(info.id), 10)
    assert ended.status == "succeeded", ended
    assert ended.final_answer
