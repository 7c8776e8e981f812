"""`dytopo run` end to end on the real llama-server (SmolLM2) and the real MiniLM embedder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cli_runs import dytopo_run
from trace_checks import check_trace

from dytopo.managed import ManagedStack

AGENTS = ["researcher", "analyst", "critic", "writer"]  # topologies/research.yaml


def test_research_swarm_dynamic(stack: ManagedStack, tmp_path: Path) -> None:
    result, events = dytopo_run(stack, tmp_path, "--rounds", "2")
    assert result["final_answer"].strip()
    assert result["rounds"] >= 1
    assert result["halt_reason"] in ("manager", "max_rounds")
    assert result["usage"]["requests"] > 0
    assert result["usage"]["completion_tokens"] > 0
    assert events[0]["agents"] == AGENTS
    check_trace(events, rounds=result["rounds"])


EDGE_COUNT: dict[str, Callable[[int], int]] = {
    "broadcast": lambda n: n * (n - 1),
    "chain": lambda n: max(0, n - 1),
}


@pytest.mark.parametrize("mode", sorted(EDGE_COUNT))
def test_baseline_modes_build_their_graph(stack: ManagedStack, tmp_path: Path, mode: str) -> None:
    result, events = dytopo_run(stack, tmp_path, "--rounds", "1", "--mode", mode)
    assert result["final_answer"].strip()
    # The mode's exact edge set over the agents that succeeded (a failed agent is left out of
    # its round's graph), deliveries along every edge, and the round's shape.
    check_trace(events, rounds=result["rounds"])
    routings = [e for e in events if e["event"] == "routing"]
    assert routings
    for routing in routings:
        assert routing["mode"] == mode
        assert len(routing["edges"]) == EDGE_COUNT[mode](len(routing["agents"]))
    assert len(routings[0]["agents"]) >= 2, "fewer than two agents succeeded: no graph to test"
