"""Budgets against the real server's own tokenizer and a deliberately small context."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from cli_runs import dytopo_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dytopo.agents.base import StepContext
from dytopo.agents.cards import load_card
from dytopo.agents.llm import LLMAgent
from dytopo.agents.memory import MemoryItem
from dytopo.agents.prompting import fit_with_task
from dytopo.backends import ChatMessage, ChatRequest, ChatResponse, LlamaCppBackend, Sampling
from dytopo.errors import AgentFailed
from dytopo.managed import ManagedStack

WORDS = st.text(
    alphabet=st.sampled_from("abcdefghij klmnopqrstuvwxyz.,;:!?0123456789\n"), max_size=2500
)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(items=st.lists(WORDS, max_size=8), task=WORDS, max_output=st.integers(8, 400))
def test_packed_prompts_fit_as_the_server_counts(
    stack: ManagedStack, items: list[str], task: str, max_output: int
) -> None:
    import asyncio

    budget = 2048  # the session server's per-slot context

    def build(task_text: str, kept: Sequence[str]) -> list[ChatMessage]:
        return [
            ChatMessage(role="system", content="Summarise."),
            ChatMessage(role="user", content=f"TASK: {task_text}\n" + "\n".join(kept)),
        ]

    async def check() -> None:
        async with LlamaCppBackend(stack.chat_url) as backend:
            messages, _ = await fit_with_task(
                backend,
                build,
                task or "x",
                items,
                budget=budget,
                max_output_tokens=max_output,
                who="prop",
            )
            reply = await backend.chat(
                ChatRequest(messages=messages, max_tokens=1, sampling=Sampling(temperature=0.0))
            )
        # The server's own count of the packed prompt leaves room for the whole output.
        assert reply.usage.prompt_tokens + max_output <= budget

    asyncio.run(check())


def test_research_run_in_a_small_context_never_overflows(
    stack: ManagedStack, tmp_path: Path
) -> None:
    long_task = ("Write a careful report on cache eviction for a busy web shop. " * 8 + "\n") * 12
    # One round is enough: the task alone overflows the slot, so round 1 must already pack.
    result, events = dytopo_run(stack, tmp_path, "--rounds", "1", "--task", long_task)
    text = json.dumps(events).lower()
    assert "exceeds the available context" not in text
    assert "contextoverflow" not in text
    dropped = [e for e in events if e["event"] == "agent_output" and e.get("dropped")]
    assert dropped, "a 2,048-token slot cannot hold this task: the trace must show what was cut"
    assert any("task truncated" in d for e in dropped for d in e["dropped"])
    assert result["final_answer"].strip()


async def test_reasks_fit_the_budget_as_the_server_counts(stack: ManagedStack) -> None:
    budget = 2048  # the session server's per-slot context
    replies: list[tuple[ChatRequest, ChatResponse]] = []
    async with LlamaCppBackend(stack.chat_url) as backend:
        chat = backend.chat

        async def recording(request: ChatRequest) -> ChatResponse:
            reply = await chat(request)
            replies.append((request, reply))
            return reply

        backend.chat = recording  # type: ignore[method-assign]
        # A tiny max_tokens cuts every reply off (finish_reason length), so each attempt is
        # re-asked; the memory fills the first prompt right up to the budget.
        agent = LLMAgent(
            "writer",
            load_card("writer"),
            backend,
            max_output_tokens=24,
            context_budget=budget,
            sampling=Sampling(temperature=0.0),
        )
        memory = [
            MemoryItem(
                round=r, kind="own", source="writer", text=f"Note {r}: " + "cache line " * 30
            )
            for r in range(1, 60)
        ]
        ctx = StepContext(task="Summarise the notes.", goal="Summarise.", round=60, memory=memory)
        with pytest.raises(AgentFailed):
            await agent.step(ctx)
    assert len(replies) == 3
    assert all("cut off" in a.error for a in ctx.attempts)
    first_prompt = replies[0][1].usage.prompt_tokens
    assert first_prompt + 24 > budget - 200, "the first prompt must be packed near the limit"
    for request, reply in replies:
        assert reply.usage.prompt_tokens + request.max_tokens <= budget
