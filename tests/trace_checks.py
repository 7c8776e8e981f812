"""Checks every trace must pass, shared by unit and integration tests.

Each check asserts; none returns a result a caller could forget to look at.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from typing import Any

Event = dict[str, Any]

# The events that give a round its shape, in the order the scheduler emits them.
ROUND_SHAPE = re.compile(
    r"round_start (agent_output )+routing (delivery )*(manager_decision |manager_fallback )?"
    r"round_end "
)
SHAPED = {"round_start", "agent_output", "routing", "delivery", "manager_decision", "round_end"}
HALT_REASONS = {"manager", "checked", "max_rounds", "budget", "error"}


def check_trace(events: list[Event], *, rounds: int) -> None:
    """A whole run's trace: framing, one shape per round, the routing rule, the accounting.

    `rounds` is the number of complete rounds the caller expects (RunResult.rounds).
    """
    assert events, "empty trace"
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_start", kinds[:3]
    assert kinds[-1] == "run_end", kinds[-3:]
    assert kinds.count("run_start") == kinds.count("run_end") == 1
    start, end = events[0], events[-1]
    assert {e["run_id"] for e in events} == {start["run_id"]}
    stamps = [e["ts"] for e in events]
    assert stamps == sorted(stamps), "timestamps go backwards"
    assert end["halt_reason"] in HALT_REASONS
    assert end["rounds"] == rounds
    assert ("error" in end) == (end["halt_reason"] == "error")

    started = [e["round"] for e in events if e["event"] == "round_start"]
    complete = [e["round"] for e in events if e["event"] == "round_end"]
    routed = [e["round"] for e in events if e["event"] == "routing"]
    assert complete == list(range(1, rounds + 1)), complete
    # Only a run that stopped on an error may leave one round unfinished.
    unfinished = [[*complete, rounds + 1]] if "error" in end else []
    assert started in [complete, *unfinished], started
    assert routed in [complete, started], routed
    if started:
        opening = kinds[: kinds.index("round_start")]
        assert "manager_goal" in opening or "manager_fallback" in opening

    active = 1 if start["mode"] == "single" else len(start["agents"])
    for t in complete:
        check_round(events, t, active)
    check_routing_invariants(events, rounds=len(routed))
    check_accounting(events)


def check_round(events: list[Event], t: int, active: int) -> None:
    """Round t has the scheduler's shape, and its graph covers exactly the agents that succeeded."""
    mine = [e for e in events if e.get("round") == t]
    shape = [
        e["event"]
        for e in mine
        if e["event"] in SHAPED or (e["event"] == "manager_fallback" and e["duty"] == "decide")
    ]
    assert ROUND_SHAPE.fullmatch(" ".join(shape) + " "), f"round {t}: {shape}"
    outputs = [e for e in mine if e["event"] == "agent_output"]
    assert len(outputs) == active, f"round {t}: {len(outputs)} agent outputs, {active} agents"
    routing = next(e for e in mine if e["event"] == "routing")
    assert routing["agents"] == [o["agent"] for o in outputs if o["ok"]]
    end = next(e for e in mine if e["event"] == "round_end")
    assert end["failed"] == [o["agent"] for o in outputs if not o["ok"]]
    assert end["edges"] == len(routing["edges"])
    for o in outputs:
        assert o["ok"] == (not o["error"]), o
        if o["ok"]:
            assert all(o[f] is not None for f in ("public", "private", "query", "key")), o
        # Every ladder rung of a step is in the trace before the step's output.
        position = events.index(o)
        rungs = [
            k
            for k, e in enumerate(events)
            if e["event"] == "ladder" and e.get("round") == t and e.get("agent") == o["agent"]
        ]
        assert all(k < position for k in rungs), f"round {t}: ladder after {o['agent']}'s output"
        if o["ok"]:
            assert len(rungs) == len(o["attempts"]), (o["agent"], len(rungs), o["attempts"])


