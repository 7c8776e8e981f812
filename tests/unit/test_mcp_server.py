"""The MCP tools, driven by the mcp SDK's own client (in-process and JSON-RPC framed), over a
stand-in RunService that keeps the service contract (events are trace-shaped dicts)."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.server.mcpserver.exceptions import ToolError

from dytopo.errors import ConfigError
from dytopo.service.mcp import _request, build_mcp
from dytopo.service.models import RunInfo, RunRequest
from dytopo.service.settings import ServiceSettings

TERMINAL = {"succeeded", "failed", "cancelled", "interrupted"}


class StandIn:
    """Runs that play `rounds` rounds of `round_s` each, emitting the trace's round events."""

    def __init__(self, *, round_s: float = 0.0, outcome: str = "succeeded") -> None:
        self.round_s, self.outcome = round_s, outcome
        self.requests: list[RunRequest] = []
        self.infos: dict[str, RunInfo] = {}
        self.trace: dict[str, list[dict[str, Any]]] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.cancelled: list[str] = []
        self.settings = ServiceSettings(max_rounds=6)

    async def submit(self, request: RunRequest) -> RunInfo:
        if request.topology == "missing":
            raise ConfigError("unknown topology 'missing': the service has research, code, math")
        self.requests.append(request)
        run_id = f"run{len(self.requests)}"
        info = RunInfo(
            id=run_id,
            status="queued",
            topology=request.topology or "research",
            task=request.task,
            created_at="2026-01-01T00:00:00Z",
            round=0,
            max_rounds=request.overrides.get("max_rounds", 4),
            progress="queued",
            rounds=[],
        )
        self.infos[run_id], self.trace[run_id] = info, []
        self.tasks[run_id] = asyncio.create_task(self._play(run_id))
        return info

    async def _play(self, run_id: str) -> None:
        info, trace = self.infos[run_id], self.trace[run_id]
        info.status = "running"
        try:
            for t in range(1, info.max_rounds + 1):
                trace.append({"event": "round_start", "round": t, "goal": f"goal {t}"})
                await asyncio.sleep(self.round_s)
                edges = [{"source": "researcher", "target": "writer", "score": 0.5}]
                trace.append({"event": "routing", "round": t, "edges": edges})
                trace.append({"event": "round_end", "round": t, "edges": 1})
                info.round, info.progress = t, f"round {t}/{info.max_rounds} done"
            info.status = self.outcome  # type: ignore[assignment]
            if self.outcome == "succeeded":
                info.final_answer = "LRU, because recency predicts reuse here."
            else:
                info.error, info.resumable = "the LLM server went away in round 2", True
        except asyncio.CancelledError:
            info.status = "cancelled"
        trace.append({"event": "run_end"})

    def get(self, run_id: str) -> RunInfo:
        return self.infos[run_id]

    async def wait(self, run_id: str, timeout: float | None = None) -> RunInfo:  # noqa: ASYNC109
        await asyncio.shield(self.tasks[run_id])
        return self.infos[run_id]

    async def cancel(self, run_id: str) -> RunInfo:
        self.cancelled.append(run_id)
        self.tasks[run_id].cancel()
        await asyncio.gather(self.tasks[run_id], return_exceptions=True)
        return self.infos[run_id]

    def topologies(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "research",
                "description": "A short, checked report.",
                "agents": ["researcher", "writer"],
                "mode": "dynamic",
                "max_rounds": 4,
            }
        ]

    async def events(self, run_id: str, after: int = -1) -> Any:
        index = after + 1
        while True:
            trace = self.trace[run_id]
            while index < len(trace):
                yield index, trace[index]
                index += 1
            if self.tasks[run_id].done() and index >= len(self.trace[run_id]):
                return
            await asyncio.sleep(0.002)


def client(service: StandIn, **options: Any) -> Client:
    reply_within_s = options.pop("reply_within_s", 10.0)
    return Client(build_mcp(service, reply_within_s=reply_within_s), **options)  # type: ignore[arg-type]


async def test_lists_the_three_tools_with_schemas() -> None:
    async with client(StandIn()) as mcp:
        tools = {tool.name: tool for tool in (await mcp.list_tools()).tools}
    assert set(tools) == {"run_swarm", "list_topologies", "get_run"}
    run = tools["run_swarm"].input_schema
    assert run["required"] == ["task"]
    assert set(run["properties"]) == {"task", "topology", "max_rounds"}
    assert run["properties"]["task"]["minLength"] == 1
    rounds = run["properties"]["max_rounds"]["anyOf"][0]
    assert (rounds["minimum"], rounds["maximum"]) == (1, 6)  # the service's own cap
    assert tools["get_run"].input_schema["required"] == ["id"]
    output = tools["get_run"].output_schema
    assert output is not None
    assert {"status", "final_answer", "rounds", "progress"} <= set(output["properties"])
    assert all(tool.description for tool in tools.values())


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_run_swarm_answers_and_reports_each_round(mode: str) -> None:
    service = StandIn()
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async with client(service, mode=mode) as mcp:
        result = await mcp.call_tool(
            "run_swarm",
            {"task": "LRU or LFU?", "max_rounds": 3},
            progress_callback=on_progress,
        )
    assert not result.is_error
    assert result.content[0].text == "LRU, because recency predicts reuse here."  # type: ignore[union-attr]
    assert service.requests[0].overrides == {"max_rounds": 3}
    assert [(done, total) for done, total, _ in progress] == [(1, 3), (2, 3), (3, 3)]
    assert progress[1][2] == "round 2/3 done - goal: goal 2; researcher -> writer"


