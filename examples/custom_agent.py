"""A plain-Python agent in a swarm of LLM agents.

The `Librarian` below calls no model: it answers every round from a small dictionary, and its
offer (`key`) names what it has, so the router connects it to the agents that need it.

    .venv/bin/python examples/custom_agent.py

`explain` takes any backend and embedder: run as a script it gets the configured server (or the
embedded one); tests/unit/test_examples.py runs it on a scripted backend.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import dytopo
from dytopo import AgentOutput, LLMAgent, LLMManager, RunResult, StepContext, Swarm, load_card

TASK = "Explain LRU vs LFU cache eviction in three sentences."
FACTS = {
    "lru": "LRU evicts the entry unused for the longest time; O(1) with a hash map + list.",
    "lfu": "LFU evicts the least frequently used entry; needs counters and ageing.",
}


class Librarian(dytopo.Agent):
    async def step(self, ctx: StepContext) -> AgentOutput:
        found = [fact for word, fact in FACTS.items() if word in ctx.task.lower()]
        return AgentOutput(
            public=f"Librarian: {len(found)} reference facts available.",
            private="\n".join(found) or "No reference facts for this task.",
            query="Which cache eviction policy questions are still open?",
            key="Reference facts about LRU and LFU cache eviction policies.",
        )


async def explain(
    backend: dytopo.Backend,
    embedder: dytopo.Embedder,
    task: str = TASK,
    trace_path: Path = Path("runs/custom_agent.jsonl"),
) -> RunResult:
    """One run of the librarian, an analyst and a writer on `task`."""
    swarm = Swarm(
        agents=[
            Librarian("librarian"),
            LLMAgent("analyst", load_card("analyst"), backend),
            LLMAgent("writer", load_card("writer"), backend),
        ],
        manager=LLMManager(load_card("manager"), backend),
        embedder=embedder,
        max_rounds=2,
    )
    return await swarm.run(task, trace_path=trace_path)


async def main() -> None:
    dytopo.configure_logging("warning")
    async with dytopo.connect() as (backend, embedder):
        result = await explain(backend, embedder)
    for record in result.rounds:
        edges = [(e.source, e.target, round(e.score, 2)) for e in record.routing.edges]
        print(f"round {record.round}: edges {edges}")
    print("final answer:", result.final_answer)


if __name__ == "__main__":
    asyncio.run(main())
