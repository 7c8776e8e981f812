"""RunService without HTTP: what the MCP server and the app both rely on."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
from pathlib import Path

import pytest
from service_kit import Script, backend, settings, until

from dytopo.embedders import HashEmbedder
from dytopo.errors import ConfigError, NotResumable, QueueFull, ServiceClosed
from dytopo.service.models import RunInfo, RunRequest
from dytopo.service.runs import RunService
from dytopo.service.store import RunFiles
from dytopo.tools import static


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


class _Cycle:
    """Garbage whose collection runs Python code (a thread switch) in the middle of a parse."""

    other: _Cycle | None = None

    def __del__(self) -> None:
        time.sleep(0)


def test_tool_sources_validated_in_threads_at_once_all_parse() -> None:
    # Concurrent submits validate their topologies' tool sources in threads; Python 3.11's
    # ast.parse failed there with "AST constructor recursion depth mismatch" (HTTP 500).
    source = "from dytopo.tools import tool\n" + "".join(
        f"@tool\ndef f{i}(x: int) -> int:\n    return [x + {i} for _ in range(3)][0]\n"
        for i in range(40)
    )
    found: list[int] = []
    errors: list[BaseException] = []

    def validate() -> None:
        for _ in range(25):
            a, b = _Cycle(), _Cycle()
            a.other, b.other = b, a
            try:
                found.append(len(static.tools_in_source(source)))
            except Exception as exc:
                errors.append(exc)
                return

    interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(1e-6)
    gc.set_threshold(50)
    try:
        threads = [threading.Thread(target=validate) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*thresholds)
    assert errors == []
    assert found == [40] * 100


def finished_runs(folder: Path, count: int) -> list[str]:
    """`count` finished runs' records, as an earlier service left them; ids oldest first."""
    files = RunFiles(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"{i:012x}" for i in range(count)]
    for i, run_id in enumerate(ids):
        info = RunInfo(
            id=run_id, status="failed", topology="pair", task="t", created_at=f"2026-01-0{i + 1}"
        )
        files.save(info)
        files.trace(run_id).write_text("{}\n")
    return ids


async def test_only_the_newest_finished_runs_are_kept(tmp_path: Path) -> None:
    folder = tmp_path / "runs"
    ids = finished_runs(folder, 5)
    async with service(tmp_path, keep_runs=3) as runs:
        kept_at_start = [r.id for r in runs.runs()]
        on_disk_at_start = sorted(p.name for p in folder.iterdir())
        new = await runs.submit(RunRequest(task="t"))
        await runs.wait(new.id)
        kept = [r.id for r in runs.runs()]
    assert kept_at_start == ids[:1:-1]  # the three newest
    assert on_disk_at_start == sorted(f"{i}.{ext}" for i in ids[2:] for ext in ("json", "jsonl"))
    assert kept == [new.id, ids[4], ids[3]]
    assert not any(folder.glob(f"{ids[2]}.*"))
    with pytest.raises(KeyError):
        runs.get(ids[2])


async def test_a_runs_files_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    async with service(tmp_path) as runs:
        info = await runs.submit(RunRequest(task="t"))
        await runs.wait(info.id)
    files = sorted((tmp_path / "runs").glob(f"{info.id}.*"))
    assert {p.suffix for p in files} == {".json", ".jsonl"}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {
        p.name: "0o600" for p in files
    }
