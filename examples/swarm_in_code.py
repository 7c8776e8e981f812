"""A swarm defined in Python instead of YAML, compared across two routing modes.

.venv/bin/python examples/swarm_in_code.py

`compare_modes` takes any backend and embedder: run as a script it gets the configured server
(or the embedded one); tests/unit/test_examples.py runs it on a scripted backend.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

import dytopo
from dytopo import LLMAgent, LLMManager, RoutingConfig, RunResult, Swarm, load_card

TASK = "A shop sells pens at 3 for 2 euros. How much do 18 pens cost? Explain briefly."
Mode = Literal["dynamic", "broadcast"]
MODES: tuple[Mode, ...] = ("dynamic", "broadcast")


def make_swarm(backend: dytopo.Backend, embedder: dytopo.Embedder, mode: Mode) -> Swarm:
    return Swarm(
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


async def compare_modes(
    backend: dytopo.Backend, embedder: dytopo.Embedder, trace_dir: Path = Path("runs")
) -> dict[str, RunResult]:
    """Run the same task once per routing mode; each run writes its own trace."""
    results: dict[str, RunResult] = {}
    for mode in MODES:
        swarm = make_swarm(backend, embedder, mode)
        results[mode] = await swarm.run(TASK, trace_path=trace_dir / f"in_code_{mode}.jsonl")
    return results


async def main() -> None:
    dytopo.configure_logging("warning")
    async with dytopo.connect() as (backend, embedder):
        results = await compare_modes(backend, embedder)
    for mode, result in results.items():
        edges = sum(len(r.routing.edges) for r in result.rounds)
        print(
            f"{mode:9} rounds={len(result.rounds)} edges={edges} "
            f"tokens={result.usage.prompt_tokens + result.usage.completion_tokens} "
            f"wall={result.wall_s:.1f}s answer={result.final_answer[:80]!r}"
        )


if __name__ == "__main__":
    asyncio.run(main())
