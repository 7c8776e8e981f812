import json
from pathlib import Path

import pytest
from helpers import decision, final, goal, make_swarm, step
from trace_checks import check_trace

from dytopo.agents.base import AgentOutput, FunctionAgent, StepContext
from dytopo.agents.llm import LLMAgent
from dytopo.embedders import HashEmbedder
from dytopo.errors import BackendUnavailable, RunError
from dytopo.routing.config import RoutingConfig
from dytopo.runner import load_swarm
from dytopo.swarm.trace import read_trace
from dytopo.testing import Reply, ScriptedBackend

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    return tmp_path / "trace.jsonl"


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines), encoding="utf-8")


FACTS = "sourced facts about cache eviction"
DRAFT = "a polished report draft about caches"


def two_agent_script(rounds: int = 2) -> dict[str, list[str]]:
    return {
        "researcher": [
            step(f"found facts r{r}", f"FACTS-{r}", DRAFT, FACTS) for r in range(1, rounds + 1)
        ],
        "writer": [
            step(f"drafted r{r}", f"DRAFT-{r}", FACTS, "unrelated offer words zebra")
            for r in range(1, rounds + 1)
        ],
    }


async def test_run_routes_delivers_and_halts_after_min_rounds(trace_file: Path) -> None:
    script = two_agent_script(2)
    script["manager"] = [
        goal("gather facts"),
        decision(True, "too early"),
        decision(True, "FINAL ANSWER", goal_next=""),
    ]
    backend = ScriptedBackend(by_tag=script)
    result = await make_swarm(backend, ["researcher", "writer"], min_rounds=2).run(
        "compare LRU and LFU", trace_path=trace_file
    )
    backend.assert_complete()

    assert result.final_answer == "FINAL ANSWER"
    assert result.halt_reason == "manager"
    assert len(result.rounds) == 2
    assert result.goals == ["gather facts", "keep going"]
    first = result.rounds[0]
    assert [(e.source, e.target) for e in first.routing.edges] == [("researcher", "writer")]
    assert first.routing.order == ["researcher", "writer"]
    # The writer's round-2 prompt carries the researcher's round-1 private message.
    writer_round2 = [r for r in backend.requests if r.tag == "writer"][1]
    assert "FACTS-1" in (writer_round2.messages[-1].content or "")
    researcher_round2 = [r for r in backend.requests if r.tag == "researcher"][1]
    assert "DRAFT-1" not in (researcher_round2.messages[-1].content or "")

    events = read_trace(trace_file)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_start"
    assert kinds[-1] == "run_end"
    for needed in (
        "round_start",
        "agent_output",
        "routing",
        "delivery",
        "manager_decision",
        "round_end",
    ):
        assert needed in kinds
    assert all(e["run_id"] == result.run_id for e in events)
    check_trace(events, rounds=2)
    rejected = next(e for e in events if e["event"] == "manager_decision")
    assert rejected["halt"] is True
    assert rejected["accepted"] is False
    assert "min_rounds" in rejected["rejected_because"]


async def test_max_rounds_asks_the_manager_for_the_final_answer() -> None:
    script = two_agent_script(2)
    script["manager"] = [goal("go"), decision(False), decision(False), final("THE ANSWER")]
    backend = ScriptedBackend(by_tag=script)
    result = await make_swarm(backend, ["researcher", "writer"], max_rounds=2).run("task")
    backend.assert_complete()
    assert result.halt_reason == "max_rounds"
    assert result.final_answer == "THE ANSWER"
    # Round usage covers the agents and the manager's decision; opening and final are extra.
    assert [r.usage.requests for r in result.rounds] == [3, 3]
    assert result.usage.requests == 3 + 3 + 2
    assert result.usage_by_agent["manager"].requests == 4


async def test_a_failing_agent_is_recorded_and_the_round_goes_on(trace_file: Path) -> None:
    script = two_agent_script(1)
    script["writer"] = ["not json", "{'still': 'bad'}"]  # reasks=1: two attempts, both bad
    script["manager"] = [goal("go"), decision(True, "done")]
    backend = ScriptedBackend(by_tag=script)
    swarm = make_swarm(backend, ["researcher", "writer"], min_rounds=1)
    result = await swarm.run("task", trace_path=trace_file)
    backend.assert_complete()
    events = read_trace(trace_file)
    check_trace(events, rounds=1)
    assert next(e for e in events if e["event"] == "round_end")["failed"] == ["writer"]
    steps = {s.agent: s for s in result.rounds[0].steps}
    assert steps["researcher"].ok
    assert not steps["writer"].ok
    assert "no valid reply after 2 attempts" in steps["writer"].error
    assert [a.temperature for a in steps["writer"].attempts] == [0.7, 0.1]
    assert result.failures == 1
    assert result.rounds[0].routing.agents == ["researcher"]
    assert result.stats["structured_malformed"] == 2
    assert result.stats["structured_attempts"] == 5  # manager 2, researcher 1, writer 2


