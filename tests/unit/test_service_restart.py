"""A service restart loses no finished result; a run it cut off is interrupted and resumes from
its last complete round (over HTTP, on the same runs folder)."""

from __future__ import annotations

import json
from pathlib import Path

from service_kit import ANSWER, Script, backend, served, settings, until

from dytopo.embedders import HashEmbedder
from dytopo.service.models import RunRequest
from dytopo.service.runs import RunService


async def test_a_restart_serves_finished_runs_and_resumes_the_one_it_cut_off(
    tmp_path: Path,
) -> None:
    config = settings(tmp_path)
    first = backend()
    async with served(config, first) as s:
        done = (await s.client.post("/v1/runs?wait=true", json={"task": "t"})).json()
        # the second run finishes round 1, then hangs in round 2
        first.responder = Script(slow={2}, delay_s=60)
        cut = (await s.client.post("/v1/runs", json={"task": "t2"})).json()["id"]
        await until(lambda: s.service.get(cut).round == 2)
    # the service stopped: the run's record says so on disk
    record = json.loads((tmp_path / "runs" / f"{cut}.json").read_text())
    assert record["status"] == "interrupted"
    assert record["resumable"]

    rest = Script(first_round=2)
    second = backend(rest)
    async with served(config, second) as s:
        kept = (await s.client.get(f"/v1/runs/{done['id']}")).json()
        stopped = (await s.client.get(f"/v1/runs/{cut}")).json()
        resumed = await s.client.post(f"/v1/runs/{cut}/resume")
        assert resumed.status_code == 202
        await until(lambda: s.service.get(cut).status == "succeeded")
        final = (await s.client.get(f"/v1/runs/{cut}")).json()
        again = await s.client.post(f"/v1/runs/{done['id']}/resume")
    assert kept == done  # the finished run, as it was served before the restart
    assert stopped["status"] == "interrupted"
    assert stopped["error"] == "the service stopped during this run"
    assert [r["finished"] for r in stopped["rounds"]] == [True, False]
    assert final["final_answer"] == ANSWER
    assert [r["round"] for r in final["rounds"]] == [1, 2]
    assert all(r["finished"] for r in final["rounds"])
    assert rest.rounds == [2, 2]  # round 1 was not run again
    assert again.status_code == 409
    assert "nothing to resume" in again.json()["detail"]


async def test_a_record_left_running_by_a_crash_is_interrupted_or_keeps_its_result(
    tmp_path: Path,
) -> None:
    config = settings(tmp_path)
    async with RunService(config, backend=backend(), embedder=HashEmbedder()) as service:
        info = await service.submit(RunRequest(task="t"))
        finished = await service.wait(info.id)
        never = await service.submit(RunRequest(task="never started"))
        await service.cancel(never.id)
    runs = tmp_path / "runs"
    # A crash (SIGKILL) leaves records as they were while the runs went on.
    for run_id, status in ((info.id, "running"), (never.id, "queued")):
        record = json.loads((runs / f"{run_id}.json").read_text())
        record.update(status=status, final_answer=None, started_at=None)
        (runs / f"{run_id}.json").write_text(json.dumps(record))
    started = json.loads((runs / f"{info.id}.json").read_text())
    started["started_at"] = finished.started_at
    (runs / f"{info.id}.json").write_text(json.dumps(started))

    async with RunService(config, backend=backend(), embedder=HashEmbedder()) as service:
        recovered = service.get(info.id)  # its trace ended: the answer is kept
        interrupted = service.get(never.id)
        again = await service.resume(never.id)
        ended = await service.wait(never.id)
    assert recovered.status == "succeeded"
    assert recovered.final_answer == ANSWER
    assert interrupted.status == "interrupted"
    assert interrupted.resumable
    assert again.status == "queued"
    assert ended.status == "succeeded"
    assert ended.task == "never started"


async def test_a_failed_run_keeps_its_partial_rounds_and_one_line_error(tmp_path: Path) -> None:
    from dytopo.errors import BackendUnavailable

    class Failing(Script):
        def __call__(self, request):  # type: ignore[no-untyped-def]
            if "halt" in (request.json_schema or {}).get("properties", {}):
                raise BackendUnavailable("server gone after 6 attempts", url="scripted://")
            return super().__call__(request)

    async with RunService(
        settings(tmp_path), backend=backend(Failing()), embedder=HashEmbedder()
    ) as service:
        info = await service.submit(RunRequest(task="t"))
        failed = await service.wait(info.id)
    assert failed.status == "failed"
    assert failed.error is not None
    assert "\n" not in failed.error
    assert "server gone after 6 attempts" in failed.error
    assert failed.resumable  # its checkpoint holds the opening
    assert failed.usage is not None
    assert failed.usage["requests"] >= 3
