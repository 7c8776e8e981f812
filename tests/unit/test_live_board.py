"""The live per-agent view: what each agent is doing, fed by the run's own notes."""

from pathlib import Path
from typing import Any

from helpers import card, decision, goal, make_swarm, step
from rich.console import Console

from dytopo.agents.llm import LLMAgent
from dytopo.backends.types import ToolCall
from dytopo.cli.board import Board
from dytopo.cli.progress import RoundProgress
from dytopo.swarm.trace import read_trace
from dytopo.testing import Reply, ScriptedBackend
from dytopo.tools import tool


@tool
def echo(text: str) -> str:
    """Repeat a text.

    Args:
        text: what to repeat.
    """
    return text


async def one_slot_run(trace: Path) -> list[dict[str, Any]]:
    """Three agents on a one-slot server, one of them calling a tool: some must wait."""
    backend = ScriptedBackend(
        by_tag={
            "a": [Reply(content=step("a1", "p", "q", "k"), delay_s=0.02)],
            "b": [Reply(content=step("b1", "p", "q", "k"), delay_s=0.02)],
            "c": [
                Reply(
                    tool_calls=[ToolCall(id="1", name="echo", arguments='{"text": "x"}')],
                    delay_s=0.02,
                ),
                Reply(content="no more tools"),
                Reply(content=step("c1", "p", "q", "k")),
            ],
            "manager": [goal("go"), decision(True, "DONE", goal_next="")],
        },
        slots=1,
    )
    tooled = LLMAgent("c", card("c"), backend, tools=[echo], reasks=1)
    events: list[dict[str, Any]] = []
    await make_swarm(backend, ["a", "b"], extra=[tooled], min_rounds=1).run(
        "task", trace_path=trace, observers=[events.append]
    )
    backend.assert_complete()
    return events


def states(events: list[dict[str, Any]], agent: str) -> list[tuple[str, str]]:
    return [
        (e["state"], e["detail"])
        for e in events
        if e["event"] == "agent_state" and e["agent"] == agent
    ]


async def test_agents_report_waiting_generating_and_their_tools(tmp_path: Path) -> None:
    events = await one_slot_run(tmp_path / "t.jsonl")
    everyone = {e["agent"] for e in events if e["event"] == "agent_state"}
    assert everyone == {"a", "b", "c", "manager"}
    # One slot, three agents stepping at once: all but the first wait for it.
    waited = {a for a in "abc" if ("waiting", "") in states(events, a)}
    assert len(waited) >= 2
    for agent in "abc":
        seen = [s for s, _ in states(events, agent)]
        assert seen[-1] != "waiting"
        assert "generating" in seen
    assert ("tool", "echo") in states(events, "c")
    assert all(s != "tool" for s, _ in states(events, "a"))


async def test_live_notes_stay_out_of_the_trace_file(tmp_path: Path) -> None:
    events = await one_slot_run(tmp_path / "t.jsonl")
    assert any(e["event"] == "agent_state" for e in events)
    assert not any(e["event"] == "agent_state" for e in read_trace(tmp_path / "t.jsonl"))


async def test_board_shows_each_agent_tokens_budget_and_cached_share(tmp_path: Path) -> None:
    events = await one_slot_run(tmp_path / "t.jsonl")
    board = Board()
    start = next(e for e in events if e["event"] == "run_start")
    start = {**start, "config": {**start.get("config", {}), "run_token_budget": 50_000}}
    mid: str = ""
    for event in [start, *events[1:]]:
        board.update(event)
        if event["event"] == "agent_state" and event["state"] == "tool":
            console = Console(record=True, width=120)
            console.print(board)
            mid = console.export_text()
    assert "tool: echo" in mid
    console = Console(record=True, width=120)
    console.print(board)
    text = console.export_text()
    ladder = [e for e in events if e["event"] == "ladder" and e["agent"] == "c"]
    c_tokens = sum(e["usage"]["prompt_tokens"] + e["usage"]["completion_tokens"] for e in ladder)
    row = next(line for line in text.splitlines() if line.strip("│ ").startswith("c "))
    assert "done" in row
    assert f"{c_tokens:,}" in row
    total = sum(
        e["usage"]["prompt_tokens"] + e["usage"]["completion_tokens"]
        for e in events
        if e["event"] == "ladder"
    )
    assert f"{total:,} tokens of 50,000 (run budget)" in text
    assert "% of prompt tokens cached" in text


async def test_a_failed_agent_shows_failed_with_its_error() -> None:
    board = Board()
    board.update({"event": "run_start", "agents": ["a"], "config": {}})
    board.update({"event": "round_start", "round": 1})
    board.update({"event": "agent_output", "agent": "a", "ok": False, "error": "[/x] broke"})
    console = Console(record=True, width=120)
    console.print(board)
    assert "failed: [/x] broke" in console.export_text()


async def test_in_a_terminal_the_view_draws_the_table_and_off_it_only_lines(
    tmp_path: Path,
) -> None:
    events = await one_slot_run(tmp_path / "t.jsonl")
    shown = {}
    for terminal in (True, False):
        console = Console(record=True, width=120, force_terminal=terminal)
        view = RoundProgress(console)
        for event in events:
            view(event)
        view.stop()
        shown[terminal] = console.export_text()
    assert "doing" in shown[True]
    assert "of prompt tokens" in shown[True]
    assert "doing" not in shown[False]
    assert "of prompt tokens" not in shown[False]
    assert "round 1 goal: go" in shown[False]