def check_routing_invariants(events: list[Event], *, rounds: int) -> None:
    """Per routing event: an N x N matrix, sigma a permutation that respects an acyclic graph,
    the mode's edges (dynamic: exactly the pairs above tau), and deliveries matching the edges.
    `rounds` routing events are expected."""
    routings = [e for e in events if e["event"] == "routing"]
    assert [r["round"] for r in routings] == list(range(1, rounds + 1))
    for r in routings:
        agents, n = r["agents"], len(r["agents"])
        assert len(r["similarity"]) == n
        assert all(len(row) == n for row in r["similarity"])
        assert sorted(r["order"]) == sorted(agents)
        edges = [(e["source"], e["target"]) for e in r["edges"]]
        assert len(set(edges)) == len(edges), "duplicate edge"
        assert all(s != t and s in agents and t in agents for s, t in edges)
        for e in r["edges"]:  # the score is the measured similarity, in every mode
            i, j = agents.index(e["target"]), agents.index(e["source"])
            assert abs(e["score"] - r["similarity"][i][j]) < 1e-9
        assert set(edges) == expected_edges(r), f"round {r['round']} ({r['mode']}): {edges}"
        position = {a: k for k, a in enumerate(r["order"])}
        if r["acyclic"]:
            assert all(position[s] < position[t] for s, t in edges), "sigma is not topological"
        check_deliveries(events, r, position)


def expected_edges(r: Event) -> set[tuple[str, str]]:
    """The edge set the mode prescribes for this routing event (random: any subset)."""
    agents, n, sim = r["agents"], len(r["agents"]), r["similarity"]
    actual = {(e["source"], e["target"]) for e in r["edges"]}
    if r["mode"] == "dynamic":
        # The paper's rule; the top_k, max_in_degree and force_connect extensions are not modelled.
        if any(e.get("forced") for e in r["edges"]):
            return actual
        return {
            (agents[j], agents[i])
            for i in range(n)
            for j in range(n)
            if i != j and sim[i][j] > r["tau"]
        }
    if r["mode"] == "broadcast":
        return {(a, b) for a in agents for b in agents if a != b}
    if r["mode"] == "chain":
        return set(itertools.pairwise(agents))
    if r["mode"] == "star":
        hubs = [h for h in agents if {(h, a) for a in agents if a != h} <= actual]
        hub = hubs[0] if hubs else agents[0]
        return {(hub, a) for a in agents if a != hub} | {(a, hub) for a in agents if a != hub}
    if r["mode"] == "single":
        return set()
    return actual


def check_deliveries(events: list[Event], r: Event, position: dict[str, int]) -> None:
    """Every edge delivered once (same-round deliveries in tiered execution count), nothing
    delivered off an edge after the round, and deliveries made in sigma order of receivers."""
    edges = {(e["source"], e["target"]) for e in r["edges"]}
    mine = [d for d in events if d["event"] == "delivery" and d["round"] == r["round"]]
    pairs = Counter((d["from"], d["to"]) for d in mine)
    assert all(c == 1 for c in pairs.values()), f"round {r['round']}: delivered twice"
    after = {(d["from"], d["to"]) for d in mine if d.get("phase", "after_round") == "after_round"}
    same = {(d["from"], d["to"]) for d in mine if d.get("phase") == "same_round"}
    assert after <= edges
    assert edges <= after | same, f"round {r['round']}: edges not delivered {edges - after - same}"
    receivers = [position[d["to"]] for d in mine]
    assert receivers == sorted(receivers), f"round {r['round']}: not delivered in sigma order"


def check_accounting(events: list[Event]) -> None:
    """What run_end reports per agent is the sum of that agent's steps in the trace."""
    end = events[-1]
    steps: dict[str, Counter[str]] = {}
    for o in (e for e in events if e["event"] == "agent_output"):
        steps.setdefault(o["agent"], Counter()).update(o["usage"])
    for agent, usage in steps.items():
        reported = end["usage_by_agent"].get(agent, {})
        for field in ("prompt_tokens", "completion_tokens", "requests"):
            assert reported.get(field, 0) == usage[field], (agent, field, reported, usage)
    total = end["usage"]["requests"]
    assert total == sum(u["requests"] for u in end["usage_by_agent"].values())
    assert total >= sum(u["requests"] for u in steps.values())
