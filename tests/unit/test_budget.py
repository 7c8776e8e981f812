from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from helpers import card, decision, final, goal, make_swarm, step
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from malformed import malformed_steps

from dytopo.agents.base import StepContext
from dytopo.agents.llm import LLMAgent
from dytopo.agents.memory import MemoryItem
from dytopo.agents.prompting import fit_with_task
from dytopo.backends.types import ChatMessage, ChatRequest, ToolCall
from dytopo.budget.plan import plan_budgets
from dytopo.errors import AgentFailed, BudgetExceeded, MalformedReply
from dytopo.loader import load_topology
from dytopo.testing import Reply, ScriptedBackend
from dytopo.tools import tool
from dytopo.topology import Topology

ROOT = Path(__file__).resolve().parents[2]


def research() -> Topology:
    return load_topology(ROOT / "topologies" / "research.yaml")


def test_production_shape_fits_with_two_and_four_slots() -> None:
    for slots in (2, 4):
        plan = plan_budgets(research(), n_ctx=131072, slots=slots)
        assert plan.fits, plan.problems
        assert plan.per_slot_ctx == 131072 // slots
        assert {b.agent for b in plan.agents} == {
            "researcher",
            "analyst",
            "critic",
            "writer",
            "manager",
        }
        assert all(b.context_budget <= plan.request_limit for b in plan.agents)


def test_over_budget_agent_is_refused_naming_the_budget() -> None:
    data = research().model_dump()
    data["agents"][2]["budget"]["context"] = 70000
    plan = plan_budgets(Topology.model_validate(data), n_ctx=131072, slots=4)
    assert not plan.fits
    assert "agents.2.budget.context = 70000" in plan.problems[0]
    assert "lower agents.2.budget.context to 32768 or less" in plan.problems[0]


def test_output_budget_too_large_for_the_context() -> None:
    data = research().model_dump()
    data["manager"]["budget"]["max_output_tokens"] = 4000
    plan = plan_budgets(Topology.model_validate(data), n_ctx=8192, slots=2)
    assert any("lower manager.budget.max_output_tokens" in p for p in plan.problems)


def test_unified_kv_checks_concurrent_budgets_together() -> None:
    data = research().model_dump()
    for agent in data["agents"]:
        agent["budget"]["context"] = 50000
    plan = plan_budgets(Topology.model_validate(data), n_ctx=131072, slots=4, kv_unified=True)
    assert plan.request_limit == 131072
    assert any("shared KV cache holds 131072" in p for p in plan.problems)


def test_weights_scale_the_default_budgets() -> None:
    data = research().model_dump()
    data["agents"][0]["budget"]["weight"] = 2.0
    plan = plan_budgets(Topology.model_validate(data), n_ctx=16384, slots=2)
    assert plan.budget("researcher").context_budget == 8192
    assert plan.budget("analyst").context_budget == 4096


class WordCounter(ScriptedBackend):
    """Counts tokens as words + 4 per message: deterministic, like a server tokenizer."""

    async def count_tokens(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> int:
        return sum(len((m.content or "").split()) + 4 for m in messages)


def words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
    task_words=st.integers(min_value=1, max_value=3000),
    budget=st.integers(min_value=600, max_value=4000),
    max_output=st.integers(min_value=16, max_value=300),
)
async def test_every_packed_prompt_fits_its_budget(
    sizes: list[int], task_words: int, budget: int, max_output: int
) -> None:
    backend = WordCounter()
    items = [words(n, f"m{k}_") for k, n in enumerate(sizes)]
    task = words(task_words, "t")

    def build(task_text: str, kept: Sequence[str]) -> list[ChatMessage]:
        return [
            ChatMessage(role="system", content="You are terse."),
            ChatMessage(role="user", content=task_text + "\n" + "\n".join(kept)),
        ]

    messages, dropped = await fit_with_task(
        backend, build, task, items, budget=budget, max_output_tokens=max_output, who="t"
    )
    assert await backend.count_tokens(messages) + max_output <= budget
    kept = len(items) - len([d for d in dropped if not d.startswith("task truncated")])
    assert messages[1].content is not None
    # Most valuable first: what survives is a prefix of the droppable list.
    for item in items[:kept]:
        assert item in messages[1].content


async def test_packing_keeps_fresh_high_similarity_messages_and_drops_old_memory() -> None:
    backend = ScriptedBackend(
        [json.dumps({"public": "p", "private": "q", "query": "r", "key": "s"})], n_ctx_per_slot=1100
    )
    agent = LLMAgent("writer", card("writer"), backend, max_output_tokens=200)
    memory = [
        MemoryItem(round=r, kind="own", source="writer", text=f"OLD{r} " + "x " * 600)
        for r in range(1, 4)
    ]
    same_round = [
        MemoryItem(round=4, kind="private", source="researcher", text="FRESH facts", score=0.9)
    ]
    ctx = StepContext(task="task", goal="goal", round=4, memory=memory, same_round=same_round)
    await agent.step(ctx)
    prompt = backend.requests[0].messages[-1].content or ""
    assert "FRESH facts" in prompt
    assert "OLD1" not in prompt
    assert ctx.dropped
    assert any("OLD1" in d for d in ctx.dropped)
    assert ctx.packing["full_tokens"] > ctx.packing["prompt_tokens"]
    assert ctx.packing["prompt_tokens"] + 200 <= ctx.packing["budget"]


async def test_a_task_too_long_for_the_context_is_shortened_not_fatal() -> None:
    backend = ScriptedBackend(
        [json.dumps({"public": "p", "private": "q", "query": "r", "key": "s"})], n_ctx_per_slot=1200
    )
    agent = LLMAgent("writer", card("writer"), backend, max_output_tokens=200)
    ctx = StepContext(task="long task " * 2000, goal="goal", round=1, memory=[])
    await agent.step(ctx)
    assert any(d.startswith("task truncated to") for d in ctx.dropped)
    assert "[task truncated:" in (backend.requests[0].messages[-1].content or "")


