"""The real handler.js (loaded by AnythingLLM's loader code path, under Node) against a live
`dytopo serve`: the service's app on uvicorn on loopback, runs on the scripted backend."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from helpers import decision, final, goal, step

from dytopo.embedders import HashEmbedder
from dytopo.errors import BackendUnavailable
from dytopo.service.app import create_app
from dytopo.service.runs import RunService
from dytopo.service.settings import ServiceSettings
from dytopo.skill import SKILL_NAME, export_skill
from dytopo.testing import Reply, ScriptedBackend

HARNESS = Path(__file__).with_name("skill_harness.cjs")
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="needs node (18+) on PATH")
TOKEN = "live-token-1"

DUO = """\
name: duo
description: two agents, two rounds
task: unused
routing: {mode: dynamic, tau: 0.5}
max_rounds: 2
min_rounds: 2
seed: 3
structured_reasks: 1
agents:
  - {id: researcher}
  - {id: writer}
"""


def two_rounds(delay_s: float = 0.0) -> ScriptedBackend:
    def agent(who: str, r: int) -> Reply:
        public = f"{who} {r}"
        return Reply(step(public, f"{who[0]}{r}", "facts", "facts"), delay_s=delay_s)

    return ScriptedBackend(
        by_tag={
            "manager": [
                goal("collect the facts"),
                decision(False, goal_next="write it up"),
                decision(True, "SQLite, for one server and 50 users.", goal_next=""),
                final("SQLite, for one server and 50 users."),
            ],
            "researcher": [agent("researcher", 1), agent("researcher", 2)],
            "writer": [agent("writer", 1), agent("writer", 2)],
        }
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, backend: ScriptedBackend
) -> AsyncIterator[tuple[str, RunService]]:
    topologies = tmp_path / "topologies"
    topologies.mkdir(exist_ok=True)
    (topologies / "duo.yaml").write_text(DUO, encoding="utf-8")
    port = free_port()
    settings = ServiceSettings(
        port=port,
        token=TOKEN,
        topologies_dir=topologies,
        runs_dir=tmp_path / "runs",
        default_topology="duo",
    )
    async with RunService(settings, backend=backend, embedder=HashEmbedder()) as service:
        config = uvicorn.Config(
            create_app(service), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        try:
            while not server.started:
                assert not task.done(), "uvicorn did not start"
                await asyncio.sleep(0.02)
            yield f"http://127.0.0.1:{port}", service
        finally:
            server.should_exit = True
            await task


async def skill(plugins: Path, args: object, extra: dict[str, str] | None = None) -> dict[str, Any]:
    """The harness in a subprocess: the service runs on this test's event loop meanwhile."""
    assert NODE is not None
    proc = await asyncio.create_subprocess_exec(
        NODE,
        str(HARNESS),
        str(plugins),
        SKILL_NAME,
        json.dumps(args),
        json.dumps({"DYTOPO_POLL_S": "0.05", **(extra or {})}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    report: dict[str, Any] = json.loads(out)
    assert "threw" not in report, report["threw"]
    assert report["resultType"] == "string", report
    return report


async def test_live_service_gives_the_final_answer_and_each_round(tmp_path: Path) -> None:
    async with serving(tmp_path, two_rounds()) as (url, service):
        plugins = tmp_path / "agent-skills"
        export_skill(plugins, url=url, token=TOKEN, topology="duo")
        report = await skill(plugins, {"task": "SQLite or PostgreSQL for 50 users?"})
        runs = [(r.status, r.task, r.topology) for r in service.runs()]

    assert report["result"] == "SQLite, for one server and 50 users."
    lines = [i["text"] for i in report["introspect"]]
    assert lines[0].startswith("DyTopo run ")
    assert 'with topology "duo"' in lines[0]
    rounds = [x for x in lines if x.startswith("DyTopo round")]
    assert len(rounds) == 2
    assert rounds[0].startswith("DyTopo round 1/2 - goal: collect the facts; ")
    assert rounds[1].startswith("DyTopo round 2/2 - goal: write it up; ")
    assert runs == [("succeeded", "SQLite or PostgreSQL for 50 users?", "duo")]


async def test_live_refusals_read_as_one_line(tmp_path: Path) -> None:
    async with serving(tmp_path, two_rounds()) as (url, service):
        plugins = tmp_path / "agent-skills"
        export_skill(plugins, url=url, token="wrong-token")
        report = await skill(plugins, {"task": "t"})
        assert "HTTP 401" in report["result"]
        assert "check DYTOPO_TOKEN" in report["result"]

        export_skill(plugins, url=url, token=TOKEN, topology="duo", force=True)
        report = await skill(plugins, {"task": "t", "topology": "../duo"})
        assert report["result"].startswith("DyTopo service refused the request (HTTP 4")
        report = await skill(plugins, {"task": "t", "topology": "nope"})
        assert report["result"].startswith("DyTopo service refused the request (HTTP 404")
        assert "nope" in report["result"]
        assert service.runs() == []


async def test_live_deadline_cancels_the_run(tmp_path: Path) -> None:
    async with serving(tmp_path, two_rounds(delay_s=30)) as (url, service):
        plugins = tmp_path / "agent-skills"
        export_skill(plugins, url=url, token=TOKEN, topology="duo", timeout_s=1)
        report = await skill(plugins, {"task": "t"}, {"DYTOPO_POLL_S": "0.2"})
        statuses = [r.status for r in service.runs()]

    assert "did not finish within DYTOPO_TIMEOUT_S (1 s), so it was cancelled" in report["result"]
    assert statuses == ["cancelled"]  # by the skill's DELETE, long before the 30 s reply


async def test_service_down_is_readable(tmp_path: Path) -> None:
    plugins = tmp_path / "agent-skills"
    port = free_port()
    export_skill(plugins, url=f"http://127.0.0.1:{port}", token=TOKEN)
    report = await skill(plugins, {"task": "t"})
    assert report["result"].startswith(f"DyTopo service unreachable at http://127.0.0.1:{port}")


async def test_live_failed_run_gives_its_one_line_error(tmp_path: Path) -> None:
    gone = BackendUnavailable("server gone after 6 attempts\nretry later", url="scripted://")
    async with serving(tmp_path, ScriptedBackend(by_tag={"manager": [gone]})) as (url, service):
        plugins = tmp_path / "agent-skills"
        export_skill(plugins, url=url, token=TOKEN, topology="duo")
        report = await skill(plugins, {"task": "t"})
        [info] = service.runs()

    assert info.status == "failed"
    assert report["result"].startswith(f"DyTopo run {info.id} failed: ")
    assert "server gone after 6 attempts" in report["result"]
    assert "\n" not in report["result"]
