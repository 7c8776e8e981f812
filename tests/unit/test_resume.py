"""Checkpoints and resume: a run that stops after round 1 and is resumed ends exactly like the
run that never stopped (rounds, routing drawn from the restored RNG, memories, costs)."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import after_each_checkpoint, decision, final, goal, make_swarm, step

from dytopo import runner
from dytopo.agents.base import AgentOutput, FunctionAgent, StepContext
from dytopo.embedders import HashEmbedder
from dytopo.errors import BackendUnavailable, ConfigError, RunError
from dytopo.routing.config import RoutingConfig
from dytopo.runner import aresume
from dytopo.swarm.checkpoint import (
    Checkpoint,
    changed_fields,
    checkpoint_path,
    find_checkpoint,
    read_checkpoint,
    write_checkpoint,
)
from dytopo.swarm.loop import Swarm
from dytopo.swarm.result import RunResult
from dytopo.swarm.trace import read_trace
from dytopo.testing import Reply, ScriptedBackend

IDS = ["a", "b", "c"]
RANDOM = RoutingConfig(mode="random", tau=0.5)
GONE = BackendUnavailable("server gone after 6 attempts", url="scripted://")


def agent_replies(rounds: range) -> dict[str, list[Any]]:
    """a needs what b offers and c needs what a offers: two dynamic edges, so `random` mode
    draws two of the six possible edges each round."""
    return {
        "a": [step(f"a pub {t}", f"A-{t}", "unit tests", "benchmarks") for t in rounds],
        "b": [step(f"b pub {t}", f"B-{t}", "zebra words", "unit tests") for t in rounds],
        "c": [step(f"c pub {t}", f"C-{t}", "benchmarks", "walrus words") for t in rounds],
    }


DECISIONS = [decision(False, goal_next=f"goal {t + 1}") for t in (1, 2, 3)]


def swarm(backend: ScriptedBackend) -> Swarm:
    return make_swarm(backend, IDS, routing=RANDOM, max_rounds=3, min_rounds=1, seed=11)


def comparable(result: RunResult) -> dict[str, Any]:
    """A result without its timings (the only thing a resumed run may not repeat)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("wall_s", "queued_s")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(result.model_dump(mode="json", exclude={"run_id", "trace_path"}))


def prompts(backend: ScriptedBackend, tag: str) -> list[list[str | None]]:
    return [[m.content for m in r.messages] for r in backend.requests if r.tag == tag]


async def uninterrupted(trace: Path) -> tuple[RunResult, ScriptedBackend]:
    script = agent_replies(range(1, 4))
    script["manager"] = [goal("goal 1"), *DECISIONS, final("ANSWER")]
    backend = ScriptedBackend(by_tag=script)
    result = await swarm(backend).run("task", trace_path=trace)
    backend.assert_complete()
    return result, backend


def rest_of_run() -> ScriptedBackend:
    """Rounds 2 and 3 of the same script, on a server that came back."""
    script = agent_replies(range(2, 4))
    script["manager"] = [*DECISIONS[1:], final("ANSWER")]
    return ScriptedBackend(by_tag=script)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def edges(result: RunResult) -> list[list[tuple[str, str]]]:
    return [[(e.source, e.target) for e in r.routing.edges] for r in result.rounds]


async def test_a_run_stopped_in_round_2_and_resumed_equals_the_uninterrupted_run(
    tmp_path: Path,
) -> None:
    full, full_backend = await uninterrupted(tmp_path / "full.jsonl")
    drawn = edges(full)
    assert all(len(e) == 2 for e in drawn)
    assert len({tuple(e) for e in drawn}) > 1, "the seed must draw different graphs per round"

    script = agent_replies(range(1, 3))
    script["manager"] = [goal("goal 1"), DECISIONS[0], GONE]  # dies in round 2's decision
    trace = tmp_path / "run.jsonl"
    with pytest.raises(RunError) as info:
        await swarm(ScriptedBackend(by_tag=script)).run("task", trace_path=trace)
    message = str(info.value)
    assert "stopped after 1 complete round(s): server gone" in message
    assert message.endswith(f"continue it with: dytopo resume {trace}")
    stopped = read_checkpoint(checkpoint_path(trace))
    assert (stopped.status, stopped.state.round, stopped.state.goal) == ("failed", 1, "goal 2")

    backend = rest_of_run()
    resumed = await swarm(backend).resume(trace)
    backend.assert_complete()

    assert comparable(resumed) == comparable(full)
    assert edges(resumed) == drawn  # round 2 and 3 drew from the restored RNG
    assert resumed.run_id == info.value.partial.run_id
    # Round 3's prompts carry the same memories as in the run that never stopped.
    for tag in [*IDS, "manager"]:
        assert prompts(backend, tag) == prompts(full_backend, tag)[-len(prompts(backend, tag)) :]
    done = read_checkpoint(checkpoint_path(trace)).state
    full_state = read_checkpoint(checkpoint_path(tmp_path / "full.jsonl")).state
    assert done.memory == full_state.memory
    assert done.transcript == full_state.transcript
    assert done.ledger == full_state.ledger