async def test_a_timed_out_agent_does_not_throw_away_finished_ones() -> None:
    script = two_agent_script(1)
    script["writer"] = [Reply(content=script["writer"][0], delay_s=5.0)]  # type: ignore[list-item]
    script["manager"] = [goal("go"), decision(True, "done")]
    backend = ScriptedBackend(by_tag=script)
    swarm = make_swarm(backend, ["researcher", "writer"], min_rounds=1, agent_timeout_s=0.2)
    result = await swarm.run("task")
    backend.assert_complete()
    steps = {s.agent: s for s in result.rounds[0].steps}
    assert steps["researcher"].ok
    assert steps["researcher"].output is not None
    assert "timed out" in steps["writer"].error


async def test_custom_python_agents_mix_with_llm_agents() -> None:
    seen: list[StepContext] = []

    async def collector(ctx: StepContext) -> AgentOutput:
        seen.append(ctx)
        if ctx.round == 1:
            raise RuntimeError("flaky plug-in")
        return AgentOutput(public="collected", private="COLLECTED", query=FACTS, key="zebra")

    script = two_agent_script(2)
    script.pop("writer")
    script["manager"] = [goal("go"), decision(False), decision(True, "ok")]
    backend = ScriptedBackend(by_tag=script)
    swarm = make_swarm(backend, ["researcher"], extra=[FunctionAgent("collector", collector)])
    result = await swarm.run("task")
    backend.assert_complete()
    assert not result.rounds[0].steps[1].ok
    assert "RuntimeError: flaky plug-in" in result.rounds[0].steps[1].error
    assert result.rounds[1].steps[1].ok
    assert [m.text for m in seen[1].memory] == []  # failed round 1: nothing delivered to it


async def test_manager_failures_fall_back_instead_of_crashing() -> None:
    script = two_agent_script(2)
    script["manager"] = ["garbage", "garbage", "bad", "bad", decision(True, "late answer")]
    backend = ScriptedBackend(by_tag=script)
    result = await make_swarm(backend, ["researcher", "writer"], min_rounds=1).run("the task")
    backend.assert_complete()
    assert result.rounds[0].goal.startswith("Make concrete progress on the task")
    assert result.rounds[0].decision is None
    assert result.final_answer == "late answer"
    assert result.failures == 2


async def test_dead_backend_mid_run_keeps_the_completed_rounds(trace_file: Path) -> None:
    script = two_agent_script(2)
    script["manager"] = [goal("go"), decision(False), BackendUnavailable("server gone", url="x")]  # type: ignore[list-item]
    backend = ScriptedBackend(by_tag=script)
    with pytest.raises(RunError) as info:
        await make_swarm(backend, ["researcher", "writer"]).run("task", trace_path=trace_file)
    backend.assert_complete()
    partial = info.value.partial
    assert len(partial.rounds) == 1
    assert "stopped after 1 complete round" in str(info.value)
    assert str(trace_file) in str(info.value)
    events = read_trace(trace_file)
    check_trace(events, rounds=1)
    assert "server gone" in events[-1]["error"]


@pytest.mark.parametrize(
    ("mode", "edges"), [("broadcast", 6), ("chain", 2), ("star", 4), ("single", 0)]
)
async def test_baseline_modes_through_the_scheduler(
    mode: str, edges: int, trace_file: Path
) -> None:
    ids = ["a", "b", "c"]
    active = ids[:1] if mode == "single" else ids  # single mode runs only the first agent
    script: dict[str, list[str]] = {
        i: [step(f"{i} public", f"{i} private", "x", "y")] for i in active
    }
    script["manager"] = [goal("go"), decision(True, "done")]
    backend = ScriptedBackend(by_tag=script)
    swarm = make_swarm(backend, ids, min_rounds=1, routing=RoutingConfig(mode=mode))  # type: ignore[arg-type]
    result = await swarm.run("task", trace_path=trace_file)
    backend.assert_complete()
    assert len(result.rounds[0].routing.edges) == edges
    check_trace(read_trace(trace_file), rounds=1)
    if mode == "single":
        assert [s.agent for s in result.rounds[0].steps] == ["a"]


async def test_tiered_execution_delivers_within_the_round() -> None:
    script = two_agent_script(2)
    script["manager"] = [goal("go"), decision(False), decision(True, "done")]
    backend = ScriptedBackend(by_tag=script)
    swarm = make_swarm(
        backend, ["researcher", "writer"], routing=RoutingConfig(tau=0.5, execution="tiered")
    )
    result = await swarm.run("task")
    backend.assert_complete()
    # Round 2 runs in tiers of round 1's graph: the writer reads FACTS-2 in round 2 itself.
    writer_round2 = [r for r in backend.requests if r.tag == "writer"][1]
    assert "FACTS-2" in (writer_round2.messages[-1].content or "")
    phases = {d.phase for d in result.rounds[1].deliveries}
    assert phases == {"same_round"}


