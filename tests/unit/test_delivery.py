"""Delivery (ALGORITHM.md step 5) as a pure function: no swarm, no event loop."""

from __future__ import annotations

from dytopo.agents.base import AgentOutput
from dytopo.agents.memory import MemoryItem
from dytopo.routing.router import Edge, Routing
from dytopo.swarm.delivery import deliver, forward
from dytopo.swarm.state import RunState


def out(name: str) -> AgentOutput:
    return AgentOutput(public=f"{name} pub", private=f"{name} PRIV", query="q", key="k")


def routing(order: list[str], edges: list[tuple[str, str, float]]) -> Routing:
    return Routing(
        mode="dynamic",
        agents=sorted(order),
        similarity=[],
        tau=0.5,
        edges=[Edge(source=s, target=t, score=w) for s, t, w in edges],
        order=order,
        acyclic=True,
    )


def state(agents: list[str]) -> RunState:
    return RunState.begin("run1", "task", agents, seed=0)


def texts(items: list[MemoryItem]) -> list[str]:
    return [m.text for m in items]


def test_each_agent_gets_its_public_then_incoming_private_in_sigma_order() -> None:
    before = state(["a", "b", "c", "d"])
    # sigma puts c before a; d's incoming messages arrive in sigma order, not edge order.
    r = routing(["c", "a", "b", "d"], [("a", "d", 0.9), ("c", "d", 0.6), ("a", "b", 0.7)])
    outputs = {i: out(i) for i in "abcd"}
    after, deliveries = deliver(before, 1, r, outputs)
    assert texts(after.memory["d"]) == ["d pub", "c PRIV", "a PRIV"]
    assert texts(after.memory["b"]) == ["b pub", "a PRIV"]
    assert texts(after.memory["a"]) == ["a pub"]  # no incoming edge: only its own report
    assert [(m.kind, m.source, m.score) for m in after.memory["d"]] == [
        ("own", "d", None),
        ("private", "c", 0.6),
        ("private", "a", 0.9),
    ]
    assert [(m.agent, m.text) for m in after.transcript] == [
        ("c", "c pub"),
        ("a", "a pub"),
        ("b", "b pub"),
        ("d", "d pub"),
    ]
    assert [(d.source, d.target, d.phase) for d in deliveries] == [
        ("a", "b", "after_round"),
        ("c", "d", "after_round"),
        ("a", "d", "after_round"),
    ]


def test_delivery_changes_nothing_it_was_given() -> None:
    before = state(["a", "b"])
    before.memory["a"].append(MemoryItem(round=1, kind="own", source="a", text="old"))
    snapshot = before.model_dump()
    r = routing(["a", "b"], [("a", "b", 0.8)])
    after, _ = deliver(before, 2, r, {"a": out("a"), "b": out("b")})
    assert before.model_dump() == snapshot
    assert texts(after.memory["a"]) == ["old", "a pub"]
    assert after.ledger is before.ledger  # the rest of the state is shared, not copied
    assert after.round == before.round


def test_an_agent_that_failed_its_step_gets_nothing() -> None:
    before = state(["a", "b"])
    r = routing(["a"], [])  # b failed: it is not in the round's graph
    after, deliveries = deliver(before, 1, r, {"a": out("a")})
    assert after.memory["b"] == []
    assert [m.agent for m in after.transcript] == ["a"]
    assert deliveries == []


def test_messages_read_within_the_round_are_not_delivered_twice() -> None:
    before = state(["a", "b", "c"])
    r = routing(["a", "c", "b"], [("a", "b", 0.8), ("c", "b", 0.6)])
    outputs = {i: out(i) for i in "abc"}
    early = forward(1, "a", outputs["a"], r.edges)  # tiered: b read a's message in round 1
    assert list(early) == ["b"]
    after, deliveries = deliver(before, 1, r, outputs, {"b": [early["b"]]})
    assert texts(after.memory["b"]) == ["b pub", "a PRIV", "c PRIV"]
    assert [(d.source, d.phase, d.score) for d in deliveries] == [
        ("a", "same_round", 0.8),
        ("c", "after_round", 0.6),
    ]


def test_forward_follows_only_the_senders_edges() -> None:
    edges = [Edge(source="a", target="b", score=0.7), Edge(source="c", target="a", score=0.5)]
    sent = forward(3, "a", out("a"), edges)
    assert sent == {"b": MemoryItem(round=3, kind="private", source="a", text="a PRIV", score=0.7)}
    assert forward(3, "b", out("b"), edges) == {}
