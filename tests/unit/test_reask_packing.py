"""Re-asks: only a bad reply is re-asked, every re-ask fits the budget, tools run side by side."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence

import pytest
from helpers import card, decision
from malformed import VALID_STEP
from pydantic import BaseModel, field_validator

from dytopo.agents.base import AgentOutput, StepContext
from dytopo.agents.llm import LLMAgent
from dytopo.agents.manager import LLMManager, PublicMessage
from dytopo.agents.memory import MemoryItem
from dytopo.agents.structured import ask_structured
from dytopo.agents.tool_loop import ToolPolicy, run_tools
from dytopo.backends.types import ChatMessage, ChatRequest, ChatResponse, Sampling, ToolCall
from dytopo.errors import BackendUnavailable, BudgetExceeded, ContextOverflow
from dytopo.testing import Reply, ScriptedBackend, ScriptItem
from dytopo.tools import ToolContext, tool
from dytopo.tools.executor import ToolExecutor

GOOD = json.dumps(VALID_STEP)
REQUEST = ChatRequest(messages=[ChatMessage(role="user", content="go")], max_tokens=400)


async def assert_fits(backend: ScriptedBackend, budget: int) -> None:
    for number, request in enumerate(backend.requests, 1):
        prompt = await backend.count_tokens(request.messages, request.tools)
        assert prompt + request.max_tokens <= budget, f"request {number}: {prompt} prompt tokens"


# --- only a bad reply is re-asked ------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        ValueError("<Future cancelled> is not in deque"),
        RuntimeError("limiter broke"),
        BackendUnavailable("server down", url="x"),
        ContextOverflow("too long", url="x", status=400),
        asyncio.CancelledError(),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_an_error_from_the_backend_propagates_without_a_reask(error: BaseException) -> None:
    backend = ScriptedBackend([error])
    attempts: list[object] = []
    with pytest.raises(type(error)):
        await ask_structured(backend, REQUEST, AgentOutput, on_attempt=attempts.append)
    assert len(backend.requests) == 1
    assert attempts == []


class Gate(ScriptedBackend):
    """Signals when the n-th request arrived."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.arrived: dict[int, asyncio.Event] = {}

    def on(self, number: int) -> asyncio.Event:
        return self.arrived.setdefault(number, asyncio.Event())

    async def chat(self, request: ChatRequest) -> ChatResponse:
        self.on(len(self.requests) + 1).set()
        return await super().chat(request)


async def test_cancelling_during_a_reask_stops_at_once() -> None:
    backend = Gate(["not json", Reply(content=GOOD, delay_s=30)])
    task = asyncio.create_task(ask_structured(backend, REQUEST, AgentOutput))
    await backend.on(2).wait()
    await asyncio.sleep(0)  # let the re-ask reach its delay
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 0.1
    assert len(backend.requests) == 2  # no further re-ask after the cancellation


# --- every re-ask fits the budget ------------------------------------------------------------


def old_memory(rounds: int, words: int) -> list[MemoryItem]:
    return [
        MemoryItem(round=r, kind="own", source="writer", text=f"OLD{r} " + "note " * words)
        for r in range(1, rounds + 1)
    ]


async def test_agent_reask_is_packed_into_the_budget() -> None:
    budget = 1400
    bad = json.dumps({**VALID_STEP, "private": "x " * 3000})  # over the length cap, and long
    backend = ScriptedBackend([bad, GOOD], n_ctx_per_slot=budget)
    agent = LLMAgent("writer", card("writer"), backend, max_output_tokens=300)
    # 36 rounds: the memory kept after its stable cut (prompting.Timeline) nearly fills the
    # budget, so the re-ask cannot simply be appended.
    ctx = StepContext(task="task", goal="goal", round=37, memory=old_memory(36, 25))
    await agent.step(ctx)
    first, reask = backend.requests
    assert "not valid" in (reask.messages[-1].content or "")
    await assert_fits(backend, budget)
    # The first prompt was packed close to the limit: the re-ask had to drop memory for room.
    assert await backend.count_tokens(first.messages) + 300 > budget - 120
    assert len(reask.messages) == len(first.messages) + 2
    backend.assert_complete()


async def test_manager_reask_is_packed_into_the_budget() -> None:
    budget = 1200
    bad = decision(True, final="f", goal_next="g").replace('"because"', json.dumps("r " * 1500))
    backend = ScriptedBackend([bad, decision(False)], n_ctx_per_slot=budget)
    manager = LLMManager(card("manager"), backend, max_output_tokens=200)
    acct = StepContext(task="t", goal="", round=0, memory=[])
    transcript = [PublicMessage(round=1, agent=f"a{k}", text="said " * 20) for k in range(60)]
    await manager.decide("task", 1, 3, transcript, [], acct)
    assert "reason" in acct.attempts[0].error
    await assert_fits(backend, budget)
    backend.assert_complete()


