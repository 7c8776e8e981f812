"""Batch throughput over 1, 2 and 4 llama-servers: `dytopo batch`'s pool and scheduler.

    .venv/bin/python benchmarks/batch.py                 # simulated servers, ~2 min
    .venv/bin/python benchmarks/batch.py --real          # + two real servers vs one, minutes
    .venv/bin/python benchmarks/batch.py --real --no-simulated

Simulated: the batch engine (BackendPool, run_pool, the local executor: what `dytopo batch`
runs) spreads N tasks over 1, 2 and 4 `dytopo.SimulatedBackend` servers in this process, each
with its own slots, FIFO queue and per-token costs slept on the asyncio clock, so servers do not
share the machine's cores the way real ones would. One run per server at a time (the default:
a run takes all its server's slots). The configurations are measured side by side: repeated in
turn (1, 2, 4, 1, 2, 4, ...), the median kept. Ideal linear scaling: N x the 1-server rate.

Real (--real): the same engine on the embedded llama-server (SmolLM2-135M): a 6-task batch of a
two-agent, one-round topology on one server, then on two (the second started beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from common import machine_lines

from dytopo.backends.simulated import SimulatedBackend
from dytopo.batch import BatchItem, RecordStore, pending
from dytopo.batch.local import LocalExecutor
from dytopo.batch.pool import BackendPool
from dytopo.batch.schedule import RunSpec, run_pool
from dytopo.loader import load_topology

SIMULATED = """\
name: trio
routing: {mode: dynamic, tau: 0.3}
embedder: {kind: hash}
max_rounds: 2
min_rounds: 2
agents:
  - {id: researcher}
  - {id: analyst}
  - {id: writer}
"""
REAL = """\
name: pair
routing: {mode: dynamic, tau: 0.3}
embedder: {kind: hash}
max_rounds: 1
min_rounds: 1
structured_reasks: 0
manager: {card: m, budget: {max_output_tokens: 64}}
agents:
  - {id: researcher, card: r, budget: {max_output_tokens: 96}}
  - {id: writer, card: w, budget: {max_output_tokens: 96}}
