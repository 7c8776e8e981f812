"""Cached prompt tokens (llama-server's cache_n) are booked per request, round, agent and run."""

from pathlib import Path
from typing import Any

from helpers import card, decision, goal, make_swarm, step
from rich.console import Console

from dytopo.agents.base import StepContext
from dytopo.agents.llm import LLMAgent
from dytopo.backends.types import ToolCall, Usage
from dytopo.cli.progress import RoundProgress, summary
from dytopo.cli.run import _json
from dytopo.swarm.result import RunResult
from dytopo.swarm.state import Ledger
from dytopo.swarm.trace import read_trace
from dytopo.testing import Reply, ScriptedBackend
from dytopo.tools import tool


def replies(text: list[str], cached: list[int]) -> list[Reply]:
    return [Reply(content=t, cached_tokens=c) for t, c in zip(text, cached, strict=True)]


async def cached_run(trace: Path) -> RunResult:
    """Two agents, two rounds: nothing cached in round 1, 30 tokens per agent in round 2."""
    backend = ScriptedBackend(
        by_tag={
            "researcher": replies([step("r1", "p", "q", "k"), step("r2", "p", "q", "k")], [0, 30]),
            "writer": replies([step("w1", "p", "q", "k"), step("w2", "p", "q", "k")], [0, 30]),
            "manager": replies(
                [goal("go"), decision(False), decision(True, "DONE", goal_next="")], [0, 5, 20]
            ),
        }
    )
    result = await make_swarm(backend, ["researcher", "writer"], min_rounds=2).run(
        "task", trace_path=trace
    )
    backend.assert_complete()
    return result


async def test_cached_tokens_reach_rounds_agents_and_run(tmp_path: Path) -> None:
    result = await cached_run(tmp_path / "t.jsonl")
    first, second = (r.usage for r in result.rounds)
    assert (first.cached_tokens, second.cached_tokens) == (5, 80)
    assert 0 < first.cached_share < second.cached_share < 1
    assert result.usage_by_agent["writer"].cached_tokens == 30
    assert result.usage_by_agent["manager"].cached_tokens == 25
    assert result.usage.cached_tokens == 85
    assert result.usage.cached_share == 85 / result.usage.prompt_tokens


async def test_every_request_in_the_trace_carries_its_cached_tokens(tmp_path: Path) -> None:
    await cached_run(tmp_path / "t.jsonl")
    ladder = [e for e in read_trace(tmp_path / "t.jsonl") if e["event"] == "ladder"]
    cached = {(e["agent"], e["round"]): e["usage"]["cached_tokens"] for e in ladder}
    assert cached[("writer", 1)] == 0
    assert cached[("writer", 2)] == 30
    assert cached[("manager", 2)] == 20
    assert all(e["usage"]["requests"] == 1 and e["usage"]["prompt_tokens"] > 0 for e in ladder)
    steps = [e for e in read_trace(tmp_path / "t.jsonl") if e["event"] == "agent_output"]
    assert [s["attempts"][0]["usage"]["cached_tokens"] for s in steps] == [0, 0, 30, 30]


async def test_json_output_has_cached_share_per_run_round_and_agent(tmp_path: Path) -> None:
    result = await cached_run(tmp_path / "t.jsonl")
    out = _json(result)
    assert out["usage"]["cached_tokens"] == 85
    assert out["usage"]["cached_share"] == round(85 / result.usage.prompt_tokens, 4)
    assert [r["cached_tokens"] for r in out["usage_by_round"]] == [5, 80]
    assert out["usage_by_round"][1]["cached_share"] == round(result.rounds[1].usage.cached_share, 4)
    assert out["usage_by_agent"]["researcher"]["cached_share"] > 0


async def test_usage_table_and_round_line_show_the_cached_share(tmp_path: Path) -> None:
    result = await cached_run(tmp_path / "t.jsonl")
    console = Console(record=True, width=200)
    summary(result, console)
    text = console.export_text()
    assert "cached %" in text
    total = result.usage
    total_row = next(line for line in text.splitlines() if line.strip("│ ").startswith("total"))
    assert f"{total.cached_share:.0%}" in total_row
    round2 = next(line for line in text.splitlines() if "round 2" in line)
    assert f"{result.rounds[1].usage.cached_share:.0%}" in round2

    view = RoundProgress(console, agents=["researcher", "writer"])
    console.clear()
    usage = result.rounds[1].usage
    view({"event": "round_end", "round": 2, "edges": 1, "usage": usage.model_dump(),
          "failed": [], "wall_s": 1.0})  # fmt: skip
    line = console.export_text()
    assert f"{usage.cached_share:.0%} of {usage.prompt_tokens} prompt tokens cached" in line


def test_ledger_books_cached_tokens_per_agent_and_round() -> None:
    ledger = Ledger()
    ledger.charge("a", 1, Usage(prompt_tokens=100, cached_tokens=0, requests=1), reasked=False)
    ledger.charge("a", 2, Usage(prompt_tokens=100, cached_tokens=90, requests=1), reasked=False)
    ledger.charge("b", 2, Usage(prompt_tokens=100, cached_tokens=70, requests=1), reasked=False)
    assert ledger.by_round[2].cached_share == 0.8
    assert ledger.by_agent["a"].cached_share == 0.45
    assert ledger.usage.cached_share == 160 / 300
    assert Usage().cached_share == 0.0


async def test_tool_call_requests_carry_their_cached_tokens_too() -> None:
    backend = ScriptedBackend(
        [
            Reply(tool_calls=[ToolCall(id="c1", name="echo", arguments='{"text": "x"}')]),
            Reply(content="done with tools", cached_tokens=12),
            Reply(content=step("p", "q", "r", "s"), cached_tokens=20),
        ]
    )
    ladder: list[dict[str, Any]] = []
    agent = LLMAgent("a", card("a"), backend, tools=[echo])
    ctx = StepContext(
        task="t",
        goal="g",
        round=1,
        memory=[],
        emit=lambda name, **f: ladder.append(f) if name == "ladder" else None,
    )
    await agent.step(ctx)
    backend.assert_complete()
    cached = [(a["kind"], a["usage"]["cached_tokens"]) for a in ladder]
    assert cached == [("tool_call", 0), ("tool_call", 12), ("structured", 20)]
    assert ctx.usage.cached_tokens == 32


@tool
def echo(text: str) -> str:
    """Repeat a text.

    Args:
        text: what to repeat.
    """
    return text
