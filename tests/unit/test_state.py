"""RunState: everything a run continues from, as JSON and back without loss."""

from __future__ import annotations

import json
import random

from dytopo.agents.base import StepContext
from dytopo.agents.manager import PublicMessage
from dytopo.agents.memory import MemoryItem
from dytopo.agents.structured import Attempt
from dytopo.backends.types import Usage
from dytopo.swarm.recorder import Recorder
from dytopo.swarm.state import Ledger, MeterState, RunState, dump_rng, load_rng
from dytopo.swarm.trace import Trace


def test_the_rng_state_survives_json_and_continues_the_same_sequence() -> None:
    rng = random.Random(7)
    rng.random()
    saved = json.loads(json.dumps(dump_rng(rng)))
    restored = load_rng(saved)
    assert [rng.random() for _ in range(5)] == [restored.random() for _ in range(5)]
    assert restored.sample(range(100), 10) == rng.sample(range(100), 10)


def test_a_state_survives_json_unchanged() -> None:
    state = RunState.begin("r1", "task", ["a", "b"], seed=3)
    state.round, state.goal = 2, "next goal"
    state.memory["a"].append(MemoryItem(round=1, kind="private", source="b", text="x", score=0.4))
    state.transcript.append(PublicMessage(round=1, agent="a", text="hello"))
    state.ledger.charge("a", 1, Usage(prompt_tokens=10, completion_tokens=5), reasked=True)
    state.ledger.count("ladder", {"kind": "structured", "ok": False})
    state.meter = MeterState(used=15, refused="")
    state.manager = {"notes": ["kept"]}
    again = RunState.model_validate_json(state.model_dump_json())
    assert again == state
    assert again.ledger.by_round == {1: Usage(prompt_tokens=10, completion_tokens=5)}
    assert again.ledger.stats["structured_malformed"] == 1
    assert load_rng(again.rng).random() == random.Random(3).random()


def test_a_new_state_starts_before_the_opening() -> None:
    state = RunState.begin("r1", "task", ["a", "b"], seed=0)
    assert (state.round, state.goal, state.rounds, state.halted) == (0, None, [], None)
    assert state.memory == {"a": [], "b": []}
    assert state.routing_history == []


def test_the_recorder_charges_agent_and_round_and_counts_reasks_and_events() -> None:
    ledger = Ledger()
    trace = Trace("r1")
    seen: list[dict[str, object]] = []
    trace.observers.append(seen.append)
    recorder = Recorder(trace, ledger, "task")
    ctx: StepContext = recorder.context(2, "a", goal="g")
    ctx.record_attempt(Attempt(attempt=1, temperature=0.7, ok=False, error="bad"))
    ctx.record_attempt(Attempt(attempt=2, temperature=0.1, ok=True))
    ctx.event("tool_call", ok=False)
    ctx.usage = Usage(prompt_tokens=100, completion_tokens=20, requests=2)
    recorder.charge("a", ctx)
    assert ledger.usage == ctx.usage
    assert ledger.by_agent == {"a": ctx.usage}
    assert ledger.by_round == {2: ctx.usage}
    assert ledger.reasks == 1
    assert dict(ledger.stats) == {
        "structured_attempts": 2,
        "structured_malformed": 1,
        "tool_calls": 1,
        "tool_errors": 1,
    }
    assert [(e["event"], e["round"], e["agent"]) for e in seen] == [
        ("ladder", 2, "a"),
        ("ladder", 2, "a"),
        ("tool_call", 2, "a"),
    ]
    assert ledger.tokens == 120
