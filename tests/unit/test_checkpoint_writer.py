"""The checkpoint writer: it works on its own thread while the next round runs, takes the writes
in order (a slow early write never lands after the run's final status), and a run that ends,
fails or is cancelled returns only once its last status is on disk."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import decision, final, goal, make_swarm, step

from dytopo.agents.base import AgentOutput, FunctionAgent, StepContext
from dytopo.agents.memory import MemoryItem
from dytopo.errors import BackendUnavailable, RunError
from dytopo.swarm import checkpoint as checkpoint_module
from dytopo.swarm._checkpoint_json import StateEncoder
from dytopo.swarm.checkpoint import Checkpoint, Checkpointer, checkpoint_path, read_checkpoint
from dytopo.swarm.loop import Swarm
from dytopo.swarm.result import RunResult
from dytopo.swarm.state import RunState
from dytopo.testing import ScriptedBackend

GONE = BackendUnavailable("server gone after 6 attempts", url="scripted://")


def script(rounds: int, manager: list[Any]) -> ScriptedBackend:
    replies = {
        "a": [step(f"a {t}", f"A{t}", "unit tests", "benchmarks") for t in range(1, rounds + 1)],
        "b": [step(f"b {t}", f"B{t}", "benchmarks", "unit tests") for t in range(1, rounds + 1)],
    }
    return ScriptedBackend(by_tag={**replies, "manager": manager})


def two_rounds() -> ScriptedBackend:
    return script(2, [goal("g1"), decision(False, goal_next="g2"), decision(False), final("F")])


def team(backend: ScriptedBackend, *extra: FunctionAgent, rounds: int = 2) -> Swarm:
    return make_swarm(backend, ["a", "b"], extra=extra, max_rounds=rounds, min_rounds=rounds)


def writes(monkeypatch: pytest.MonkeyPatch, slow_s: float) -> list[tuple[str, int]]:
    """Every `running` write takes `slow_s` longer; returns the (status, round) of each write
    in the order they land."""
    real, landed = checkpoint_module.write_checkpoint, []

    def write(cp: Checkpoint, path: Path, *encoder: Any) -> None:
        if cp.status == "running":
            time.sleep(slow_s)
        real(cp, path, *encoder)
        landed.append((cp.status, cp.state.round))

    monkeypatch.setattr(checkpoint_module, "write_checkpoint", write)
    return landed


def on_disk(trace: Path) -> tuple[str, int]:
    cp = read_checkpoint(checkpoint_path(trace))
    return cp.status, cp.state.round


async def test_a_slow_earlier_write_never_lands_after_the_final_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landed = writes(monkeypatch, slow_s=0.05)
    trace = tmp_path / "run.jsonl"
    await team(two_rounds()).run("task", trace_path=trace)
    ran = [("running", 0), ("running", 0), ("running", 1), ("running", 2)]
    assert landed == [*ran, ("complete", 2)]
    assert on_disk(trace) == ("complete", 2)


async def test_a_failed_run_returns_with_failed_on_disk_after_slow_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landed = writes(monkeypatch, slow_s=0.05)
    trace = tmp_path / "run.jsonl"
    backend = script(2, [goal("g1"), decision(False, goal_next="g2"), GONE])
    with pytest.raises(RunError, match="continue it with: dytopo resume"):
        await team(backend).run("task", trace_path=trace)
    assert landed[-1] == ("failed", 1)
    assert on_disk(trace) == ("failed", 1)


async def test_a_cancelled_run_leaves_interrupted_on_disk_after_a_slow_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landed = writes(monkeypatch, slow_s=0.1)
    trace = tmp_path / "run.jsonl"
    started = asyncio.Event()

    async def waits(ctx: StepContext) -> AgentOutput:
        if ctx.round == 2:
            started.set()
            await asyncio.sleep(30)
        return AgentOutput(public="w", private="W", query="q", key="k")

    run = asyncio.create_task(
        team(two_rounds(), FunctionAgent("w", waits)).run("task", trace_path=trace)
    )
    await started.wait()  # round 1's write is still sleeping on the writer thread
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert landed[-2:] == [("running", 1), ("interrupted", 1)]
    assert on_disk(trace) == ("interrupted", 1)


async def test_the_next_round_starts_while_the_last_round_is_still_being_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Round 1's write waits until round 2's steps have started: a loop that waited on the
    disk would never get there (the write gives up after 5 s and the test fails)."""
    real = checkpoint_module.write_checkpoint
    round_2_started = threading.Event()
    waited: list[bool] = []
    trace, kept = tmp_path / "run.jsonl", tmp_path / "kept.checkpoint.json"

    def write(cp: Checkpoint, path: Path, *encoder: Any) -> None:
        if (cp.status, cp.state.round) == ("running", 1):
            waited.append(round_2_started.wait(timeout=5))
        real(cp, path, *encoder)

    async def marks(ctx: StepContext) -> AgentOutput:
        if ctx.round == 2:
            # Killed now, the run would leave this checkpoint: the opening (every write before
            # round 1's had landed), not round 1.
            shutil.copy(checkpoint_path(trace), kept)
            round_2_started.set()
        return AgentOutput(public="m", private="M", query="q", key="k")

    monkeypatch.setattr(checkpoint_module, "write_checkpoint", write)
    result = await team(two_rounds(), FunctionAgent("m", marks)).run("task", trace_path=trace)
    assert waited == [True]
    assert on_disk(trace) == ("complete", 2)
    lost = read_checkpoint(kept)
    assert (lost.status, lost.state.round, lost.state.goal) == ("running", 0, "g1")
    assert isinstance(result, RunResult)


async def test_each_checkpoint_holds_the_state_as_it_was_when_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot shares the state's records: nothing the run does later may reach them. And
    the JSON that reuses earlier writes' parts reads back as the whole state encoded afresh."""
    saved: list[dict[str, Any]] = []
    real_save = Checkpointer.save

    def save(self: Checkpointer, state: RunState) -> None:
        saved.append(state.model_dump(mode="json"))  # the state at the moment it is handed over
        real_save(self, state)

    landed: list[tuple[Checkpoint, bytes]] = []
    real_write = checkpoint_module.write_checkpoint

    def write(cp: Checkpoint, path: Path, *encoder: Any) -> None:
        time.sleep(0.03)  # the next round runs meanwhile, changing the live state
        real_write(cp, path, *encoder)
        landed.append((cp, path.read_bytes()))

    monkeypatch.setattr(Checkpointer, "save", save)
    monkeypatch.setattr(checkpoint_module, "write_checkpoint", write)
    await team(script(3, [goal("g1"), *[decision(False)] * 3, final("F")]), rounds=3).run(
        "task", trace_path=tmp_path / "run.jsonl"
    )
    running = [(cp, data) for cp, data in landed if cp.status == "running"]
    assert len(running) == len(saved) == 5  # start, opening, 3 rounds
    for (cp, data), state in zip(running, saved, strict=True):
        assert json.loads(data)["state"] == state
        afresh = json.loads(StateEncoder().encode(cp.state))
        assert json.loads(data)["state"] == afresh == cp.state.model_dump(mode="json")


def test_a_list_that_did_not_just_grow_is_encoded_afresh() -> None:
    item = MemoryItem(round=1, kind="own", source="a", text="first")
    state = RunState.begin("r", "task", ["a"], seed=0)
    encoder = StateEncoder()
    for memory in ([item, item.model_copy()], [item], [item.model_copy(update={"text": "new"})]):
        state.memory["a"] = memory
        assert json.loads(encoder.encode(state)) == state.model_dump(mode="json")