async def test_run_token_budget_stops_gracefully_with_the_final_answer() -> None:
    backend = ScriptedBackend(
        by_tag={
            "researcher": [step("p", "FACTS", "need", "facts")],
            "writer": [step("p", "DRAFT", "facts", "draft")],
            "manager": [goal("go"), decision(False), final("BUDGET ANSWER")],
        }
    )
    swarm = make_swarm(
        backend,
        ["researcher", "writer"],
        max_rounds=5,
        run_token_budget=1750,
        final_answer_reserve=450,
    )
    result = await swarm.run("task")
    backend.assert_complete()
    assert result.halt_reason == "budget"
    assert result.final_answer == "BUDGET ANSWER"
    assert len(result.rounds) == 1


GOOD_STEP = step("p", "q", "r", "s")
BAD_REPLIES = st.one_of(
    st.sampled_from(malformed_steps()),
    st.integers(min_value=0, max_value=3000).map(lambda n: "{" + "w " * n),
    st.just(Reply(content=GOOD_STEP, finish_reason="length")),
    st.just(MalformedReply("Failed to parse input", url="x", status=500)),
)


@tool
def blob(size: int) -> str:
    """A block of text.

    Args:
        size: how many words.
    """
    return "word " * size


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=150), max_size=30),
    task_words=st.integers(min_value=1, max_value=1500),
    budget=st.integers(min_value=700, max_value=4000),
    max_output=st.integers(min_value=16, max_value=300),
    bad=st.lists(BAD_REPLIES, max_size=3),
    tool_sizes=st.lists(st.integers(min_value=0, max_value=3000), max_size=4),
    bad_tool_args=st.lists(st.text(max_size=2000), max_size=3),
)
async def test_every_request_of_a_step_fits_its_budget_reasks_included(
    sizes: list[int],
    task_words: int,
    budget: int,
    max_output: int,
    bad: list[str | Reply | BaseException],
    tool_sizes: list[int],
    bad_tool_args: list[str],
) -> None:
    structured: deque[str | Reply | BaseException] = deque(bad)
    tool_turns: deque[Reply] = deque()
    if tool_sizes:
        calls = [
            ToolCall(id=str(k), name="blob", arguments=json.dumps({"size": n}))
            for k, n in enumerate(tool_sizes)
        ]
        tool_turns.append(Reply(tool_calls=calls))
        tool_turns += [
            Reply(tool_calls=[ToolCall(name="blob", arguments=a)]) for a in bad_tool_args
        ]

    def respond(request: ChatRequest) -> str | Reply | BaseException:
        if request.tools and request.tool_choice != "none":  # "none": the answer after tools
            return tool_turns.popleft() if tool_turns else "done"
        return structured.popleft() if structured else GOOD_STEP

    backend = ScriptedBackend(responder=respond, n_ctx_per_slot=budget)
    memory = [
        MemoryItem(round=k + 1, kind="own", source="a", text=words(n, f"m{k}_"))
        for k, n in enumerate(sizes)
    ]
    agent = LLMAgent(
        "a",
        card("a"),
        backend,
        max_output_tokens=max_output,
        reasks=2,
        tools=[blob] if tool_sizes else [],
    )
    ctx = StepContext(task=words(task_words, "t"), goal="g", round=len(sizes) + 1, memory=memory)
    # A recorded failure, or a budget too small for even the pinned prompt, may end the step.
    with contextlib.suppress(AgentFailed, BudgetExceeded):
        await agent.step(ctx)
    for request in backend.requests:
        prompt = await backend.count_tokens(request.messages, request.tools)
        assert prompt + request.max_tokens <= budget, (len(backend.requests), request.tag)


async def test_a_server_that_does_not_say_its_kv_layout_is_planned_as_one_shared_pool() -> None:
    import httpx

    from dytopo.backends import BackendSettings, LlamaCppBackend
    from dytopo.embedders import HashEmbedder
    from dytopo.runner import swarm_on

    # llama-server with default flags: 4 slots, each reporting the whole pool (8192).
    props = {"default_generation_settings": {"n_ctx": 8192}, "total_slots": 4}

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=props)

    async def budgets(kv_unified: bool | None) -> list[int]:
        client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
        settings = BackendSettings(base_url="http://llama.test:8008", kv_unified=kv_unified)
        async with LlamaCppBackend(settings, client=client) as backend:
            swarm = await swarm_on(research(), backend, HashEmbedder(), base_dir=None, source=None)
        return [a.context_budget for a in swarm.agents]  # type: ignore[attr-defined]

    shared = await budgets(None)
    assert sum(sorted(shared)[-4:]) <= 8192  # any 4 concurrent requests fit the pool
    assert await budgets(True) == shared
    # Declared per slot: each request may use its slot's whole context.
    assert max(await budgets(False)) == 8192


def test_dytopos_own_server_is_known_to_have_one_context_per_slot() -> None:
    from dytopo.budget.plan import kv_layout

    assert kv_layout(None, own_server=True)[0] is False
    assert kv_layout(None, own_server=False)[0] is True
    assert "backend.kv_unified: false" in kv_layout(None, own_server=False)[1]
    assert kv_layout(False, own_server=False)[0] is False


def test_a_server_started_by_dytopo_in_another_process_is_known_by_its_alias() -> None:
    from dytopo.managed.resolve import own_server

    # DyTopo's servers run with --alias <catalogue name> --no-kv-unified.
    assert own_server("http://127.0.0.1:9", "smollm2-135m")
    assert not own_server("http://127.0.0.1:9", "/models/qwen3-30b.gguf")
