"""Prompts laid out for llama-server's prompt cache (longest common prefix).

Round after round, an agent's prompt (and the manager's) must start with the previous one up to
the end of its memory (transcript), so the server reuses it; packing that must drop old memory
must not move the start of what it keeps every round; the answer after a tool phase continues
the tool conversation.

These tests use only the public classes, so they also run against an older layout (they fail
there: checked against the previous commit's dytopo with PYTHONPATH).
"""

from __future__ import annotations

import itertools
import json

from helpers import card, decision, final, goal
from malformed import VALID_STEP

from dytopo.agents.answer import Work
from dytopo.agents.base import StepContext
from dytopo.agents.llm import LLMAgent
from dytopo.agents.manager import LLMManager, PublicMessage
from dytopo.agents.memory import MemoryItem
from dytopo.agents.tool_loop import ToolPolicy
from dytopo.backends.types import ChatMessage, ChatRequest, ToolCall
from dytopo.testing import Reply, ScriptedBackend
from dytopo.tools import tool

GOOD = json.dumps(VALID_STEP)


def rendered(messages: list[ChatMessage]) -> str:
    """The prompt as a ChatML template lays it out (what the server's cache compares)."""
    return "".join(f"<|im_start|>{m.role}\n{m.content or ''}<|im_end|>\n" for m in messages)


def prefix_through(request: ChatRequest, last: str) -> str:
    """The rendered prompt up to the end of `last` (its final memory or transcript entry)."""
    text = rendered(request.messages)
    end = text.rfind(last)
    assert end >= 0, f"{last[:40]!r} is not in the prompt"
    return text[: end + len(last)]


def grow(memory: list[MemoryItem], round: int, agent: str) -> None:
    """What delivery appends after a round: the agent's own report, then a routed message."""
    memory.append(MemoryItem(round=round, kind="own", source=agent, text=f"report {round} " * 8))
    memory.append(
        MemoryItem(
            round=round, kind="private", source="peer", text=f"finding {round} " * 12, score=0.61
        )
    )


async def test_an_agents_prompt_starts_with_last_rounds_prompt_through_its_memory() -> None:
    backend = ScriptedBackend([GOOD] * 4)
    agent = LLMAgent("writer", card("writer"), backend, max_output_tokens=300)
    memory: list[MemoryItem] = []
    ends: list[str] = []
    for round in range(1, 5):
        await agent.step(
            StepContext(
                task="Compare LRU and LFU.", goal=f"goal {round}", round=round, memory=memory
            )
        )
        ends.append(memory[-1].render() if memory else "Compare LRU and LFU.")
        memory = [*memory]
        grow(memory, round, "writer")
    prompts = [rendered(r.messages) for r in backend.requests]
    for r in range(3):
        shared = prefix_through(backend.requests[r], ends[r])
        assert prompts[r + 1].startswith(shared), f"round {r + 2} does not extend round {r + 1}"
    # All of the growing memory is in the shared part: it grows with the rounds.
    assert len(prefix_through(backend.requests[3], ends[3])) > len(prompts[1])
    # The round's goal comes after the memory, the closing instruction last.
    last = backend.requests[3].messages[-1].content or ""
    assert last.index(ends[3]) < last.index("goal 4")
    # What follows the goal is processed anew every round: one short line.
    assert len(last.split("goal 4", 1)[1]) < 80
    backend.assert_complete()


async def test_same_round_messages_come_after_memory() -> None:
    backend = ScriptedBackend([GOOD])
    agent = LLMAgent("writer", card("writer"), backend, max_output_tokens=300)
    memory: list[MemoryItem] = []
    grow(memory, 1, "writer")
    fresh = MemoryItem(round=2, kind="private", source="early", text="FRESH news", score=0.9)
    ctx = StepContext(task="t", goal="g", round=2, memory=memory, same_round=[fresh])
    await agent.step(ctx)
    text = backend.requests[0].messages[-1].content or ""
    assert text.index(memory[-1].render()) < text.index("FRESH news") < text.index("ROUND 2 GOAL")


async def test_the_managers_prompts_share_one_system_and_extend_each_other() -> None:
    rounds = 4
    backend = ScriptedBackend(
        [goal("start"), *[decision(False) for _ in range(rounds)], final("the answer")]
    )
    manager = LLMManager(card("manager"), backend, max_output_tokens=300)
    acct = StepContext(task="t", goal="", round=0, memory=[])
    await manager.open("Compare LRU and LFU.", acct)
    transcript: list[PublicMessage] = []
    for round in range(1, rounds + 1):
        transcript = [
            *transcript,
            *(PublicMessage(round=round, agent=a, text=f"{a} did {round} " * 6) for a in "abc"),
        ]
        await manager.decide("Compare LRU and LFU.", round, rounds, transcript, [], acct)
    work = [Work(agent="a", round=rounds, text="the work")]
    await manager.final("Compare LRU and LFU.", transcript, work, acct)
    backend.assert_complete()
    requests = backend.requests
    # One system prompt for open, decide and final: the duty is named in the last user text.
    assert len({r.messages[0].content for r in requests}) == 1
    decides = requests[1 : rounds + 1]
    for r in range(rounds - 1):
        last = PublicMessage(round=r + 1, agent="c", text=f"c did {r + 1} " * 6).render()
        shared = prefix_through(decides[r], last)
        assert rendered(decides[r + 1].messages).startswith(shared), f"decide {r + 2}"
    last = transcript[-1].render()
    assert rendered(requests[-1].messages).startswith(prefix_through(decides[-1], last))
    ask = (decides[0].messages[-1].content or "").split("\n\n")[-1]
    assert "decision" in ask
    # The keys are named in the (cached) system prompt; what follows the newest public message
    # is processed anew in every request, so it stays a line or two.
    assert all(k in (requests[0].messages[0].content or "") for k in ("goal_next", "halt"))
    tail = rendered(decides[-1].messages).split(last, 1)[1]
    assert len(tail) < 120, tail


