"""One topology file, one set of budgets: `dytopo.load_swarm` (the Python API) builds the swarm
the way `dytopo run` does, budgets planned from the server's real context."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import dytopo
from dytopo import runner
from dytopo.agents.llm import LLMAgent
from dytopo.agents.manager import LLMManager
from dytopo.backends import BackendSettings, LlamaCppBackend
from dytopo.cli import app
from dytopo.embedders import HashEmbedder
from dytopo.loader import load_topology
from dytopo.swarm.build import build_swarm
from dytopo.swarm.loop import Swarm
from dytopo.swarm.result import RunResult

URL = "http://llama.test:8008"
TOPOLOGY = """\
name: budgets
embedder: {kind: hash}
agents:
  - {id: lead, card: researcher, budget: {weight: 2, max_output_tokens: 600}}
  - {id: helper, card: analyst}
  - {id: scribe, card: writer, budget: {weight: 0.5}}
"""
# llama-server with default flags: 4 slots, each reporting the whole pool.
PROPS = {"default_generation_settings": {"n_ctx": 32768}, "total_slots": 4}


def server(request: httpx.Request) -> httpx.Response:
    assert request.url.path == "/props", request.url
    return httpx.Response(200, json=PROPS)


class FakeServerBackend(LlamaCppBackend):
    """The real client, on a fake llama-server."""

    def __init__(self, settings: BackendSettings | str) -> None:
        client = httpx.AsyncClient(transport=httpx.MockTransport(server))
        super().__init__(settings, client=client)


def budgets(swarm: Swarm) -> dict[str, Any]:
    """Each agent's and the manager's budgets, and the plan the swarm records."""
    seen: dict[str, Any] = {}
    for agent in swarm.agents:
        assert isinstance(agent, LLMAgent)
        seen[agent.id] = (agent.context_budget, agent.max_output_tokens)
    manager = swarm.manager
    assert isinstance(manager, LLMManager)
    seen["manager"] = (manager.context_budget, manager.max_output_tokens)
    seen["plan"] = swarm.config["budget_plan"]
    return seen


@pytest.fixture
def topology(tmp_path: Path) -> Path:
    path = tmp_path / "budgets.yaml"
    path.write_text(TOPOLOGY, encoding="utf-8")
    return path


def test_the_python_api_and_the_cli_plan_the_same_budgets(
    topology: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def python_api() -> Swarm:
        async with FakeServerBackend(URL) as backend:
            return await dytopo.load_swarm(topology, backend=backend, embedder=HashEmbedder())

    from_python = budgets(asyncio.run(python_api()))

    # `dytopo run` on the same file and server: its swarm is caught where it would run.
    built: list[Swarm] = []

    async def caught(self: Swarm, task: str, **kwargs: Any) -> RunResult:
        built.append(self)
        return RunResult(run_id="r", task=task, final_answer="done", halt_reason="manager")

    monkeypatch.setattr(runner, "LlamaCppBackend", FakeServerBackend)
    monkeypatch.setattr(Swarm, "run", caught)
    args = ["run", str(topology), "--task", "t", "--backend-url", URL, "--json"]
    result = CliRunner().invoke(app, [*args, "--trace", str(tmp_path / "t.jsonl")])
    assert result.exit_code == 0, result.output
    assert len(built) == 1
    from_cli = budgets(built[0])

    assert from_python == from_cli
    # The budgets were planned from the server (weights matter), not left to the defaults.
    plan = from_python["plan"]
    assert plan is not None
    assert plan["n_ctx"] == 32768
    lead, helper, scribe = (from_python[a][0] for a in ("lead", "helper", "scribe"))
    assert lead > helper > scribe
    assert from_python["lead"][1] == 600
    # What a swarm built without the plan gets (the old Swarm.from_yaml): no budgets at all.
    unplanned = build_swarm(load_topology(topology), FakeServerBackend(URL), HashEmbedder())
    assert budgets(unplanned) != from_python


async def test_load_swarm_refuses_budgets_the_server_cannot_hold(topology: Path) -> None:
    from dytopo.testing import ScriptedBackend

    backend = ScriptedBackend(slots=1, n_ctx_per_slot=1024)
    with pytest.raises(dytopo.BudgetExceeded, match="budgets"):
        await dytopo.load_swarm(topology, backend=backend, embedder=HashEmbedder())


def test_load_swarm_names_its_file_for_resume(topology: Path) -> None:
    from dytopo.testing import ScriptedBackend

    backend = ScriptedBackend(n_ctx_per_slot=16384)
    swarm = asyncio.run(dytopo.load_swarm(topology, backend=backend, embedder=HashEmbedder()))
    assert swarm.origin is not None
    assert Path(swarm.origin.path) == topology.resolve()


def test_swarm_py_imports_neither_the_builder_nor_the_runner() -> None:
    # build.py and runner.py import loop.py; an import back (at any level) would be a cycle.
    import ast

    source = Path(dytopo.swarm.loop.__file__).read_text(encoding="utf-8")
    imported = {
        node.module
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.module is not None
    } | {
        alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert "dytopo.agents.base" in imported  # the scan sees the module's imports
    assert imported.isdisjoint({"dytopo.swarm.build", "dytopo.runner", "dytopo.loader"})