async def test_the_trace_goes_on_in_the_same_file_without_repeating_a_round(
    tmp_path: Path,
) -> None:
    script = agent_replies(range(1, 3))
    script["manager"] = [goal("goal 1"), DECISIONS[0], GONE]
    trace = tmp_path / "run.jsonl"
    with pytest.raises(RunError):
        await swarm(ScriptedBackend(by_tag=script)).run("task", trace_path=trace)
    result = await swarm(rest_of_run()).resume(trace)

    events = read_trace(trace)
    kinds = [e["event"] for e in events]
    assert kinds.count("run_start") == kinds.count("run_resumed") == 1
    assert kinds.count("run_end") == 2
    assert {e["run_id"] for e in events} == {result.run_id}
    resumed_at = kinds.index("run_resumed")
    assert events[resumed_at]["from_round"] == 2
    assert events[resumed_at]["forced"] is False
    assert events[resumed_at]["checkpoint"] == str(checkpoint_path(trace))
    before, after = events[:resumed_at], events[resumed_at:]
    assert [e["round"] for e in before if e["event"] == "round_end"] == [1]
    assert [e["round"] for e in after if e["event"] == "round_end"] == [2, 3]
    assert "manager_goal" not in [e["event"] for e in after]  # the opening is not redone
    assert after[-1]["event"] == "run_end"
    assert (after[-1]["rounds"], after[-1]["halt_reason"]) == (3, "max_rounds")
    assert after[-1]["usage"] == result.usage.model_dump()


async def test_a_cancelled_run_keeps_round_1_and_resumes_like_the_uninterrupted_run(
    tmp_path: Path,
) -> None:
    full, _ = await uninterrupted(tmp_path / "full.jsonl")
    script = agent_replies(range(1, 2))
    for tag in IDS:  # round 2 hangs until cancelled
        script[tag].append(Reply(content=script[tag][0], delay_s=60))
    script["manager"] = [goal("goal 1"), DECISIONS[0]]
    trace = tmp_path / "run.jsonl"
    round_2 = asyncio.Event()

    def watch(event: dict[str, Any]) -> None:
        if event["event"] == "round_start" and event["round"] == 2:
            round_2.set()

    backend = ScriptedBackend(by_tag=script)
    run = asyncio.create_task(swarm(backend).run("task", trace_path=trace, observers=[watch]))
    await round_2.wait()
    await asyncio.sleep(0.05)  # the agents' requests are in flight
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    stopped = read_checkpoint(checkpoint_path(trace))
    assert (stopped.status, stopped.state.round) == ("interrupted", 1)
    assert read_trace(trace)[-1]["error"] == "interrupted"

    resumed = await swarm(rest_of_run()).resume(checkpoint_path(trace))
    assert comparable(resumed) == comparable(full)


async def test_a_killed_run_resumes_from_its_running_checkpoint_and_a_torn_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL mid-round: no run_end, the checkpoint still says running, the trace's last line
    may be cut short. Simulated by copying the trace as round 2 starts and the checkpoint as
    round 1's write lands."""
    full, _ = await uninterrupted(tmp_path / "full.jsonl")
    trace, kept = tmp_path / "run.jsonl", tmp_path / "kept"
    kept.mkdir()

    def snapshot(event: dict[str, Any]) -> None:
        if event["event"] == "round_start" and event["round"] == 2:
            shutil.copy(trace, kept / trace.name)

    def landed(cp: Checkpoint, path: Path) -> None:
        if (cp.status, cp.state.round) == ("running", 1):
            shutil.copy(path, kept / path.name)

    after_each_checkpoint(monkeypatch, landed)

    script = agent_replies(range(1, 4))
    script["manager"] = [goal("goal 1"), *DECISIONS, final("ANSWER")]
    await swarm(ScriptedBackend(by_tag=script)).run("task", trace_path=trace, observers=[snapshot])
    dead = kept / trace.name
    lines = dead.read_text(encoding="utf-8").splitlines()
    dead.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:15], encoding="utf-8")  # torn
    cp = read_checkpoint(checkpoint_path(dead))
    assert (cp.status, cp.state.round) == ("running", 1)

    moved = cp.model_copy(update={"trace_path": str(dead)})  # as if it had run in `kept`
    write_checkpoint(moved, checkpoint_path(dead))
    resumed = await swarm(rest_of_run()).resume(dead)
    assert comparable(resumed) == comparable(full)
    events = read_trace(dead)
    assert [e["event"] for e in events].count("run_resumed") == 1
    assert [e["round"] for e in events if e["event"] == "round_end"] == [1, 2, 3]


