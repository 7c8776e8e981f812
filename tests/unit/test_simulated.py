"""The simulated llama-server: its accounting, its queue and its replies."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from helpers import card
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

from dytopo.agents.base import AgentOutput
from dytopo.agents.llm import LLMAgent
from dytopo.agents.manager import FinalAnswer, LLMManager, ManagerDecision, RoundGoal
from dytopo.agents.structured import schema_for
from dytopo.backends.simulated import CHARS_PER_TOKEN, SimulatedBackend, render, tokens
from dytopo.backends.types import ChatMessage, ChatRequest
from dytopo.embedders import HashEmbedder
from dytopo.errors import ContextOverflow
from dytopo.routing.config import RoutingConfig
from dytopo.swarm import trace
from dytopo.swarm.loop import Swarm


def ask(text: str, tag: str = "a", schema: type[BaseModel] | None = AgentOutput) -> ChatRequest:
    return ChatRequest(
        messages=[
            ChatMessage(role="system", content="You are a."),
            ChatMessage(role="user", content=text),
        ],
        max_tokens=400,
        json_schema=schema_for(schema) if schema else None,
        tag=tag,
    )


async def test_a_repeated_prompt_costs_only_its_generation() -> None:
    backend = SimulatedBackend(slots=1, prompt_token_s=1e-5, output_token_s=1e-5)
    first = await backend.chat(ask("x" * 4000))
    second = await backend.chat(ask("x" * 4000))
    assert first.timings is not None
    assert second.timings is not None
    assert first.timings.cache_n == 0
    assert first.timings.prompt_n == first.usage.prompt_tokens > 1000
    assert second.timings.prompt_n == 0
    assert second.timings.prompt_ms == 0
    assert second.usage.cached_tokens == second.usage.prompt_tokens
    assert second.timings.predicted_n == second.usage.completion_tokens > 0
    served = backend.served[1]
    assert served.cached_tokens == served.prompt_tokens
    # The slot was held for the generation only (sleeps end no earlier than asked).
    assert served.service_s >= served.completion_tokens * 1e-5
    assert served.service_s < backend.served[0].service_s


async def test_only_the_tokens_past_the_common_prefix_are_charged() -> None:
    backend = SimulatedBackend(slots=1)
    await backend.chat(ask("y" * 4000))
    reply = await backend.chat(ask("y" * 4000 + " and one more question"))
    assert reply.timings is not None
    prompt = render(ask("y" * 4000 + " and one more question").messages)
    assert reply.usage.prompt_tokens == tokens(prompt)
    shared = len(render(ask("y" * 4000).messages)) - len("<|im_end|>\n<|im_start|>assistant\n")
    assert reply.timings.cache_n == shared // CHARS_PER_TOKEN
    assert reply.timings.prompt_n == reply.usage.prompt_tokens - reply.timings.cache_n


async def test_a_prompt_goes_to_the_free_slot_holding_its_prefix() -> None:
    backend = SimulatedBackend(slots=2)
    await backend.chat(ask("p" * 2000, tag="p"))
    await backend.chat(ask("q" * 2000, tag="q"))
    await backend.chat(ask("p" * 2000, tag="p"))
    slots = [s.slot for s in backend.served]
    assert slots[0] != slots[1]
    assert slots[2] == slots[0]
    assert backend.served[2].cached_tokens == backend.served[2].prompt_tokens


async def test_requests_are_served_first_come_first_served() -> None:
    backend = SimulatedBackend(slots=1, prompt_token_s=1e-6, output_token_s=1e-6)
    tags = [f"agent{k}" for k in range(6)]
    async with asyncio.TaskGroup() as group:
        for tag in tags:
            group.create_task(backend.chat(ask(f"{tag} " * 50, tag=tag)))
            await asyncio.sleep(0)  # each reaches the queue before the next is made
    started = sorted(backend.served, key=lambda s: s.started_at)
    assert [s.tag for s in started] == tags
    assert all(a.ended_at <= b.started_at for a, b in itertools.pairwise(started))


async def test_never_more_requests_in_flight_than_slots() -> None:
    backend = SimulatedBackend(slots=3, prompt_token_s=1e-6, output_token_s=2e-6)
    async with asyncio.TaskGroup() as group:
        for k in range(12):
            group.create_task(backend.chat(ask(f"request {k} " * (10 + 7 * k), tag=f"t{k}")))
    assert backend.max_in_flight == 3
    assert backend.limiter.max_in_use == 3
    events = sorted(
        [(s.started_at, 1) for s in backend.served] + [(s.ended_at, -1) for s in backend.served],
        key=lambda e: (e[0], e[1]),  # an end before a start at the same instant
    )
    busy = peak = 0
    for _, change in events:
        busy += change
        peak = max(peak, busy)
    assert peak == 3
    assert len({s.slot for s in backend.served}) == 3


@pytest.mark.parametrize("model", [AgentOutput, RoundGoal, ManagerDecision, FinalAnswer])
async def test_replies_validate_against_the_requested_schema(model: type[BaseModel]) -> None:
    backend = SimulatedBackend()
    for number in range(3):
        reply = await backend.chat(ask(f"round {number}", tag="x", schema=model))
        assert reply.finish_reason == "stop"
        model.model_validate_json(reply.content)


async def test_replies_are_the_same_in_every_run() -> None:
    one, two = SimulatedBackend(), SimulatedBackend()
    for tag in ("a", "b", "a"):
        assert (await one.chat(ask("same", tag=tag))).content == (
            await two.chat(ask("same", tag=tag))
        ).content


async def test_a_prompt_that_does_not_fit_is_refused_like_the_server_does() -> None:
    backend = SimulatedBackend(n_ctx_per_slot=1024)
    with pytest.raises(ContextOverflow, match="context"):
        await backend.chat(ask("z" * 4000))
    assert backend.served == []


async def test_a_swarm_runs_on_the_simulated_server() -> None:
    backend = SimulatedBackend(slots=2, prompt_token_s=1e-6, output_token_s=1e-6)
    agents = [LLMAgent(name, card(name), backend) for name in ("researcher", "critic", "writer")]
    swarm = Swarm(
        agents,
        LLMManager(card("manager"), backend),
        HashEmbedder(),
        routing=RoutingConfig(tau=0.3),
        max_rounds=2,
        min_rounds=2,
    )
    result = await swarm.run("Compare two cache eviction policies.")
    assert [len(r.steps) for r in result.rounds] == [3, 3]
    assert not result.failures
    assert result.halt_reason == "max_rounds"
    assert result.final_answer.startswith("Summary:")
    # open + (3 agents + decision) per round + final answer
    assert backend.usage.requests == len(backend.served) == 1 + 2 * 4 + 1
    assert backend.max_in_flight <= 2


async def test_a_freed_slot_serves_the_next_request_before_the_reply_is_processed() -> None:
    # The client's work on a reply (parse, validate, trace) must not keep the slot idle.
    backend = SimulatedBackend(slots=1, prompt_token_s=1e-6, output_token_s=1e-6)
    loop = asyncio.get_running_loop()
    replied_at: list[float] = []

    async def first() -> None:
        await backend.chat(ask("first", tag="a"))
        replied_at.append(loop.time())
        time.sleep(0.05)  # the caller's synchronous work on the reply  # noqa: ASYNC251

    async with asyncio.TaskGroup() as group:
        group.create_task(first())
        await asyncio.sleep(0)
        group.create_task(backend.chat(ask("second", tag="b")))
    second = next(s for s in backend.served if s.tag == "b")
    assert second.started_at <= replied_at[0]


async def test_a_run_does_its_fixed_work_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Per request or per round, these cost milliseconds each on the client's critical path:
    # building a reply model's JSON schema, reading package metadata, deep-copying the state.
    counts = {"schema": 0, "metadata": 0, "deepcopy": 0}

    def counting(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(
        GenerateJsonSchema, "generate", counting("schema", GenerateJsonSchema.generate)
    )
    monkeypatch.setattr(metadata, "version", counting("metadata", metadata.version))
    monkeypatch.setattr(BaseModel, "__deepcopy__", counting("deepcopy", BaseModel.__deepcopy__))
    backend = SimulatedBackend(slots=2, prompt_token_s=1e-6, output_token_s=1e-6)
    agents = [LLMAgent(name, card(name), backend) for name in ("researcher", "critic", "writer")]
    swarm = Swarm(agents, LLMManager(card("manager"), backend), HashEmbedder(), max_rounds=3)
    result = await swarm.run("Compare two cache eviction policies.", trace_path=tmp_path / "t")
    assert len(result.rounds) == 3
    assert backend.usage.requests == 1 + 3 * 4 + 1
    assert counts["schema"] <= 4  # one per reply model, at most
    assert counts["metadata"] <= 5  # the recorded packages, once
    assert counts["deepcopy"] == 0


async def test_a_trace_nobody_reads_converts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    converted: list[object] = []

    def plain(value: object) -> object:
        converted.append(value)
        return value

    monkeypatch.setattr(trace, "_plain", plain)
    backend = SimulatedBackend(prompt_token_s=1e-6, output_token_s=1e-6)
    agents = [LLMAgent(name, card(name), backend) for name in ("researcher", "critic")]
    swarm = Swarm(agents, LLMManager(card("manager"), backend), HashEmbedder(), max_rounds=2)
    await swarm.run("Compare two cache eviction policies.")
    assert converted == []
    await swarm.run("Compare two cache eviction policies.", observers=[lambda event: None])
    assert converted
