import asyncio

import httpx
import pytest
from helpers import decision, goal, make_swarm, step

from dytopo.agents.base import StepContext
from dytopo.agents.cards import RoleCard
from dytopo.agents.llm import LLMAgent
from dytopo.backends import ChatMessage, ChatRequest
from dytopo.backends.base import estimate_tokens
from dytopo.errors import BackendUnavailable, ContextOverflow
from dytopo.testing import Reply, ScriptedBackend, UnexpectedCall


def request(tag: str = "", text: str = "hi", max_tokens: int = 512) -> ChatRequest:
    return ChatRequest(
        messages=[ChatMessage(role="user", content=text)], tag=tag, max_tokens=max_tokens
    )


async def test_plays_replies_errors_and_delays_in_order() -> None:
    backend = ScriptedBackend(
        ["one", Reply(content="two", delay_s=0.01), BackendUnavailable("down", url="x")]
    )
    assert (await backend.chat(request())).content == "one"
    assert (await backend.chat(request())).content == "two"
    with pytest.raises(BackendUnavailable):
        await backend.chat(request())
    assert len(backend.requests) == 3
    backend.assert_complete()


async def test_tagged_queues_route_by_request_tag() -> None:
    backend = ScriptedBackend(by_tag={"manager": ["m"], "critic": ["c"]})
    assert (await backend.chat(request("critic"))).content == "c"
    assert (await backend.chat(request("manager"))).content == "m"
    backend.assert_complete()


async def test_unexpected_call_raises_and_is_recorded() -> None:
    backend = ScriptedBackend(["only one"])
    await backend.chat(request())
    with pytest.raises(UnexpectedCall, match="unexpected request #2") as info:
        await backend.chat(request("writer", "write the report"))
    assert isinstance(info.value, AssertionError)
    assert info.value.request.tag == "writer"
    assert backend.requests[-1].tag == "writer"
    with pytest.raises(AssertionError, match=r"unexpected request #2 \(tag='writer'"):
        backend.assert_complete()


async def test_a_swallowed_unexpected_call_still_fails_assert_complete() -> None:
    # The writer has no script: the scheduler records its failed step and the run goes on, so
    # only assert_complete() can tell the test that its script and the code disagree.
    backend = ScriptedBackend(
        by_tag={
            "researcher": [step("p", "facts", "q", "k")],
            "manager": [goal("go"), decision(True, "done")],
        }
    )
    result = await make_swarm(backend, ["researcher", "writer"], min_rounds=1).run("task")
    steps = {s.agent: s for s in result.rounds[0].steps}
    assert "UnexpectedCall" in steps["writer"].error
    assert len(backend.unexpected) == 1
    with pytest.raises(AssertionError, match="tag='writer'"):
        backend.assert_complete()


async def test_a_responder_answers_what_the_script_does_not() -> None:
    backend = ScriptedBackend(["scripted"], responder=lambda r: f"echo {r.tag}")
    assert (await backend.chat(request())).content == "scripted"
    assert (await backend.chat(request("critic"))).content == "echo critic"
    backend.assert_complete()


async def test_assert_complete_reports_unused_replies() -> None:
    backend = ScriptedBackend(["a", "b"], by_tag={"critic": ["c"]})
    await backend.chat(request())
    with pytest.raises(AssertionError, match=r"2 scripted replies unused .*'critic': 1"):
        backend.assert_complete()


async def test_a_request_that_does_not_fit_the_slot_is_refused() -> None:
    text = "x" * 3000  # estimate_tokens: 3000 // 3 + 8 + 16 = 1024 prompt tokens
    prompt = estimate_tokens([ChatMessage(role="user", content=text)])
    backend = ScriptedBackend(["fits exactly", "never used"], n_ctx_per_slot=2048)
    reply = await backend.chat(request(text=text, max_tokens=2048 - prompt))
    assert reply.content == "fits exactly"
    with pytest.raises(ContextOverflow, match="does not fit the server's context") as info:
        await backend.chat(request("analyst", text=text, max_tokens=2048 - prompt + 1))
    assert info.value.status == 400
    assert f"{prompt} prompt + {2048 - prompt + 1} max_tokens > 2048" in str(info.value)
    assert len(backend.requests) == 2
    assert backend.remaining == 1  # the refused request used no reply
    assert len(backend.overflows) == 1
    with pytest.raises(AssertionError, match=r"context overflow on request #2 \(tag='analyst'"):
        backend.assert_complete()


async def test_the_context_check_counts_with_its_own_count_tokens() -> None:
    class Tokenizer(ScriptedBackend):
        async def count_tokens(self, messages: object, tools: object = None) -> int:
            return 1000

    backend = Tokenizer(["never used"], n_ctx_per_slot=1500)
    with pytest.raises(ContextOverflow, match="1000 prompt"):
        await backend.chat(request(text="short", max_tokens=501))


async def test_an_agent_overflowing_its_slot_fails_its_step_and_the_test() -> None:
    # An agent told it has more context than the server's slot packs its prompt for that budget;
    # the server refuses, the agent fails, and assert_complete() reports the overflow.
    backend = ScriptedBackend(by_tag={"writer": [step("p", "x", "q", "k")]}, n_ctx_per_slot=1024)
    card = RoleCard(name="writer", prompt="You write. " * 200)
    agent = LLMAgent("writer", card, backend, context_budget=4096, max_output_tokens=800)
    with pytest.raises(ContextOverflow):
        await agent.step(StepContext(task="t", goal="g", round=1, memory=[]))
    with pytest.raises(AssertionError, match=r"context overflow .*tag='writer'"):
        backend.assert_complete()


async def test_respects_its_slot_limit() -> None:
    backend = ScriptedBackend([Reply(content=str(i), delay_s=0.01) for i in range(6)], slots=2)
    async with asyncio.TaskGroup() as group:
        for _ in range(6):
            group.create_task(backend.chat(request()))
    assert backend.limiter.max_in_use == 2


async def test_unit_tests_cannot_reach_the_network() -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(AssertionError, match="unit test tried to reach"):
            await client.get("http://127.0.0.1:9/")