async def test_a_run_killed_after_its_halting_round_finishes_without_a_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace, kept = tmp_path / "run.jsonl", tmp_path / "kept.checkpoint.json"

    def landed(cp: Checkpoint, path: Path) -> None:
        if (cp.status, cp.state.round) == ("running", 1):  # killed before its run_end
            shutil.copy(path, kept)

    after_each_checkpoint(monkeypatch, landed)
    script = agent_replies(range(1, 2))
    script["manager"] = [goal("goal 1"), decision(True, "HALTED ANSWER")]
    await swarm(ScriptedBackend(by_tag=script)).run("task", trace_path=trace)
    assert read_checkpoint(kept).status == "running"
    nothing = ScriptedBackend()
    result = await swarm(nothing).resume(read_checkpoint(kept), trace_path=tmp_path / "t2.jsonl")
    assert nothing.requests == []
    assert (result.final_answer, result.halt_reason, len(result.rounds)) == (
        "HALTED ANSWER",
        "manager",
        1,
    )


async def test_a_run_that_died_in_its_opening_resumes_from_the_start(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    with pytest.raises(RunError):
        await swarm(ScriptedBackend(by_tag={"manager": [GONE]})).run("task", trace_path=trace)
    cp = read_checkpoint(checkpoint_path(trace))
    assert (cp.status, cp.state.round, cp.state.goal) == ("failed", 0, None)
    full, _ = await uninterrupted(tmp_path / "full.jsonl")
    script = agent_replies(range(1, 4))
    script["manager"] = [goal("goal 1"), *DECISIONS, final("ANSWER")]
    resumed = await swarm(ScriptedBackend(by_tag=script)).resume(trace)
    assert comparable(resumed) == comparable(full)


async def test_a_complete_run_or_another_swarm_is_refused(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    await uninterrupted(trace)
    with pytest.raises(ConfigError, match=r"^run \w+ is complete: nothing to resume"):
        await swarm(ScriptedBackend()).resume(trace)
    cp = read_checkpoint(checkpoint_path(trace)).model_copy(update={"status": "failed"})
    other = make_swarm(ScriptedBackend(), ["a", "b"])
    with pytest.raises(ConfigError, match=r"ran agents \['a', 'b', 'c'\], this swarm has"):
        await other.resume(cp)


async def test_a_run_id_is_found_in_runs_and_named_in_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    script = agent_replies(range(1, 3))
    script["manager"] = [goal("goal 1"), DECISIONS[0], GONE]
    with pytest.raises(RunError) as info:
        await swarm(ScriptedBackend(by_tag=script)).run("task", trace_path="runs/x.jsonl")
    run_id = info.value.partial.run_id
    assert str(info.value).endswith(f"continue it with: dytopo resume {run_id}")
    assert find_checkpoint(run_id) == Path("runs/x.checkpoint.json")
    assert find_checkpoint("runs/x.jsonl") == Path("runs/x.checkpoint.json")
    result = await swarm(rest_of_run()).resume(run_id)
    assert len(result.rounds) == 3
    with pytest.raises(ConfigError, match="no run 'nope' in runs/"):
        find_checkpoint("nope")


async def test_a_run_without_a_trace_writes_no_checkpoint_and_names_no_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    script = agent_replies(range(1, 3))
    script["manager"] = [goal("goal 1"), DECISIONS[0], GONE]
    with pytest.raises(RunError) as info:
        await swarm(ScriptedBackend(by_tag=script)).run("task")
    assert "dytopo resume" not in str(info.value)
    assert names(tmp_path) == []


# --- the checkpoint file ----------------------------------------------------------------------


async def test_the_checkpoint_is_replaced_whole_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = tmp_path / "run.jsonl"
    seen: list[tuple[str, int, str | None]] = []

    def landed(_: Checkpoint, path: Path) -> None:
        cp = read_checkpoint(path)  # the whole file, as each write leaves it
        seen.append((cp.status, cp.state.round, cp.state.goal))

    after_each_checkpoint(monkeypatch, landed)
    script = agent_replies(range(1, 4))
    script["manager"] = [goal("goal 1"), *DECISIONS, final("ANSWER")]
    await swarm(ScriptedBackend(by_tag=script)).run("task", trace_path=trace)
    assert seen == [
        ("running", 0, None),  # started
        ("running", 0, "goal 1"),  # opened
        ("running", 1, "goal 2"),
        ("running", 2, "goal 3"),
        ("running", 3, "goal 4"),
        ("complete", 3, "goal 4"),
    ]
    assert names(tmp_path) == ["run.checkpoint.json", "run.jsonl"]
    cp = read_checkpoint(checkpoint_path(trace))
    assert cp.status == "complete"
    assert cp.state.round == 3
    assert cp.trace_path == str(trace)
    assert cp.versions["python"]
    json.loads(checkpoint_path(trace).read_text(encoding="utf-8"))  # plain JSON


async def test_a_lone_surrogate_and_a_nan_survive_the_trace_and_the_checkpoint(
    tmp_path: Path,
) -> None:
    async def odd(ctx: StepContext) -> AgentOutput:
        raise RuntimeError("half a pair: \ud800")  # a plug-in's error text, kept as is

    script = {"a": [step("p", "A", "q", "k")] * 2, "manager": [goal("go"), DECISIONS[0], GONE]}
    trace = tmp_path / "run.jsonl"
    built = make_swarm(
        ScriptedBackend(by_tag=script), ["a"], extra=[FunctionAgent("odd", odd)], min_rounds=1
    )
    with pytest.raises(RunError, match="server gone"):
        await built.run("task", trace_path=trace)
    outputs = [e for e in read_trace(trace) if e["event"] == "agent_output"]
    assert outputs[1]["error"] == "RuntimeError: half a pair: \ud800"
    cp = read_checkpoint(checkpoint_path(trace))
    assert cp.state.rounds[0].steps[1].error == "RuntimeError: half a pair: ?"
    nan = cp.state.rounds[0].routing.model_copy(update={"similarity": [[float("nan")]]})
    cp.state.rounds[0].routing = nan
    write_checkpoint(cp, tmp_path / "nan.checkpoint.json")
    again = read_checkpoint(tmp_path / "nan.checkpoint.json")
    assert math.isnan(again.state.rounds[0].routing.similarity[0][0])
    assert again.state.memory == cp.state.memory


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "not a DyTopo checkpoint"),
        (b'{"format": 2}', "format"),
        (b"\xff\xfe", "not a DyTopo checkpoint"),
    ],
)
def test_an_unreadable_checkpoint_is_one_config_error_line(
    tmp_path: Path, content: bytes, why: str
) -> None:
    path = tmp_path / "x.checkpoint.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        read_checkpoint(path)
    assert why in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="no such file"):
        read_checkpoint(tmp_path / "missing.checkpoint.json")


