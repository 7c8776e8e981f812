"""Profile fixes in the trace: events are converted by pydantic's core exactly as the Python
walk did, and nothing is converted when nothing reads the trace."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from helpers import decision, final, goal, make_swarm, step

from dytopo.routing.router import Routing
from dytopo.swarm.result import AgentStep
from dytopo.swarm.trace import Trace, read_trace
from dytopo.testing import ScriptedBackend


def backend() -> ScriptedBackend:
    return ScriptedBackend(
        by_tag={
            "a": [step("a", "A", "unit tests", "benchmarks")],
            "b": [step("b", "B", "benchmarks", "unit tests")],
            "manager": [goal("g"), decision(False), final("F")],
        }
    )


async def test_a_run_nobody_reads_builds_no_trace_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("a trace field was built for nobody")

    monkeypatch.setattr(Routing, "model_dump", refuse)
    monkeypatch.setattr(AgentStep, "model_dump", refuse)
    result = await make_swarm(backend(), ["a", "b"], max_rounds=1, min_rounds=1).run("task")
    assert result.final_answer == "F"


def test_the_file_and_observers_get_the_json_form_of_every_model(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    routing = Routing(
        mode="dynamic",
        agents=["a", "b"],
        similarity=[[1.0, float("nan")], [0.5, 1.0]],
        tau=0.3,
        edges=[],
        order=["a", "b"],
        acyclic=True,
    )
    with Trace("r", tmp_path / "t.jsonl") as trace:
        trace.observers.append(seen.append)
        trace.emit("routing", round=1, **routing.model_dump(), nested={"r": routing, "t": (1, 2)})
        trace.emit("agent_output", round=1, error="half a pair: \ud800")
    (line, odd) = read_trace(tmp_path / "t.jsonl")
    expected = routing.model_dump(mode="json", by_alias=True)
    for record in (line, seen[0]):
        assert math.isnan(record["similarity"][0][1])
        assert record["nested"]["t"] == [1, 2]
        assert json.dumps(record["nested"]["r"]) == json.dumps(expected)
    assert odd["error"] == seen[1]["error"] == "half a pair: \ud800"