"""
CARDS = {  # as tests/integration/test_batch_real.py: short role cards, short prompts
    "r": "You are the Researcher. Reply with one JSON object: public, private, query, key.",
    "w": "You are the Writer. Reply with one JSON object: public, private, query, key.",
    "m": "You are the Manager of a small team. Keep every goal and answer to one sentence.",
}
REAL_TASKS = 6


def tasks(n: int) -> list[BatchItem]:
    return [
        BatchItem(id=f"t{k}", task=f"Design cache layer number {k} for a read-heavy service.")
        for k in range(n)
    ]


def prepared(folder: Path, topology_text: str) -> RunSpec:
    folder.mkdir(parents=True)
    source = folder / "topology.yaml"
    source.write_text(topology_text, encoding="utf-8")
    for name, text in CARDS.items():
        card = f"---\nname: {name}\ndescription: {name}\n---\n{text}\n"
        (folder / f"{name}.md").write_text(card, encoding="utf-8")
    return RunSpec(
        topology=load_topology(source), traces_dir=folder / "traces", base_dir=folder, source=source
    )


async def one_batch(folder: Path, topology_text: str, pool: BackendPool, n: int) -> float:
    """Seconds for `n` tasks over `pool` (every run must succeed)."""
    spec = prepared(folder, topology_text)
    with RecordStore(folder / "records.jsonl") as store:
        started = time.perf_counter()
        records = await run_pool(
            pool, pending(tasks(n), ["dynamic"], set()), LocalExecutor(spec), store
        )
        wall = time.perf_counter() - started
    failed = [r.error for r in records if not r.ok]
    if failed or len(records) != n:
        raise SystemExit(f"runs failed: {failed[:3]}")
    return wall


async def simulated(args: argparse.Namespace, root: Path) -> list[str]:
    walls: dict[int, list[float]] = {n: [] for n in args.servers}
    for rep in range(args.repeats):
        for n in args.servers:
            backends = [
                SimulatedBackend(
                    slots=args.slots,
                    prompt_token_s=args.prompt_us * 1e-6,
                    output_token_s=args.output_us * 1e-6,
                )
                for _ in range(n)
            ]
            pool = await BackendPool.in_process(backends)
            wall = await one_batch(root / f"sim-{n}-{rep}", SIMULATED, pool, args.tasks)
            walls[n].append(wall)
            print(f"{n} servers, rep {rep}: {wall:.2f} s", file=sys.stderr, flush=True)
    base = args.tasks / statistics.median(walls[args.servers[0]]) * 60 / args.servers[0]
    lines = [
        "| servers | wall s (median) | tasks/min | ideal tasks/min | measured / ideal |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n in args.servers:
        wall = statistics.median(walls[n])
        rate = args.tasks / wall * 60
        lines.append(
            f"| {n} | {wall:.2f} | {rate:.1f} | {base * n:.1f} | {rate / (base * n):.3f} |"
        )
    return lines


async def real(root: Path) -> list[str]:
    """One server with a thread per core against two with one thread each (split cores: with
    a thread per core each, two servers' spinning threads ran this batch 10x slower)."""
    from dytopo.managed.server import chat_server

    cores = max(1, os.cpu_count() or 1)
    half = max(1, cores // 2)
    alone = chat_server(slots=2, ctx_per_slot=2048, threads=cores)
    pair = [chat_server(slots=2, ctx_per_slot=2048, threads=half) for _ in range(2)]
    walls: dict[int, float] = {}
    try:
        await alone.start()
        pool = await BackendPool.connect([alone.url])
        walls[1] = await one_batch(root / "real-1", REAL, pool, REAL_TASKS)
        await pool.aclose()
        alone.stop()
        print(f"1 real server ({cores} threads): {walls[1]:.1f} s", file=sys.stderr, flush=True)
        for server in pair:
            await server.start()
        pool = await BackendPool.connect([s.url for s in pair])
        walls[2] = await one_batch(root / "real-2", REAL, pool, REAL_TASKS)
        await pool.aclose()
        print(f"2 real servers ({half} thread(s) each): {walls[2]:.1f} s", file=sys.stderr)
    finally:
        for server in (alone, *pair):
            server.stop()
    rows = [
        f"| {n} | {threads} | {wall:.1f} | {REAL_TASKS / wall * 60:.2f} | {walls[1] / wall:.2f} |"
        for (n, wall), threads in zip(walls.items(), (cores, half), strict=True)
    ]
    return [
        "| real servers | threads each | wall s | tasks/min | speed-up |",
        "|---:|---:|---:|---:|---:|",
        *rows,
    ]


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="dytopo-batch-bench-") as tmp:
        root = Path(tmp)
        sim = await simulated(args, root) if args.simulated else []
        found = await real(root) if args.real else []
    print(f"Command: `.venv/bin/python {' '.join(sys.argv)}`\n")
    if sim:
        print(
            f"Simulated: {args.tasks} tasks of a 3-agent, 2-round dynamic topology; each server "
            f"{args.slots} slots, {args.prompt_us:g} us per uncached prompt token, "
            f"{args.output_us:g} us per generated token; one run per server at a time; median of "
            f"{args.repeats}.\n"
        )
        print("\n".join(sim))
    if found:
        print(f"\nReal: {REAL_TASKS} tasks, 2 agents, 1 round, 96/64 max output tokens.\n")
        print("\n".join(found))
    print("\nMachine:\n" + "\n".join(machine_lines()))


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--servers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--tasks", type=int, default=16)
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--prompt-us", type=float, default=100.0, help="per uncached prompt token")
    p.add_argument("--output-us", type=float, default=1000.0, help="per generated token")
    p.add_argument("--real", action="store_true", help="also two real servers against one")
    p.add_argument(
        "--no-simulated", dest="simulated", action="store_false", help="only the real servers"
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
