"""Packing a prompt grows linearly with an agent's memory: a long run (or a resumed one with a
large checkpoint) keeps thousands of entries, and packing them used to be quadratic (16,000
entries: 14 s for one step's prompt, on the event loop)."""

from __future__ import annotations

import json
import time

from helpers import card
from malformed import VALID_STEP

from dytopo.agents.base import StepContext
from dytopo.agents.llm import LLMAgent
from dytopo.agents.memory import MemoryItem
from dytopo.testing import ScriptedBackend

ENTRIES = 16_000
BOUND_S = 3.0
"""Generous: the quadratic packing took about 15 s here, the linear one well under 0.5 s."""


def memory(n: int) -> list[MemoryItem]:
    return [
        MemoryItem(round=k // 2 + 1, kind="private", source="peer", text=f"finding {k} " * 6)
        for k in range(n)
    ]


async def test_an_agent_with_16k_memory_entries_packs_its_prompt_in_linear_time() -> None:
    backend = ScriptedBackend([json.dumps(VALID_STEP)])
    agent = LLMAgent("writer", card("writer"), backend, max_output_tokens=300)
    ctx = StepContext(task="Compare LRU and LFU.", goal="g", round=2, memory=memory(ENTRIES))
    started = time.perf_counter()
    await agent.step(ctx)
    elapsed = time.perf_counter() - started
    backend.assert_complete()  # the prompt fitted the server's context
    assert len(ctx.dropped) > ENTRIES // 2  # most of the memory did not fit: it was packed
    assert len(set(ctx.dropped)) == len(ctx.dropped)  # each dropped entry named once
    assert elapsed < BOUND_S, f"packing {ENTRIES} entries took {elapsed:.1f} s"
