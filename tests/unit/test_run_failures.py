"""Every way a run can fail mid-way ends as a recorded failure or one RunError with `.partial`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers import card, decision, final, goal, make_swarm, step

from dytopo.agents.base import AgentOutput, FunctionAgent, StepContext
from dytopo.agents.llm import LLMAgent
from dytopo.agents.manager import LLMManager
from dytopo.backends.types import ToolCall
from dytopo.embedders import HashEmbedder
from dytopo.errors import BackendError, BackendUnavailable, ContextOverflow, RunError
from dytopo.routing.config import RoutingConfig
from dytopo.swarm.loop import Swarm
from dytopo.swarm.trace import read_trace
from dytopo.testing import Reply, ScriptedBackend
from dytopo.tools import tool

STEP = step("did my part", "THE WORK", "what I need", "what I offer")
GONE_ERROR = BackendUnavailable("server gone after 6 attempts", url="scripted://")


@tool
def echo(text: str) -> str:
    """Repeat a text.

    Args:
        text: what to repeat.
    """
    return text


def overflow() -> ContextOverflow:
    return ContextOverflow("request does not fit the context", url="scripted://", status=400)


def server_500() -> BackendError:
    return BackendError("scripted:// answered HTTP 500: boom", url="scripted://", status=500)


# --- the manager falls back on any backend error ------------------------------------------


async def test_manager_context_overflow_and_http_500_fall_back() -> None:
    backend = ScriptedBackend(
        by_tag={
            "a": [STEP, STEP],
            "manager": [server_500(), overflow(), decision(True, "DONE")],
        }
    )
    result = await make_swarm(backend, ["a"], min_rounds=1, max_rounds=2).run("task")
    backend.assert_complete()
    assert result.rounds[0].goal.startswith("Make concrete progress")  # open: HTTP 500
    assert result.rounds[0].decision is None  # decide: context overflow
    assert result.final_answer == "DONE"
    assert result.halt_reason == "manager"
    assert result.failures == 2


async def test_dead_server_in_the_decision_keeps_the_finished_agents(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    gone = BackendUnavailable("server gone after 6 attempts", url="scripted://")
    backend = ScriptedBackend(by_tag={"a": [STEP], "b": [STEP], "manager": [goal("go"), gone]})
    with pytest.raises(RunError) as info:
        await make_swarm(backend, ["a", "b"]).run("task", trace_path=trace)
    backend.assert_complete()
    message = str(info.value)
    assert "\n" not in message
    assert "stopped after 0 complete round(s): server gone" in message
    assert "round 1 stopped with 2 agent step(s) finished" in message
    partial = info.value.partial
    assert partial.rounds == []
    unfinished = partial.unfinished
    assert unfinished is not None
    assert unfinished.round == 1
    assert [(st.agent, st.ok) for st in unfinished.steps] == [("a", True), ("b", True)]
    assert all(st.output is not None and st.output.private == "THE WORK" for st in unfinished.steps)
    assert unfinished.routing is not None
    assert unfinished.routing.agents == ["a", "b"]
    end = read_trace(trace)[-1]
    assert end["event"] == "run_end"
    assert end["unfinished_round"] == 1


# --- raw exceptions that used to escape -----------------------------------------------------


async def test_star_mode_with_a_failed_hub_picks_the_first_finished_agent() -> None:
    backend = ScriptedBackend(
        by_tag={
            "a": [STEP],
            "b": ["not json", "still not json"],  # reasks=1: the hub fails its step
            "c": [STEP],
            "manager": [goal("go"), decision(True, "done")],
        }
    )
    swarm = make_swarm(
        backend, ["a", "b", "c"], min_rounds=1, routing=RoutingConfig(mode="star", hub="b")
    )
    result = await swarm.run("task")
    backend.assert_complete()
    routing = result.rounds[0].routing
    assert routing.hub == "a"
    assert sorted((e.source, e.target) for e in routing.edges) == [("a", "c"), ("c", "a")]


async def test_star_mode_records_the_configured_hub_when_it_finished() -> None:
    backend = ScriptedBackend(
        by_tag={"a": [STEP], "b": [STEP], "manager": [goal("go"), decision(True, "done")]}
    )
    swarm = make_swarm(
        backend, ["a", "b"], min_rounds=1, routing=RoutingConfig(mode="star", hub="b")
    )
    result = await swarm.run("task")
    backend.assert_complete()
    assert result.rounds[0].routing.hub == "b"


async def test_custom_agents_returning_a_dict_or_junk() -> None:
    fields = {"public": "p", "private": "DICT WORK", "query": "q", "key": "k"}

    async def good_dict(ctx: StepContext) -> AgentOutput:
        return fields  # type: ignore[return-value]

    async def bad_dict(ctx: StepContext) -> AgentOutput:
        return {"public": "p", "private": "x", "query": "q", "extra": 1}  # type: ignore[return-value]

    async def text(ctx: StepContext) -> AgentOutput:
        return "just a string"  # type: ignore[return-value]

    backend = ScriptedBackend(by_tag={"manager": [goal("go"), decision(True, "done")]})
    agents = [FunctionAgent("good", good_dict), FunctionAgent("bad", bad_dict)]
    agents.append(FunctionAgent("text", text))
    swarm = make_swarm(backend, [], extra=agents, min_rounds=1)
    result = await swarm.run("task")
    backend.assert_complete()
    steps = {st.agent: st for st in result.rounds[0].steps}
    assert steps["good"].ok
    assert steps["good"].output == AgentOutput.model_validate(fields)
    assert not steps["bad"].ok
    assert "agent bad returned a dict that is not a valid AgentOutput" in steps["bad"].error
    assert "key: Field required" in steps["bad"].error
    assert "extra: Extra inputs are not permitted" in steps["bad"].error
    assert not steps["text"].ok
    assert "agent text returned str, not an AgentOutput" in steps["text"].error
    assert result.rounds[0].routing.agents == ["good"]
    assert result.failures == 2


async def test_abort_on_agent_error_is_one_run_error_caused_by_the_agents_error() -> None:
    async def broken(ctx: StepContext) -> AgentOutput:
        await asyncio.sleep(0.05)  # the LLM agent finishes first
        raise RuntimeError("plug-in broke")

    backend = ScriptedBackend(by_tag={"a": [STEP], "manager": [goal("go")]})
    swarm = make_swarm(
        backend, ["a"], extra=[FunctionAgent("broken", broken)], on_agent_error="abort"
    )
    with pytest.raises(RunError) as info:
        await swarm.run("task")
    backend.assert_complete()
    message = str(info.value)
    assert "\n" not in message
    assert "agent broken failed in round 1 and on_agent_error is abort" in message
    assert "RuntimeError: plug-in broke" in message
    cause = info.value.__cause__
    assert isinstance(cause, RuntimeError)
    assert str(cause) == "plug-in broke"
    unfinished = info.value.partial.unfinished
    assert [(st.agent, st.ok) for st in unfinished.steps] == [("a", True), ("broken", False)]


# --- the run's token cap --------------------------------------------------------------------


def capped_swarm(backend: ScriptedBackend, cap: int) -> Swarm:
    agents = [
        LLMAgent(i, card(i), backend, max_output_tokens=300, reasks=0) for i in ("a", "b", "c", "d")
    ]
    manager = LLMManager(card("manager"), backend, max_output_tokens=300, reasks=0)
    return Swarm(
        agents,
        manager,
        HashEmbedder(),
        max_rounds=3,
        run_token_budget=cap,
        final_answer_reserve=250,
    )


async def test_the_token_cap_holds_in_round_one_with_concurrent_agents(tmp_path: Path) -> None:
    # Each agent step costs ~240 prompt + 150 completion tokens; all four run at once.
    work = Reply(content=STEP, completion_tokens=150, delay_s=0.05)
    backend = ScriptedBackend(
        by_tag={
            "a": [work],
            "b": [work],
            "manager": [goal("go"), Reply(content=final("CAPPED ANSWER"), completion_tokens=40)],
        },
        slots=4,
    )
    trace = tmp_path / "trace.jsonl"
    result = await capped_swarm(backend, 1550).run("task", trace_path=trace)
    backend.assert_complete()
    used = result.usage.prompt_tokens + result.usage.completion_tokens
    assert used <= 1550 + 300  # at most one request's max_tokens over the cap
    assert result.halt_reason == "budget"
    assert result.final_answer == "CAPPED ANSWER"  # the reserve was kept for it
    assert len(result.rounds) == 1
    steps = {st.agent: st for st in result.rounds[0].steps}
    assert steps["a"].ok
    assert steps["b"].ok
    assert "run_token_budget 1550" in steps["c"].error
    assert "raise run_token_budget" in steps["c"].error
    stop = next(e for e in read_trace(trace) if e["event"] == "budget_stop")
    assert stop["refused"].startswith("run_token_budget 1550")


async def test_a_cap_too_small_for_the_final_answer_falls_back_to_the_agents_work() -> None:
    work = Reply(content=STEP, completion_tokens=250)
    backend = ScriptedBackend(by_tag={"a": [work], "b": [work], "manager": [goal("go")]})
    result = await capped_swarm(backend, 1350).run("task")
    backend.assert_complete()
    assert result.usage.prompt_tokens + result.usage.completion_tokens <= 1350
    assert result.halt_reason == "budget"
    # Each agent's latest work, labelled, since no manager request fits.
    assert result.final_answer == "[a, round 1]\nTHE WORK\n\n[b, round 1]\nTHE WORK"


# --- time limits: the agent's work, and its wait for a slot ----------------------------------


async def test_waiting_for_a_slot_does_not_count_as_the_agents_work() -> None:
    ids = ["a", "b", "c"]
    script: dict[str, list[object]] = {i: [Reply(content=STEP, delay_s=0.3)] for i in ids}
    script["manager"] = [goal("go"), decision(True, "done")]
    backend = ScriptedBackend(by_tag=script, slots=1)  # type: ignore[arg-type]
    swarm = make_swarm(backend, ids, min_rounds=1, agent_timeout_s=0.5)
    result = await swarm.run("task")
    backend.assert_complete()
    steps = result.rounds[0].steps
    assert [st.error for st in steps] == ["", "", ""]
    assert steps[2].queued_s >= 0.5  # it waited for both others, and still had its 0.5 s


async def test_each_limit_names_itself_when_it_expires() -> None:
    script: dict[str, list[object]] = {
        "a": [Reply(content=STEP, delay_s=0.6)],
        "b": [Reply(content=STEP, delay_s=0.6)],
        "manager": [goal("go")],
    }
    backend = ScriptedBackend(by_tag=script, slots=1)  # type: ignore[arg-type]
    swarm = make_swarm(backend, ["a", "b"], min_rounds=1, agent_timeout_s=0.3, queue_timeout_s=0.1)
    with pytest.raises(RunError, match="round 1: every agent step failed") as failed:
        await swarm.run("task")
    backend.assert_complete()
    unfinished = failed.value.partial.unfinished
    a, b = sorted(unfinished.steps, key=lambda st: st.agent)
    assert a.error.startswith("timed out after working 0.3s (agent_timeout_s)")
    assert b.error.startswith("timed out after waiting 0.1s for a server slot (queue_timeout_s)")


async def test_an_agents_own_timeout_error_is_not_reported_as_a_limit() -> None:
    async def slow_upstream(ctx: StepContext) -> AgentOutput:
        raise TimeoutError("upstream API slow")

    backend = ScriptedBackend(by_tag={"manager": [goal("go")]})
    swarm = make_swarm(backend, [], extra=[FunctionAgent("x", slow_upstream)], min_rounds=1)
    with pytest.raises(RunError) as failed:
        await swarm.run("task")
    backend.assert_complete()
    assert failed.value.partial.unfinished.steps[0].error == "TimeoutError: upstream API slow"


async def test_a_round_in_which_every_step_failed_is_a_run_error_with_the_partial_result() -> None:
    backend = ScriptedBackend(
        by_tag={
            "manager": [goal("go"), decision(False, goal_next="again")],
            "a": [STEP, "not json", "still not json"],
            "b": [STEP, "not json", "still not json"],
        }
    )
    swarm = make_swarm(backend, ["a", "b"], max_rounds=3)
    with pytest.raises(RunError, match="round 2: every agent step failed") as failed:
        await swarm.run("task")
    backend.assert_complete()
    partial = failed.value.partial
    assert len(partial.rounds) == 1  # round 1 is kept
    assert partial.halt_reason == "error"


# --- accounting ------------------------------------------------------------------------------


async def test_reasks_count_structured_reasks_only() -> None:
    call = Reply(tool_calls=[ToolCall(name="echo", arguments='{"text": "x"}')])
    backend = ScriptedBackend(
        by_tag={
            "a": [call, "no more calls", STEP],  # two tool-call attempts, one structured
            "b": ["not json", STEP],  # one structured re-ask
            "manager": [goal("go"), decision(True, "done")],
        }
    )
    agents = [
        LLMAgent("a", card("a"), backend, tools=[echo], reasks=1),
        LLMAgent("b", card("b"), backend, reasks=1),
    ]
    swarm = Swarm(agents, LLMManager(card("manager"), backend), HashEmbedder(), min_rounds=1)
    result = await swarm.run("task")
    backend.assert_complete()
    assert result.stats["tool_call_attempts"] == 2
    assert result.reasks == 1


async def test_a_failed_steps_earlier_attempts_are_in_the_runs_usage() -> None:
    # b's first reply is no JSON (a request the server did process), then the server fails:
    # the step fails, but the tokens of its first request were spent all the same.
    backend = ScriptedBackend(
        by_tag={
            "manager": [goal("go"), decision(True, "done")],
            "a": [STEP],
            "b": ["not json", BackendError("server gone", url="http://x")],
        }
    )
    result = await make_swarm(backend, ["a", "b"], min_rounds=1).run("task")
    backend.assert_complete()
    b = result.rounds[0].steps[1]
    assert not b.ok
    assert b.usage.requests == 1
    assert result.usage == backend.usage  # every request the server served, once


async def test_a_round_failed_for_want_of_a_server_names_that_as_its_cause() -> None:
    backend = ScriptedBackend(
        by_tag={"manager": [goal("go")], "a": [GONE_ERROR], "b": [GONE_ERROR]}
    )
    with pytest.raises(RunError) as failed:
        await make_swarm(backend, ["a", "b"]).run("task")
    assert isinstance(failed.value.__cause__, BackendUnavailable)
