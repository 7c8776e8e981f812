"""Client profile: where the client's own CPU time goes in one swarm run.

(Not named profile.py: that would hide the standard library's `profile`, which cProfile imports,
from every script in this folder.)

    .venv/bin/python benchmarks/client_profile.py                      # simulated, 16 agents
    .venv/bin/python benchmarks/client_profile.py --old /tmp/old-prof  # and old code, side by side
    .venv/bin/python benchmarks/client_profile.py --real --rounds 2    # research topology, real

Simulated (default): the swarm of benchmarks/scheduler.py (LLMAgents with the shipped role
cards, LLMManager, dynamic routing, hashing embedder) on dytopo.SimulatedBackend, with a trace
file, checkpoints and a trace observer, as `dytopo run` has them. Real: topologies/research.yaml
with min_rounds = max_rounds = --rounds on the embedded llama-server (started for the run).

Each version runs in a child process of its own (`--old PATH` puts PATH first on PYTHONPATH,
e.g. a `git worktree add /tmp/old-prof <commit>`), the versions alternating per repeat. Each
child runs once to warm up (simulated only), once measured (CPU time of the event-loop thread
and of the whole process, per round and per request), and once under cProfile (timed by the
event-loop thread's CPU clock) for the top entries. The event-loop thread's CPU is the client's
own cost on the critical path; the process adds the checkpoint writer thread. In a simulated
run both include the simulator's own work (dytopo/backends/simulated.py, listed in the top entries).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import cProfile

ROOT = Path(__file__).resolve().parent.parent
TOP = 25


class Meter:
    """Trace observer: CPU of the event-loop thread at each round's end, requests sent."""

    def __init__(self) -> None:
        self.requests = 0
        self.round_cpu: list[float] = []
        self.profiler: cProfile.Profile | None = None
        self.begin()

    def begin(self) -> None:
        """The run starts now (building the swarm or starting a server is not its cost)."""
        self.start, self.process_start = time.thread_time(), time.process_time()
        if self.profiler is not None:
            self.profiler.enable()

    def __call__(self, event: dict[str, Any]) -> None:
        if event["event"] == "ladder":
            self.requests += 1
        elif event["event"] == "round_end":
            self.round_cpu.append(time.thread_time())


async def simulated_run(args: argparse.Namespace, meter: Meter, folder: Path) -> None:
    from scheduler import TASK, swarm

    from dytopo.backends.simulated import SimulatedBackend

    backend = SimulatedBackend(
        slots=4, prompt_token_s=20e-6, output_token_s=60e-6, n_ctx_per_slot=8192
    )
    team = swarm(args.agents, backend, args.rounds)
    meter.begin()
    result = await team.run(TASK, trace_path=folder / "run.jsonl", observers=[meter])
    assert len(result.rounds) == args.rounds, result.halt_reason


async def real_run(args: argparse.Namespace, meter: Meter, folder: Path) -> None:
    from dytopo.budget.plan import plan_budgets, server_context
    from dytopo.loader import load_topology
    from dytopo.runner import connect
    from dytopo.swarm.build import build_swarm

    path = ROOT / "topologies" / "research.yaml"
    topology = load_topology(path).model_copy(
        update={"max_rounds": args.rounds, "min_rounds": args.rounds}
    )
    async with connect() as (backend, embedder):
        info = await backend.connect()
        plan = plan_budgets(
            topology, n_ctx=server_context(info.n_ctx_per_slot, info.slots, False), slots=info.slots
        )
        team = build_swarm(topology, backend, embedder, base_dir=path.parent, plan=plan)
        meter.begin()
        await team.run(topology.task or "", trace_path=folder / "run.jsonl", observers=[meter])


def run_once(args: argparse.Namespace, profiler: cProfile.Profile | None = None) -> dict[str, Any]:
    meter = Meter()
    meter.profiler = profiler  # enabled when the run starts
    with tempfile.TemporaryDirectory() as folder:
        body = real_run if args.real else simulated_run
        wall0 = time.perf_counter()
        asyncio.run(body(args, meter, Path(folder)))
        if profiler is not None:
            profiler.disable()
        loop_cpu = time.thread_time() - meter.start
        process_cpu = time.process_time() - meter.process_start
        wall = time.perf_counter() - wall0
    marks = [meter.start, *meter.round_cpu]
    return {
        "loop_cpu_s": loop_cpu,
        "process_cpu_s": process_cpu,
        "wall_s": wall,
        "requests": meter.requests,
        "round_cpu_s": [b - a for a, b in itertools.pairwise(marks)],
    }