def test_changed_fields_are_named_with_short_values() -> None:
    old = {"routing": {"tau": 0.5, "mode": "random"}, "agents": [{"id": "a"}], "task": "x" * 50}
    new = {"routing": {"tau": 0.4, "mode": "random"}, "agents": [{"id": "b"}], "task": "y" * 50}
    assert changed_fields(old, new) == [
        "agents[0].id ('a' -> 'b')",
        "routing.tau (0.5 -> 0.4)",
        "task",
    ]
    assert changed_fields(old, old) == []


# --- dytopo.resume: the topology file ---------------------------------------------------------


TOPOLOGY = """\
name: t
# a comment
routing: {mode: random, tau: 0.5}
max_rounds: 3
min_rounds: 1
seed: 11
structured_reasks: 1
agents:
  - {id: a, card: researcher}
  - {id: b, card: analyst}
  - {id: c, card: writer}
"""


@pytest.fixture
def from_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, list[ScriptedBackend]]:
    """A topology file, and `dytopo.resume` building its swarm on scripted backends."""
    path = tmp_path / "t.yaml"
    path.write_text(TOPOLOGY, encoding="utf-8")
    backends: list[ScriptedBackend] = []

    @asynccontextmanager
    async def scripted(topology: Any, *args: Any) -> AsyncIterator[Swarm]:
        backend = rest_of_run()
        backends.append(backend)
        yield runner.build_swarm(topology, backend, HashEmbedder(), source=args[4])

    monkeypatch.setattr(runner, "_built", scripted)
    return path, backends


