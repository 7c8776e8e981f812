"""Scheduler overhead: a real swarm on a simulated llama-server, against the ideal wall time.

    .venv/bin/python benchmarks/scheduler.py                      # 4, 16, 64 agents, 5 rounds
    .venv/bin/python benchmarks/scheduler.py --agents 16 --profile /tmp/sched.prof

A real dytopo Swarm (LLMAgent and LLMManager with the shipped role cards, dynamic routing with
the hashing embedder, a trace and checkpoints written to a temporary folder) runs on
dytopo.SimulatedBackend: N slots, FIFO, a per-token cost for prompt tokens past the slot's
cached prefix and for generated tokens, on the asyncio clock. No model, no network.

The ideal wall time is computed from what the simulator actually served (each request's
measured time in its slot). The run is a sequence of phases: each manager request alone, then
all agent requests of a round. A manager phase ideally takes its service time. An agent phase
ideally takes the makespan of its requests list-scheduled on N slots in the order the server
took them, each starting the moment a slot is free: a FIFO server with a client that never
keeps a slot waiting. (Every agent step here is one request: the simulated replies are always
valid.) `lower bound` is the stricter max(longest request, sum / N) per agent phase, which no
FIFO order need reach. wall/ideal - 1 is what the client adds: building and packing prompts,
validating replies, routing, delivery, trace and checkpoint writing, and the gaps in between.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import heapq
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common import machine_lines

from dytopo.agents.base import Agent
from dytopo.agents.cards import load_card
from dytopo.agents.llm import LLMAgent
from dytopo.agents.manager import LLMManager
from dytopo.backends.simulated import Served, SimulatedBackend
from dytopo.embedders import HashEmbedder
from dytopo.routing.config import RoutingConfig
from dytopo.swarm.loop import Swarm
from dytopo.swarm.result import RunResult

CARDS = ["researcher", "analyst", "critic", "writer", "developer", "tester", "designer", "solver"]
TASK = (
    "Design the caching layer for a read-heavy web service that serves product pages to about "
    "two million users a day. Decide what to cache, where (client, CDN, application, database), "
    "the eviction policy and sizes, how entries are invalidated when prices change, how to "
    "avoid a thundering herd on a cold start, and how to measure that it works. Give concrete "
    "numbers and name the trade-offs of each choice."
)


@dataclass(frozen=True)
class Phase:
    kind: str
    """`manager` or `agents`."""
    served: list[Served]


def phases(served: Sequence[Served]) -> list[Phase]:
    """The run's requests in the order slots took them, cut into manager and agent phases."""
    out: list[Phase] = []
    for s in sorted(served, key=lambda s: s.started_at):
        kind = "manager" if s.tag == "manager" else "agents"
        if kind == "agents" and out and out[-1].kind == "agents":
            out[-1].served.append(s)
        else:
            out.append(Phase(kind, [s]))
    return out


def list_schedule(durations: Sequence[float], slots: int) -> float:
    """Makespan of the durations started in order, each on the first slot to come free."""
    free = [0.0] * slots
    for d in durations:
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def ideal(run: Sequence[Phase], slots: int) -> tuple[float, float]:
    """(ideal, lower bound) wall seconds of the run's phases."""
    exact = bound = 0.0
    for phase in run:
        times = [s.service_s for s in phase.served]
        if phase.kind == "manager":
            exact += sum(times)
            bound += sum(times)
        else:
            exact += list_schedule(times, slots)
            bound += max(max(times), sum(times) / slots)
    return exact, bound


def swarm(n: int, backend: SimulatedBackend, rounds: int) -> Swarm:
    agents: list[Agent] = [
        LLMAgent(f"{CARDS[k % len(CARDS)]}{k}", load_card(CARDS[k % len(CARDS)]), backend)
        for k in range(n)
    ]
    manager = LLMManager(load_card("manager"), backend)
    return Swarm(
        agents,
        manager,
        HashEmbedder(),
        routing=RoutingConfig(mode="dynamic", tau=0.35),
        max_rounds=rounds,
        min_rounds=rounds,
    )


@dataclass
class Measured:
    agents: int
    traced: bool
    slots: int
    wall_s: float
    ideal_s: float
    bound_s: float
    requests: int
    edges: float
    """Mean edges per round."""
    cached: float
    """Share of prompt tokens the slots held."""
    gaps: dict[str, float]
    """Wall minus ideal, summed per phase kind (the time before a phase counts to it)."""