async def test_refused_submit_is_a_tool_error() -> None:
    async with client(StandIn()) as mcp:
        result = await mcp.call_tool("run_swarm", {"task": "x", "topology": "missing"})
    assert result.is_error
    assert "unknown topology 'missing'" in result.content[0].text  # type: ignore[union-attr]


async def test_failed_run_is_a_tool_error_naming_the_cause() -> None:
    async with client(StandIn(outcome="failed")) as mcp:
        result = await mcp.call_tool("run_swarm", {"task": "x", "max_rounds": 2})
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert "run run1 failed: the LLM server went away in round 2" in text
    assert "/v1/runs/run1/resume" in text


async def test_get_run_of_unknown_id_is_a_tool_error() -> None:
    async with client(StandIn()) as mcp:
        result = await mcp.call_tool("get_run", {"id": "nope"})
        assert (await mcp.list_tools()).tools  # the session lives on
    assert result.is_error
    assert "no run with id 'nope'" in result.content[0].text  # type: ignore[union-attr]


async def test_get_run_of_a_finished_run_is_its_record() -> None:
    async with client(StandIn()) as mcp:
        await mcp.call_tool("run_swarm", {"task": "x", "max_rounds": 1})
        result = await mcp.call_tool("get_run", {"id": "run1"})
    assert not result.is_error
    assert result.structured_content is not None
    assert result.structured_content["status"] == "succeeded"
    assert result.structured_content["final_answer"].startswith("LRU")


async def test_list_topologies() -> None:
    async with client(StandIn()) as mcp:
        result = await mcp.call_tool("list_topologies", {})
    assert not result.is_error
    assert result.structured_content == {"result": StandIn().topologies()}


async def test_a_long_run_answers_with_its_id_and_goes_on() -> None:
    service = StandIn(round_s=0.15)
    async with client(service, reply_within_s=0.2) as mcp:
        first = await mcp.call_tool("run_swarm", {"task": "x", "max_rounds": 3})
        assert not first.is_error
        assert 'call get_run with id "run1"' in first.content[0].text  # type: ignore[union-attr]
        assert service.get("run1").status == "running"
        with anyio.fail_after(5):
            while service.get("run1").status not in TERMINAL:
                later = await mcp.call_tool("get_run", {"id": "run1"})
    assert later.content[0].text.startswith("LRU")  # type: ignore[union-attr]
    assert service.cancelled == []


async def test_a_cancelled_call_cancels_its_run() -> None:
    service = StandIn(round_s=0.5)
    async with client(service, mode="legacy") as mcp:
        with anyio.move_on_after(0.2):
            await mcp.call_tool("run_swarm", {"task": "x", "max_rounds": 3})
        with anyio.fail_after(5):
            while service.get("run1").status != "cancelled":  # noqa: ASYNC110 - polls the service the tool talks to
                await anyio.sleep(0.01)
    assert service.cancelled == ["run1"]


async def test_a_cancelled_get_run_leaves_the_run_alone() -> None:
    """get_run only reads: a client that cancels each poll at its deadline (the TypeScript SDK
    does) must not kill the run it polls."""
    service = StandIn(round_s=0.3)
    async with client(service, mode="legacy", reply_within_s=0.1) as mcp:
        first = await mcp.call_tool("run_swarm", {"task": "x", "max_rounds": 3})
        assert 'call get_run with id "run1"' in first.content[0].text  # type: ignore[union-attr]
        for _ in range(3):
            with anyio.move_on_after(0.05):
                await mcp.call_tool("get_run", {"id": "run1"})
        with anyio.fail_after(5):
            await service.wait("run1")
    assert service.cancelled == []
    assert service.get("run1").status == "succeeded"


async def test_a_too_long_topology_name_is_a_tool_error_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = StandIn()
    async with client(service) as mcp:
        result = await mcp.call_tool("run_swarm", {"task": "x", "topology": "a" * 65})
    assert result.is_error
    assert "at most 64 characters" in result.content[0].text  # type: ignore[union-attr]
    assert service.requests == []
    assert [r for r in caplog.records if r.exc_info] == []


def test_a_request_the_service_model_refuses_is_a_one_line_tool_error() -> None:
    """Whatever RunRequest refuses beyond the tool's schema names the field, in one line."""
    with pytest.raises(ToolError, match=r"^bad request: topology: String should have at most"):
        _request(task="x", topology="b" * 65, overrides={})