async def stopped_run(path: Path, trace: Path) -> None:
    script = agent_replies(range(1, 3))
    script["manager"] = [goal("goal 1"), DECISIONS[0], GONE]
    built = await runner.load_swarm(
        path, backend=ScriptedBackend(by_tag=script), embedder=HashEmbedder()
    )
    with pytest.raises(RunError):
        await built.run("task", trace_path=trace)


async def test_resume_rebuilds_the_swarm_from_the_unchanged_topology_file(
    tmp_path: Path, from_file: tuple[Path, list[ScriptedBackend]]
) -> None:
    path, backends = from_file
    trace = tmp_path / "run.jsonl"
    await stopped_run(path, trace)
    cp = read_checkpoint(checkpoint_path(trace))
    assert cp.topology_path == str(path.resolve())
    assert cp.topology is not None
    assert cp.topology["routing"]["tau"] == 0.5
    path.write_text(TOPOLOGY.replace("# a comment", "# another comment"), encoding="utf-8")
    result = await aresume(trace)
    assert len(result.rounds) == 3
    backends[0].assert_complete()
    resumed = next(e for e in read_trace(trace) if e["event"] == "run_resumed")
    assert resumed["forced"] is False


async def test_a_changed_topology_file_is_refused_naming_the_change_unless_forced(
    tmp_path: Path, from_file: tuple[Path, list[ScriptedBackend]]
) -> None:
    path, backends = from_file
    trace = tmp_path / "run.jsonl"
    await stopped_run(path, trace)
    path.write_text(TOPOLOGY.replace("tau: 0.5", "tau: 0.45"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        await aresume(trace)
    message = str(info.value)
    assert "\n" not in message
    assert f"{path.resolve()} changed since run" in message
    assert "routing.tau (0.5 -> 0.45)" in message
    assert "--force" in message
    assert backends == []  # refused before any server was asked

    result = await aresume(trace, force=True)
    assert result.rounds[-1].routing.tau == 0.45
    resumed = next(e for e in read_trace(trace) if e["event"] == "run_resumed")
    assert resumed["forced"] is True
    assert read_checkpoint(checkpoint_path(trace)).topology_sha256 is not None


async def test_a_swarm_built_in_python_is_resumed_in_python_only(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    script = agent_replies(range(1, 3))
    script["manager"] = [goal("goal 1"), DECISIONS[0], GONE]
    with pytest.raises(RunError):
        await swarm(ScriptedBackend(by_tag=script)).run("task", trace_path=trace)
    with pytest.raises(ConfigError, match="not built from a topology file"):
        await aresume(trace)


async def test_an_interrupted_run_keeps_what_its_unfinished_round_spent_on_the_token_cap(
    tmp_path: Path,
) -> None:
    script = agent_replies(range(1, 3))
    for tag in ("b", "c"):  # round 2: a finishes, b and c hang until cancelled
        script[tag][1] = Reply(content=script[tag][1], delay_s=60)
    script["manager"] = [goal("goal 1"), DECISIONS[0]]
    trace = tmp_path / "run.jsonl"
    a_done = asyncio.Event()

    def watch(event: dict[str, Any]) -> None:
        key = (event["event"], event.get("round"), event.get("agent"), event.get("state"))
        if key == ("agent_state", 2, "a", "done"):
            a_done.set()

    backend = ScriptedBackend(by_tag=script)
    team = make_swarm(
        backend, IDS, routing=RANDOM, max_rounds=3, min_rounds=1, seed=11, run_token_budget=10**6
    )
    run = asyncio.create_task(team.run("task", trace_path=trace, observers=[watch]))
    await a_done.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    stopped = read_checkpoint(checkpoint_path(trace))
    assert (stopped.status, stopped.state.round) == ("interrupted", 1)
    spent = backend.usage.prompt_tokens + backend.usage.completion_tokens
    assert stopped.state.meter is not None
    # Round 1's tokens and a's round-2 step: a resume must not spend the latter again.
    assert stopped.state.meter.used == spent