def top_entries(profiler: cProfile.Profile, n: int = TOP) -> list[dict[str, Any]]:
    """The n entries with the most cumulative time, the event loop's wait (poll) left out."""
    import pstats

    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    rows = []
    for (file, line, name), (_, calls, own, cum, _) in stats.items():
        if name in ("<method 'poll' of 'select.epoll' objects>",) or "asyncio" in file:
            continue
        if file.endswith(("runners.py", "client_profile.py")) or name == "<module>":
            continue
        where = file.split("site-packages/")[-1].split("/work/main/")[-1]
        where = where.split("lib/python3.11/")[-1]
        rows.append(
            {
                "cum_ms": cum * 1e3,
                "own_ms": own * 1e3,
                "calls": calls,
                "fn": f"{where}:{line}({name})",
            }
        )
    rows.sort(key=lambda r: -r["cum_ms"])
    return rows[:n]


def child(args: argparse.Namespace) -> None:
    if not args.real:
        run_once(args)  # warm-up: imports, JSON schemas, caches
    measured = run_once(args)
    import cProfile

    # CPU time of this thread, not wall time: a slice lost to another process on a busy machine
    # would land on whatever function was running; waiting in epoll costs none.
    profiler = cProfile.Profile(time.thread_time)
    run_once(args, profiler)
    measured["top"] = top_entries(profiler)
    import dytopo

    measured["code"] = str(Path(dytopo.__file__).parent)
    print(json.dumps(measured))


def spawn(args: argparse.Namespace, pythonpath: str | None) -> dict[str, Any]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    command = [sys.executable, __file__, "--child", "--agents", str(args.agents)]
    command += ["--rounds", str(args.rounds)] + (["--real"] if args.real else [])
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child failed ({pythonpath or 'this checkout'}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def report(name: str, runs: Sequence[dict[str, Any]], rounds: int) -> list[str]:
    loop = [r["loop_cpu_s"] for r in runs]
    proc = [r["process_cpu_s"] for r in runs]
    requests = runs[0]["requests"]
    per_round = [statistics.mean(r["round_cpu_s"]) for r in runs]
    return [
        f"| {name} | {runs[0]['code']} | {requests} "
        f"| {', '.join(f'{x * 1e3:.0f}' for x in loop)} "
        f"| {', '.join(f'{x * 1e3:.0f}' for x in proc)} "
        f"| {', '.join(f'{x * 1e3:.1f}' for x in per_round)} "
        f"| **{statistics.median(loop) / requests * 1e3:.2f}** "
        f"| {statistics.median(proc) / requests * 1e3:.2f} |"
    ]


def top_table(name: str, run: dict[str, Any]) -> list[str]:
    lines = [f"\nTop {TOP} by cumulative CPU time, {name} (cProfile adds its own cost):\n"]
    lines += ["| cum ms | own ms | calls | function |", "|---:|---:|---:|---|"]
    for r in run["top"]:
        lines.append(f"| {r['cum_ms']:.1f} | {r['own_ms']:.1f} | {r['calls']} | `{r['fn']}` |")
    return lines


def main(args: argparse.Namespace) -> None:
    from common import machine_lines

    versions: dict[str, str | None] = {"this checkout": None}
    if args.old:
        versions = {"old": str(args.old), **versions}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in versions}
    for k in range(args.repeats):
        for name, path in versions.items():
            runs[name].append(spawn(args, path))
            print(f"repeat {k + 1}: {name} done", file=sys.stderr, flush=True)
    what = "research topology, embedded llama-server" if args.real else "simulated server"
    print(f"Command: `.venv/bin/python {' '.join(sys.argv)}`\n")
    print(f"{what}, {args.agents if not args.real else 4} agents, {args.rounds} rounds.\n")
    print(
        "| code | dytopo from | requests | loop-thread CPU ms (each repeat) "
        "| process CPU ms | loop CPU ms per round | **loop CPU ms per request** "
        "| process CPU ms per request |"
    )
    print("|---|---|---:|---|---|---|---:|---:|")
    for name in versions:
        print("\n".join(report(name, runs[name], args.rounds)))
    for name in versions:
        print("\n".join(top_table(name, runs[name][-1])))
    print("\nMachine:\n" + "\n".join(machine_lines()))


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--agents", type=int, default=16, help="simulated run only")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--real", action="store_true", help="the research topology on a real server")
    p.add_argument("--old", type=Path, help="a checkout of older code, run side by side")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse()
    if arguments.child:
        child(arguments)
    else:
        main(arguments)
