"""A swarm defined in Python instead of YAML, compared across two routing modes.

.venv/bin/python examples/swarm_in_code.py
"""

from __future__ import annotations

import asyncio

import dytopo
from dytopo import LLMAgent, LLMManager, RoutingConfig, Swarm, load_card

TASK = "A shop sells pens at 3 for 2 euros. How much do 18 pens cost? Explain briefly."


async def main() -> None:
    dytopo.configure_logging("warning")
    async with dytopo.connect() as (backend, embedder):
        for mode in ("dynamic", "broadcast"):
            swarm = Swarm(
                agents=[
                    LLMAgent("parser", load_card("problem_parser"), backend),
                    LLMAgent("solver", load_card("solver"), backend),
                    LLMAgent("verifier", load_card("verifier"), backend),
                ],
                manager=LLMManager(load_card("manager"), backend),
                embedder=embedder,
                routing=RoutingConfig(mode=mode, tau=0.45),
                max_rounds=2,
            )
            result = await swarm.run(TASK, trace_path=f"runs/in_code_{mode}.jsonl")
            edges = sum(len(r.routing.edges) for r in result.rounds)
            print(
                f"{mode:9} rounds={len(result.rounds)} edges={edges} "
                f"tokens={result.usage.prompt_tokens + result.usage.completion_tokens} "
                f"wall={result.wall_s:.1f}s answer={result.final_answer[:80]!r}"
            )


if __name__ == "__main__":
    asyncio.run(main())