def to_the_cap(request: ChatRequest) -> str:
    """A text work product as long as its request lets it be (a model writing to its cap)."""
    if request.json_schema is None:
        return "w " * (request.max_tokens * 3 // 2)  # 3 characters per estimated token
    return json.dumps({"public": "wrote it", "query": "a review", "key": "the draft"})


@pytest.mark.parametrize("with_tools", [False, True], ids=["plain", "tools"])
async def test_text_work_written_to_its_cap_can_still_be_described(with_tools: bool) -> None:
    budget = 2048
    script: list[ScriptItem] = []
    if with_tools:
        call = ToolCall(id="1", name="blob", arguments='{"size": 600}')
        script = [Reply(tool_calls=[call])]
    backend = ScriptedBackend(script, responder=to_the_cap, n_ctx_per_slot=budget)
    agent = LLMAgent(
        "analyst",
        card("analyst"),
        backend,
        text_work=True,
        tools=[blob] if with_tools else [],
        tool_policy=ToolPolicy(max_rounds=1),
    )
    # A long goal and memory: the work's prompt leaves little more than its own output free.
    ctx = StepContext(task="task", goal="g " * 300, round=9, memory=old_memory(8, 25))
    output = await agent.step(ctx)
    await assert_fits(backend, budget)
    work, described = backend.requests[-2:]
    assert work.json_schema is None
    assert described.json_schema is not None
    assert output.key == "the draft"
    assert len(output.private) > 1000
    # The JSON request continues the work's conversation (nothing dropped or packed anew),
    # so the server reuses the prompt and the work it just wrote.
    assert [m.content for m in described.messages[: len(work.messages)]] == [
        m.content for m in work.messages
    ]


async def test_reask_shows_a_short_echo_and_the_keys_not_the_whole_schema() -> None:
    bad = "y" * 6000
    backend = ScriptedBackend([bad, GOOD])
    await ask_structured(backend, REQUEST, AgentOutput)
    echo, correction = backend.requests[1].messages[-2:]
    assert echo.role == "assistant"
    assert len(echo.content or "") < 600
    text = correction.content or ""
    assert "public (string)" in text
    assert "properties" not in text  # the server enforces the schema; the keys suffice
    assert await backend.count_tokens(backend.requests[1].messages) < 260


async def test_reask_without_room_for_the_echo_sends_the_correction_alone() -> None:
    backend = ScriptedBackend(["not json", GOOD])
    seen: list[int] = []

    async def pack(extra: Sequence[ChatMessage]) -> list[ChatMessage]:
        seen.append(len(extra))
        if len(extra) > 1:
            raise BudgetExceeded("no room")
        return [*REQUEST.messages, *extra]

    result = await ask_structured(backend, REQUEST, AgentOutput, pack=pack)
    assert result.value is not None
    assert seen == [2, 1]
    assert backend.requests[1].messages[-1].role == "user"
    assert "not valid" in (backend.requests[1].messages[-1].content or "")


# --- the tool phase ----------------------------------------------------------------------------


@tool
def blob(size: int) -> str:
    """Return a block of text.

    Args:
        size: how many words.
    """
    return "word " * size


async def test_tool_turns_and_tool_reasks_fit_the_budget() -> None:
    budget = 1600
    first = [
        ToolCall(id=str(k), name="blob", arguments=f'{{"size": {3000 + k}}}') for k in range(3)
    ]
    bad = ToolCall(id="b", name="blob", arguments='{"size": "many' + " x" * 300)
    again = ToolCall(id="c", name="blob", arguments='{"size": 10}')
    backend = ScriptedBackend(
        [Reply(tool_calls=first), Reply(tool_calls=[bad]), Reply(tool_calls=[again]), GOOD],
        n_ctx_per_slot=budget,
    )
    agent = LLMAgent(
        "researcher",
        card("researcher"),
        backend,
        tools=[blob],
        max_output_tokens=300,
        tool_policy=ToolPolicy(max_rounds=2),
    )
    ctx = StepContext(task="task", goal="goal", round=41, memory=old_memory(40, 25))
    await agent.step(ctx)
    assert [a.ok for a in ctx.attempts] == [True, False, True, True]
    await assert_fits(backend, budget)
    backend.assert_complete()


async def test_tool_phase_ends_with_its_results_when_the_turns_no_longer_fit() -> None:
    calls = [
        Reply(tool_calls=[ToolCall(id="a", name="blob", arguments='{"size": 50}')]),
    ]
    backend = ScriptedBackend(calls)

    async def pack(extra: Sequence[ChatMessage]) -> list[ChatMessage]:
        if extra:
            raise BudgetExceeded("agent x: the pinned prompt alone needs 9999 tokens")
        return [ChatMessage(role="user", content="go")]

    phase = await run_tools(
        backend,
        [ChatMessage(role="user", content="go")],
        ToolExecutor([blob], ToolContext()),
        ToolPolicy(),
        Sampling(),
        pack=pack,
    )
    assert len(phase.outcomes) == 1
    assert phase.outcomes[0].ok
    assert "9999" in phase.failed
    backend.assert_complete()


# --- tool calls of one turn run concurrently ---------------------------------------------------

EVENTS: list[tuple[str, str]] = []


@tool
async def nap(label: str) -> str:
    """Sleep a little.

    Args:
        label: a name for the call.
    """
    EVENTS.append(("start", label))
    await asyncio.sleep(0.2)
    EVENTS.append(("end", label))
    return f"slept {label}"


@tool
def crash(label: str) -> str:
    """Fail.

    Args:
        label: a name for the call.
    """
    raise RuntimeError(f"crash {label}")


@tool
def leave(label: str) -> str:
    """Call sys.exit.

    Args:
        label: a name for the call.
    """
    sys.exit(f"bye {label}")


def calls(*pairs: tuple[str, str]) -> list[ToolCall]:
    return [
        ToolCall(id=str(k), name=name, arguments=json.dumps({"label": label}))
        for k, (name, label) in enumerate(pairs)
    ]


async def test_one_turns_calls_run_concurrently_in_call_order() -> None:
    EVENTS.clear()
    backend = ScriptedBackend(
        [Reply(tool_calls=calls(("nap", "a"), ("nap", "b"), ("nap", "c"))), "done"]
    )
    executor = ToolExecutor([nap], ToolContext())
    started = time.monotonic()
    phase = await run_tools(
        backend, [ChatMessage(role="user", content="go")], executor, ToolPolicy(), Sampling()
    )
    wall = time.monotonic() - started
    assert [e[0] for e in EVENTS[:3]] == ["start"] * 3  # all started before any finished
    assert [o.result for o in phase.outcomes] == ["slept a", "slept b", "slept c"]
    assert wall < 0.5
    tool_messages = [m.content for m in backend.requests[1].messages if m.role == "tool"]
    assert tool_messages == ["slept a", "slept b", "slept c"]


async def test_concurrency_is_bounded() -> None:
    EVENTS.clear()
    executor = ToolExecutor([nap], ToolContext())
    labels = [("nap", str(k)) for k in range(5)]
    outcomes = await executor.run_all(calls(*labels), parallel=2)
    assert [o.result for o in outcomes] == [f"slept {k}" for k in range(5)]
    running = peak = 0
    for kind, _ in EVENTS:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2


async def test_a_failing_call_does_not_cancel_its_siblings() -> None:
    EVENTS.clear()
    executor = ToolExecutor([nap, crash, leave], ToolContext())
    outcomes = await executor.run_all(
        calls(("nap", "a"), ("crash", "b"), ("leave", "c"), ("nap", "d"))
    )
    assert [o.ok for o in outcomes] == [True, False, False, True]
    assert "RuntimeError: crash b" in outcomes[1].error
    assert "SystemExit: bye c" in outcomes[2].error
    assert ("end", "a") in EVENTS
    assert ("end", "d") in EVENTS


async def test_identical_calls_in_one_turn_refuse_the_later_one() -> None:
    executor = ToolExecutor([nap], ToolContext())
    outcomes = await executor.run_all(calls(("nap", "x"), ("nap", "x")))
    assert [o.repeated for o in outcomes] == [False, True]


class Spec(BaseModel):
    n: int

    @field_validator("n")
    @classmethod
    def buggy(cls, value: int) -> int:
        raise TypeError("validator bug")  # pydantic passes a TypeError through unwrapped


@tool
def picky(spec: Spec) -> str:
    """Take a spec.

    Args:
        spec: the spec.
    """
    return "never"


async def test_a_buggy_argument_validator_refuses_the_call_instead_of_crashing() -> None:
    call = ToolCall(id="p", name="picky", arguments='{"spec": {"n": 1}}')
    backend = ScriptedBackend([Reply(tool_calls=[call])])
    executor = ToolExecutor([picky], ToolContext())
    phase = await run_tools(
        backend,
        [ChatMessage(role="user", content="go")],
        executor,
        ToolPolicy(reasks=0),
        Sampling(),
    )
    assert "TypeError: validator bug" in phase.failed
    (outcome,) = await executor.run_all([call])
    assert not outcome.ok
    assert "TypeError: validator bug" in outcome.error
