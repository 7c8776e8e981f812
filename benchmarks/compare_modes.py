"""Run one topology in several routing modes, side by side on one server, and tabulate.

    .venv/bin/python benchmarks/compare_modes.py topologies/research.yaml \
        --modes dynamic broadcast --repeats 1 --out benchmarks/RESULTS.md

Modes run interleaved (dynamic, broadcast, dynamic, broadcast, ...) on the same server so that
machine noise hits them alike; report ratios, not absolute seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time
from pathlib import Path

from dytopo.loader import load_topology
from dytopo.logs import configure_logging
from dytopo.managed.resolve import endpoints
from dytopo.result import RunResult
from dytopo.runner import run_topology


async def bench(
    path: Path, modes: list[str], repeats: int, task: str | None, rounds: int | None
) -> dict[str, list[RunResult]]:
    topology = load_topology(path)
    results: dict[str, list[RunResult]] = {m: [] for m in modes}
    async with endpoints() as ends:
        for r in range(repeats):
            for mode in modes:
                update: dict[str, object] = {
                    "routing": topology.routing.model_copy(update={"mode": mode})
                }
                if rounds:
                    update |= {"max_rounds": rounds, "min_rounds": min(rounds, topology.min_rounds)}
                variant = topology.model_copy(update=update)
                trace = Path("runs") / f"bench-{topology.name}-{mode}-{r}.jsonl"
                result = await run_topology(
                    variant,
                    task,
                    backend_url=ends.chat_url,
                    embed_url=ends.embed_url,
                    trace_path=trace,
                    base_dir=path.parent,
                )
                results[mode].append(result)
                print(
                    f"{mode:9} run {r}: rounds={len(result.rounds)} "
                    f"tokens={result.usage.prompt_tokens + result.usage.completion_tokens} "
                    f"wall={result.wall_s:.1f}s halt={result.halt_reason}",
                    flush=True,
                )
    return results


def table(name: str, results: dict[str, list[RunResult]]) -> str:
    base = results[next(iter(results))]
    base_tokens = statistics.mean(r.usage.prompt_tokens + r.usage.completion_tokens for r in base)
    base_wall = statistics.mean(r.wall_s for r in base)
    lines = [
        f"### {name}: {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{len(base)} run(s) per mode, embedded SmolLM2-135M",
        "",
        "| mode | rounds | edges/round | prompt tok | generated tok | requests | wall s "
        "| tokens vs first | wall vs first |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mode, runs in results.items():
        rounds = statistics.mean(len(r.rounds) for r in runs)
        edges = statistics.mean(
            statistics.mean(len(x.routing.edges) for x in r.rounds) if r.rounds else 0 for r in runs
        )
        prompt = statistics.mean(r.usage.prompt_tokens for r in runs)
        generated = statistics.mean(r.usage.completion_tokens for r in runs)
        requests = statistics.mean(r.usage.requests for r in runs)
        wall = statistics.mean(r.wall_s for r in runs)
        lines.append(
            f"| {mode} | {rounds:.1f} | {edges:.1f} | {prompt:.0f} | {generated:.0f} | "
            f"{requests:.0f} | {wall:.1f} | {(prompt + generated) / base_tokens:.2f} | "
            f"{wall / base_wall:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("topology", type=Path)
    parser.add_argument("--modes", nargs="+", default=["dynamic", "broadcast"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--task", default=None)
    parser.add_argument("--out", type=Path, default=None, help="Append the table here.")
    args = parser.parse_args()
    configure_logging("warning")
    results = asyncio.run(bench(args.topology, args.modes, args.repeats, args.task, args.rounds))
    text = table(load_topology(args.topology).name, results)
    print(text)
    if args.out:
        with args.out.open("a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
