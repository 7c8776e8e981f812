"""Delivery (ALGORITHM.md step 5) as pure functions: routing + outputs + state -> new state.

Nothing here awaits or changes its inputs, so delivery is tested without a swarm or an event
loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dytopo.agents.base import AgentOutput
from dytopo.agents.manager import PublicMessage
from dytopo.agents.memory import MemoryItem
from dytopo.routing.router import Edge, Routing
from dytopo.swarm.result import Delivery
from dytopo.swarm.state import RunState


def deliver(
    state: RunState,
    round: int,
    routing: Routing,
    outputs: Mapping[str, AgentOutput],
    same_round: Mapping[str, Sequence[MemoryItem]] | None = None,
) -> tuple[RunState, list[Delivery]]:
    """In sigma order, every routed agent's H_i gets its own public message, then the private
    messages it already read this round (`tiered`), then its incoming private messages in sigma
    order of their senders. The public message joins the transcript.

    Returns the new state (memory and transcript replaced, the rest shared) and the deliveries.
    """
    same_round = same_round or {}
    memory = {agent: list(items) for agent, items in state.memory.items()}
    transcript = list(state.transcript)
    position = {a: k for k, a in enumerate(routing.order)}
    edges_to: dict[str, list[Edge]] = {}  # one pass: a dense round has n^2 edges
    for e in routing.edges:
        edges_to.setdefault(e.target, []).append(e)
    deliveries: list[Delivery] = []
    for agent in routing.order:
        public = outputs[agent].public
        memory[agent].append(MemoryItem(round=round, kind="own", source=agent, text=public))
        transcript.append(PublicMessage(round=round, agent=agent, text=public))
        early = list(same_round.get(agent, []))
        memory[agent] += early
        deliveries += [
            Delivery(source=m.source, target=agent, score=m.score or 0.0, phase="same_round")
            for m in early
        ]
        already = {m.source for m in early}
        incoming = [e for e in edges_to.get(agent, []) if e.source not in already]
        for e in sorted(incoming, key=lambda e: position[e.source]):
            memory[agent].append(_private(round, e, outputs[e.source]))
            deliveries.append(Delivery(source=e.source, target=agent, score=e.score))
    return state.model_copy(update={"memory": memory, "transcript": transcript}), deliveries


def forward(
    round: int, sender: str, output: AgentOutput, edges: Sequence[Edge]
) -> dict[str, MemoryItem]:
    """`tiered` execution: the private message `sender` hands, within the round, to each agent
    its edges lead to (in a later tier)."""
    return {e.target: _private(round, e, output) for e in edges if e.source == sender}


def _private(round: int, edge: Edge, output: AgentOutput) -> MemoryItem:
    return MemoryItem(
        round=round, kind="private", source=edge.source, text=output.private, score=edge.score
    )