async def test_agents_run_concurrently_within_the_slot_limit() -> None:
    ids = ["a", "b", "c", "d"]
    script: dict[str, list[object]] = {
        i: [Reply(content=step(i, i, "x", "y"), delay_s=0.05)] for i in ids
    }
    script["manager"] = [goal("go"), decision(True, "done")]
    backend = ScriptedBackend(by_tag=script, slots=2)  # type: ignore[arg-type]
    await make_swarm(backend, ids, min_rounds=1).run("task")
    backend.assert_complete()
    assert backend.limiter.max_in_use == 2


async def test_the_trace_records_the_run_event_by_event(trace_file: Path) -> None:
    script = two_agent_script(2)
    script["writer"].insert(0, "not json")  # one re-ask in round 1
    script["manager"] = [goal("gather facts"), decision(False), decision(True, "DONE")]
    backend = ScriptedBackend(by_tag=script)
    result = await make_swarm(backend, ["researcher", "writer"], min_rounds=1).run(
        "compare LRU and LFU", trace_path=trace_file
    )
    backend.assert_complete()
    lines = read_lines(trace_file)
    events = [json.loads(line) for line in lines]  # one JSON object per line, nothing else
    check_trace(events, rounds=2)

    round_shape = ["round_start", "agent_output", "agent_output", "routing", "delivery"]
    round_shape += ["manager_decision", "round_end"]
    assert [e["event"] for e in events if e["event"] != "ladder"] == [
        "run_start",
        "manager_goal",
        *round_shape,
        *round_shape,
        "run_end",
    ]
    start, end = events[0], events[-1]
    assert start["task"] == "compare LRU and LFU"
    assert start["agents"] == ["researcher", "writer"]
    assert (start["mode"], start["tau"], start["min_rounds"]) == ("dynamic", 0.5, 1)
    assert start["embedder"] == HashEmbedder().name
    assert start["run_id"] == result.run_id
    assert (end["final_answer"], end["halt_reason"], end["rounds"]) == ("DONE", "manager", 2)
    assert end["usage"] == result.usage.model_dump()
    assert end["reasks"] == result.reasks == 1

    writer_rungs = [
        (e["round"], e["ok"], e["temperature"])
        for e in events
        if e["event"] == "ladder" and e["agent"] == "writer"
    ]
    assert writer_rungs == [(1, False, 0.7), (1, True, 0.1), (2, True, 0.7)]
    outputs = [e for e in events if e["event"] == "agent_output"]
    steps = [(r.round, st) for r in result.rounds for st in r.steps]
    for e, (t, st) in zip(outputs, steps, strict=True):
        assert (e["round"], e["agent"], e["ok"]) == (t, st.agent, st.ok)
        assert st.output is not None
        assert (e["private"], e["query"], e["key"]) == (
            st.output.private,
            st.output.query,
            st.output.key,
        )
    routings = [e for e in events if e["event"] == "routing"]
    assert [r["edges"] for r in routings] == [
        [e.model_dump() for e in r.routing.edges] for r in result.rounds
    ]
    deliveries = [(e["round"], e["from"], e["to"]) for e in events if e["event"] == "delivery"]
    assert deliveries == [(1, "researcher", "writer"), (2, "researcher", "writer")]
    decisions = [(e["halt"], e["accepted"]) for e in events if e["event"] == "manager_decision"]
    assert decisions == [(False, False), (True, True)]

    # A crash mid-write tears the last line: everything before it still reads.
    write_lines(trace_file, [*lines[:-1], lines[-1][:20]])
    assert read_trace(trace_file) == events[:-1]


async def test_load_swarm_builds_the_topologys_agents() -> None:
    root = ROOT
    backend = ScriptedBackend(n_ctx_per_slot=16384)
    swarm = await load_swarm(
        root / "topologies" / "research.yaml", backend=backend, embedder=HashEmbedder()
    )
    assert [a.id for a in swarm.agents] == ["researcher", "analyst", "critic", "writer"]
    assert swarm.routing.mode == "dynamic"
    researcher = swarm.agents[0]
    assert isinstance(researcher, LLMAgent)
    assert [t.name for t in researcher.tools] == ["search_docs"]
    assert researcher.tool_context.docs_dir == (root / "examples" / "docs").resolve()


async def test_tiered_execution_forwards_only_to_agents_still_to_come() -> None:
    # a and b need and offer the same thing: edges both ways, equal scores; `tiers` keeps
    # a -> b (a comes first, as in sigma) and drops b -> a, so round 2 runs a, then b (which
    # reads a's message at once).
    script = {i: [step(f"{i} pub", f"{i}-{t}", "X", "X") for t in (1, 2)] for i in ("a", "b")}
    script["manager"] = [goal("go"), decision(False), decision(True, "done")]
    backend = ScriptedBackend(by_tag=script)
    swarm = make_swarm(backend, ["a", "b"], routing=RoutingConfig(tau=0.1, execution="tiered"))
    result = await swarm.run("task")
    backend.assert_complete()
    phases = {(d.source, d.target): d.phase for d in result.rounds[1].deliveries}
    # a had already stepped when b wrote: b's message reaches a after the round, not "within".
    assert phases == {("a", "b"): "same_round", ("b", "a"): "after_round"}