async def test_dropping_old_memory_moves_its_start_at_most_once_in_three_rounds() -> None:
    rounds, window = 18, 3
    backend = ScriptedBackend([GOOD] * rounds, n_ctx_per_slot=1500)
    agent = LLMAgent("writer", card("writer"), backend, max_output_tokens=300)
    memory: list[MemoryItem] = []
    starts: list[int] = []
    dropped_any = False
    for round in range(1, rounds + 1):
        ctx = StepContext(task="t", goal="g", round=round, memory=list(memory))
        await agent.step(ctx)
        prompt = backend.requests[-1].messages[-1].content or ""
        kept = [item.round for item in memory if item.render() in prompt]
        if memory:
            # Whole entries, the newest ones, are kept; what is left out is reported.
            assert kept == [item.round for item in memory[len(memory) - len(kept) :]]
            assert len(ctx.dropped) == len(memory) - len(kept)
            starts.append(kept[0] if kept else round)
            dropped_any = dropped_any or bool(ctx.dropped)
        memory.append(
            MemoryItem(round=round, kind="own", source="writer", text=f"R{round} " + "w" * 300)
        )
    backend.assert_complete()  # every request fitted the budget
    assert dropped_any, "the scenario must saturate the budget"
    moves = [k for k in range(1, len(starts)) if starts[k] != starts[k - 1]]
    assert len(moves) >= 2
    assert all(b - a >= window for a, b in itertools.pairwise(moves)), starts


@tool
def echo(text: str) -> str:
    """Echo text back.

    Args:
        text: what to echo.
    """
    return text


async def test_the_answer_continues_the_tool_conversation() -> None:
    call = ToolCall(id="c1", name="echo", arguments='{"text": "EVIDENCE"}')
    backend = ScriptedBackend([Reply(tool_calls=[call]), "I have what I need.", GOOD])
    agent = LLMAgent("researcher", card("researcher"), backend, tools=[echo])
    memory: list[MemoryItem] = []
    grow(memory, 1, "researcher")
    await agent.step(StepContext(task="t", goal="g", round=2, memory=memory))
    backend.assert_complete()
    first, second, answer = backend.requests
    # The answer's messages start with the tool phase's, then its call and result.
    assert answer.messages[: len(second.messages)] == second.messages
    assert second.messages[: len(first.messages)] == first.messages
    assert [m.content for m in answer.messages if m.role == "tool"] == ["EVIDENCE"]
    # Same tool definitions (they are in the rendered system prompt), no call, strict JSON.
    assert answer.tools == first.tools
    assert answer.tool_choice == "none"
    assert answer.json_schema is not None
    # Memory is in the conversation once.
    assert sum(memory[-1].render() in (m.content or "") for m in answer.messages) == 1


@tool
def blob(size: int) -> str:
    """Return a block of text.

    Args:
        size: how many words.
    """
    return "word " * size


async def test_tool_turns_that_do_not_fit_become_notes_in_a_new_prompt() -> None:
    budget = 1600
    many = [ToolCall(id=str(k), name="blob", arguments=f'{{"size": {900 + k}}}') for k in range(4)]
    more = [ToolCall(id=str(k), name="blob", arguments=f'{{"size": {800 + k}}}') for k in range(4)]
    backend = ScriptedBackend(
        [Reply(tool_calls=many), Reply(tool_calls=more), GOOD], n_ctx_per_slot=budget
    )
    agent = LLMAgent(
        "researcher",
        card("researcher"),
        backend,
        tools=[blob],
        max_output_tokens=300,
        tool_policy=ToolPolicy(max_rounds=2, max_calls=8),
    )
    memory: list[MemoryItem] = []
    for round in range(1, 4):
        grow(memory, round, "researcher")
    ctx = StepContext(task="t", goal="g", round=4, memory=memory)
    await agent.step(ctx)
    backend.assert_complete()  # nothing overflowed
    answer = backend.requests[-1]
    assert answer.tools is None
    assert answer.json_schema is not None
    assert "TOOL RESULTS" in (answer.messages[-1].content or "")
    assert [m.role for m in answer.messages] == ["system", "user"]
