"""Every malformed reply ends as a valid value or a recorded failure; none raises."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from malformed import VALID_STEP, malformed_steps, malformed_tool_calls

from dytopo.agents.base import AgentOutput, StepContext
from dytopo.agents.cards import RoleCard
from dytopo.agents.llm import LLMAgent
from dytopo.agents.structured import ask_structured, parse_strict
from dytopo.agents.tool_loop import ToolPolicy, run_tools
from dytopo.backends.types import ChatMessage, ChatRequest, Sampling, ToolCall
from dytopo.errors import AgentFailed, MalformedReply, ToolError
from dytopo.testing import Reply, ScriptedBackend
from dytopo.tools import ToolContext, tool
from dytopo.tools.executor import ToolExecutor

GOOD = json.dumps(VALID_STEP)
REQUEST = ChatRequest(messages=[ChatMessage(role="user", content="go")], max_tokens=400)


@tool
def echo(text: str, times: int = 1) -> str:
    """Repeat a text.

    Args:
        text: what to repeat.
        times: how often.
    """
    return " ".join([text] * times)


@pytest.mark.parametrize("bad", malformed_steps())
def test_the_strict_parser_refuses_every_malformed_step(bad: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):  # pydantic's ValidationError is a ValueError
        parse_strict(AgentOutput, bad)


@pytest.mark.parametrize(("name", "arguments"), malformed_tool_calls())
def test_validation_refuses_every_malformed_tool_call(name: str, arguments: str) -> None:
    with pytest.raises(ToolError, match=r"unknown tool|arguments (of|for) echo"):
        executor().check(ToolCall(name=name, arguments=arguments))


@pytest.mark.parametrize("bad", malformed_steps())
async def test_malformed_then_valid_recovers_at_low_temperature(bad: str) -> None:
    backend = ScriptedBackend([bad, GOOD])
    result = await ask_structured(backend, REQUEST, AgentOutput, reasks=2)
    assert result.value is not None
    assert [a.ok for a in result.attempts] == [False, True]
    assert backend.requests[1].sampling.temperature == 0.1
    assert "not valid" in (backend.requests[1].messages[-1].content or "")
    backend.assert_complete()


async def test_always_malformed_ends_as_a_recorded_failure() -> None:
    outcomes: Counter[str] = Counter()
    corpus = malformed_steps()
    for bad in corpus:
        backend = ScriptedBackend([bad, bad, bad])
        result = await ask_structured(backend, REQUEST, AgentOutput, reasks=2)
        outcomes["failure" if result.value is None else "valid"] += 1
        assert len(result.attempts) == 3
        assert result.error
    assert outcomes == {"failure": len(corpus)}


async def test_cut_off_and_server_500_count_as_malformed() -> None:
    backend = ScriptedBackend(
        [
            Reply(content=GOOD, finish_reason="length"),
            MalformedReply("output does not match the expected format", url="x", status=500),
            GOOD,
        ]
    )
    result = await ask_structured(backend, REQUEST, AgentOutput, reasks=2)
    assert result.value is not None
    assert "cut off" in result.attempts[0].error
    assert "MalformedReply" in result.attempts[1].error


async def test_the_schema_constraint_is_always_sent() -> None:
    backend = ScriptedBackend([GOOD])
    await ask_structured(backend, REQUEST, AgentOutput)
    schema = backend.requests[0].json_schema
    assert schema is not None
    assert set(schema["properties"]) == {"public", "private", "query", "key"}


def executor() -> ToolExecutor:
    return ToolExecutor([echo], ToolContext())


@pytest.mark.parametrize(("name", "arguments"), malformed_tool_calls())
async def test_malformed_tool_call_then_valid_call_runs(name: str, arguments: str) -> None:
    good = ToolCall(id="1", name="echo", arguments='{"text": "hi", "times": 2}')
    backend = ScriptedBackend(
        [
            Reply(tool_calls=[ToolCall(id="0", name=name, arguments=arguments)]),
            Reply(tool_calls=[good]),
            "no more calls",
        ]
    )
    phase = await run_tools(
        backend, [ChatMessage(role="user", content="go")], executor(), ToolPolicy(), Sampling()
    )
    assert [a.ok for a in phase.attempts] == [False, True, True]
    assert [o.result for o in phase.outcomes] == ["hi hi"]
    assert backend.requests[1].sampling.temperature == 0.1


async def test_tool_ladder_gives_up_with_a_recorded_failure() -> None:
    outcomes: Counter[str] = Counter()
    for name, arguments in malformed_tool_calls():
        bad = Reply(tool_calls=[ToolCall(name=name, arguments=arguments)])
        backend = ScriptedBackend([bad, bad, bad])
        phase = await run_tools(
            backend,
            [ChatMessage(role="user", content="go")],
            executor(),
            ToolPolicy(reasks=2),
            Sampling(),
        )
        outcomes["failure" if phase.failed else "called"] += 1
        assert phase.outcomes == []
        assert len(phase.attempts) == 3
    assert outcomes == {"failure": len(malformed_tool_calls())}


async def test_required_tool_choice_prefills_and_reasks_when_no_call() -> None:
    backend = ScriptedBackend(
        [
            "I will not call a tool.",
            MalformedReply("Failed to parse tool call", url="x", status=500),
            Reply(tool_calls=[ToolCall(name="echo", arguments='{"text": "x"}')]),
            "done",
        ]
    )
    phase = await run_tools(
        backend,
        [ChatMessage(role="user", content="go")],
        executor(),
        ToolPolicy(choice="required"),
        Sampling(),
    )
    first = backend.requests[0]
    assert first.tool_choice == "required"
    assert first.messages[-1].role == "assistant"
    assert first.messages[-1].content == "<tool_call>\n"
    assert first.stop == ["</tool_call>"]
    assert [o.result for o in phase.outcomes] == ["x"]
    assert backend.requests[3].tool_choice == "auto"  # later turns may stop calling


async def test_repeated_identical_calls_are_stopped() -> None:
    call = ToolCall(name="echo", arguments='{"text": "x"}')
    backend = ScriptedBackend([Reply(tool_calls=[call]), Reply(tool_calls=[call])])
    phase = await run_tools(
        backend,
        [ChatMessage(role="user", content="go")],
        executor(),
        ToolPolicy(max_rounds=5),
        Sampling(),
    )
    assert [o.repeated for o in phase.outcomes] == [False, True]
    assert "already called" in phase.outcomes[1].result
    backend.assert_complete()  # stopped after the repeat, not after max_rounds


async def test_tool_exceptions_timeouts_and_big_results_become_text() -> None:
    @tool
    def broken() -> str:
        """Always fails."""
        raise RuntimeError("disk on fire")

    @tool(timeout_s=0.05)
    async def slow() -> str:
        """Takes forever."""
        import asyncio

        await asyncio.sleep(5)
        return "never"

    @tool
    def huge() -> str:
        """Too much output."""
        return "y" * 10_000

    ex = ToolExecutor([broken, slow, huge], ToolContext(max_result_chars=300))
    failed = await ex.run(ToolCall(name="broken"))
    assert not failed.ok
    assert "RuntimeError: disk on fire" in failed.result
    timed_out = await ex.run(ToolCall(name="slow"))
    assert "timed out" in timed_out.result
    big = await ex.run(ToolCall(name="huge"))
    assert big.ok
    assert len(big.result) < 400
    assert "truncated" in big.result


async def test_agent_step_with_tools_feeds_results_into_its_answer() -> None:
    backend = ScriptedBackend(
        [
            Reply(tool_calls=[ToolCall(id="c1", name="echo", arguments='{"text": "EVIDENCE"}')]),
            "I have what I need.",
            GOOD,
        ]
    )
    events: list[tuple[str, dict[str, object]]] = []
    agent = LLMAgent(
        "researcher", RoleCard(name="researcher", prompt="Research."), backend, tools=[echo]
    )
    ctx = StepContext(
        task="t", goal="g", round=1, memory=[], emit=lambda name, **f: events.append((name, f))
    )
    output = await agent.step(ctx)
    assert output.public == VALID_STEP["public"]
    # The answer continues the tool conversation: the result is there as the tool's message.
    final = backend.requests[-1]
    assert [m.content for m in final.messages if m.role == "tool"] == ["EVIDENCE"]
    assert final.json_schema is not None
    assert final.tool_choice == "none"
    assert backend.requests[0].tools is not None
    kinds = [name for name, _ in events]
    assert kinds.count("tool_call") == 1
    assert "ladder" in kinds
    backend.assert_complete()


async def test_agent_step_never_raises_anything_but_agent_failed() -> None:
    for bad in malformed_steps()[:40]:
        backend = ScriptedBackend([bad, bad, bad])
        agent = LLMAgent("a", RoleCard(name="a", prompt="x"), backend, reasks=2)
        with pytest.raises(AgentFailed):
            await agent.step(StepContext(task="t", goal="g", round=1, memory=[]))


async def test_mixed_reply_runs_valid_calls_and_records_the_rest() -> None:
    good = ToolCall(name="echo", arguments='{"text": "a"}')
    cut = ToolCall(name="echo", arguments='{"text": "b')  # cut off by max_tokens
    backend = ScriptedBackend([Reply(tool_calls=[good, good, cut]), "done"])
    phase = await run_tools(
        backend, [ChatMessage(role="user", content="go")], executor(), ToolPolicy(), Sampling()
    )
    assert [a.ok for a in phase.attempts] == [True, True]
    by_result = [(o.ok, o.repeated) for o in phase.outcomes]
    assert by_result.count((True, False)) == 1  # the first call ran
    assert by_result.count((False, True)) == 1  # its identical repeat was refused
    assert any("not valid JSON" in o.error for o in phase.outcomes)  # the cut-off one recorded