async def measure(
    n: int, slots: int, rounds: int, traced: bool, args: argparse.Namespace
) -> Measured:
    backend = SimulatedBackend(
        slots=slots,
        prompt_token_s=args.prompt_us * 1e-6,
        output_token_s=args.output_us * 1e-6,
        n_ctx_per_slot=args.ctx,
    )
    with tempfile.TemporaryDirectory() as folder:
        trace = Path(folder) / "run.jsonl" if traced else None
        team = swarm(n, backend, rounds)
        loop = asyncio.get_running_loop()
        started = loop.time()
        result: RunResult = await team.run(TASK, trace_path=trace)
        wall = loop.time() - started
    assert len(result.rounds) == rounds, result.halt_reason
    assert not result.failures, result.failures
    run = phases(backend.served)
    assert sum(p.kind == "agents" for p in run) == rounds
    exact, bound = ideal(run, slots)
    gaps = {"agents": 0.0, "manager": 0.0}
    previous_end = started
    for phase in run:
        end = max(s.ended_at for s in phase.served)
        phase_ideal = ideal([phase], slots)[0]
        gaps[phase.kind] += (end - previous_end) - phase_ideal
        previous_end = end
    gaps["end"] = started + wall - previous_end
    usage = backend.usage
    return Measured(
        agents=n,
        traced=traced,
        slots=slots,
        wall_s=wall,
        ideal_s=exact,
        bound_s=bound,
        requests=usage.requests,
        edges=statistics.mean(len(r.routing.edges) for r in result.rounds if r.routing),
        cached=usage.cached_tokens / max(1, usage.prompt_tokens),
        gaps=gaps,
    )


def table(rows: Sequence[Measured]) -> list[str]:
    lines = [
        "| agents | trace + checkpoints | slots | requests | edges/round | cached | wall s "
        "| ideal s | wall/ideal "
        "| lower bound s | wall/bound | gap before agent phases s | gap before manager s "
        "| after last s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in rows:
        lines.append(
            f"| {m.agents} | {'yes' if m.traced else 'no'} | {m.slots} | {m.requests} "
            f"| {m.edges:.1f} | {m.cached:.0%} "
            f"| {m.wall_s:.2f} | {m.ideal_s:.2f} | **{m.wall_s / m.ideal_s:.3f}** "
            f"| {m.bound_s:.2f} | {m.wall_s / m.bound_s:.3f} | {m.gaps['agents']:.3f} "
            f"| {m.gaps['manager']:.3f} | {m.gaps['end']:.3f} |"
        )
    return lines


async def main(args: argparse.Namespace) -> None:
    rows: list[Measured] = []
    for n in args.agents:
        for _, traced in itertools.product(range(args.repeats), (False, True)):
            m = await measure(n, args.slots, args.rounds, traced, args)
            print(
                f"{n} agents, traced {traced}: wall {m.wall_s:.2f}s ideal {m.ideal_s:.2f}s "
                f"ratio {m.wall_s / m.ideal_s:.3f}",
                file=sys.stderr,
                flush=True,
            )
            rows.append(m)
    print(f"Command: `.venv/bin/python {' '.join(sys.argv)}`\n")
    print(
        f"{args.rounds} rounds, {args.slots} simulated slots, {args.prompt_us:g} us per "
        f"uncached prompt token, {args.output_us:g} us per generated token, "
        f"{args.ctx} tokens per slot.\n"
    )
    print("\n".join(table(rows)))
    print("\nMachine:\n" + "\n".join(machine_lines()))


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--agents", type=int, nargs="+", default=[4, 16, 64])
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--prompt-us", type=float, default=20.0, help="per uncached prompt token")
    p.add_argument("--output-us", type=float, default=60.0, help="per generated token")
    p.add_argument("--ctx", type=int, default=8192, help="context tokens per slot")
    p.add_argument("--profile", type=Path, help="write a cProfile of the run(s) here")
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse()
    if arguments.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        t = time.perf_counter()
        asyncio.run(main(arguments))
        profiler.disable()
        profiler.dump_stats(arguments.profile)
        print(f"profile: {arguments.profile} ({time.perf_counter() - t:.1f}s)", file=sys.stderr)
    else:
        asyncio.run(main(arguments))
