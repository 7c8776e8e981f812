"""The research swarm's prompt-cache share, old prompt layout against new, side by side.

    .venv/bin/python benchmarks/prompt_cache.py                      # old = 33b341e, new = HEAD
    .venv/bin/python benchmarks/prompt_cache.py --repeats 2 --old REV --new REV --rounds 4

Each code version is exported with `git archive` into a temporary folder and runs the research
topology with `min_rounds = max_rounds = ROUNDS` through its own `dytopo run` CLI, against a
fresh embedded chat server (started by this script with the current embedded arguments, cache
flags included), so that the two versions differ only by their prompts: before 88e3d3e the
agent prompt put `ROUND n GOAL` before the memory and the manager put its head before the
transcript; after it, the parts that never change come first and what is new comes last.

What the server reused is read from the server itself: each chat response's `timings` (`cache_n`
prompt tokens reused, `prompt_n` processed), recorded by wrapping httpx in the run's process
(the old version does not count cached tokens itself). Requests are put in the round during
which they started, from the trace's `round_start` events (the manager's goal for round t + 1 is
asked in round t). Versions run interleaved (every other pass backwards) so that drifting load
hits both; compare the ratios, not the absolute times.

The `bound` column is the most any prefix cache could have served: for each request of rounds
>= 2, the share of its text that some earlier request's text starts with. What lies past it
(messages routed this round, tool results, the agent's own last report, the new goal) no
earlier prompt contained, so no server can have it cached.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from common import machine_lines, share

REPO = Path(__file__).resolve().parent.parent
OLD = "33b341e"  # the last commit before the prefix-stable layout (88e3d3e)


# --- the child: one `dytopo run` of one code version, its chat responses recorded ---------------


def child(code: Path, out: Path, argv: list[str]) -> int:
    sys.path.insert(0, str(code))  # before the editable install's finder (a meta-path fallback)
    import httpx

    records: list[dict[str, Any]] = []
    original = httpx.AsyncHTTPTransport.handle_async_request

    class Tee(httpx.AsyncByteStream):
        def __init__(self, stream: Any, started: float, request: str) -> None:
            self.stream, self.started, self.body = stream, started, bytearray()
            self.request = request

        async def __aiter__(self) -> Any:
            async for chunk in self.stream:
                self.body.extend(chunk)
                yield chunk

        async def aclose(self) -> None:
            await self.stream.aclose()
            timings = _timings(bytes(self.body))
            if timings is not None:
                records.append({"t": self.started, **timings, "request": self.request})

    async def handle(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
        started = time.time()
        response = await original(self, request)
        if request.url.path.endswith("/chat/completions"):
            response.stream = Tee(response.stream, started, request.content.decode())
        return response

    httpx.AsyncHTTPTransport.handle_async_request = handle  # type: ignore[method-assign]
    import dytopo

    if not Path(dytopo.__file__).resolve().is_relative_to(code.resolve()):
        raise SystemExit(f"imported dytopo from {dytopo.__file__}, not from {code}")
    from dytopo.cli import main

    sys.argv = ["dytopo", *argv]
    status = 0
    try:
        main()
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    finally:
        out.write_text(json.dumps(records))
    return status


def _timings(body: bytes) -> dict[str, int] | None:
    """The last `timings` object of a JSON or server-sent-events chat response."""
    found = None
    for line in body.decode("utf-8", "replace").splitlines():
        line = line.removeprefix("data: ").strip()
        if not line.startswith("{"):
            continue
        try:
            payload = json.loads(line)
        except json.JSONDecodeError:
            continue
        timings = payload.get("timings")
        if isinstance(timings, dict) and "prompt_n" in timings:
            found = {"prompt_n": int(timings["prompt_n"]), "cache_n": int(timings["cache_n"])}
    return found


# --- the parent ------------------------------------------------------------------------------


@dataclass
class Tally:
    version: str
    wall_s: float
    requests: int
    prompt: int
    cached: int
    prompt_later: int
    cached_later: int
    bound_later: float
    """Tokens of rounds >= 2 that some earlier prompt already started with (text-weighted)."""
    rounds: int
    status: int


def export(rev: str, into: Path, rounds: int, max_output: int) -> Path:
    """`git archive REV` unpacked into INTO/REV, with the research topology at fixed rounds and
    replies capped at MAX_OUTPUT tokens (the manager's at twice that)."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = into / sha
    archive = subprocess.run(["git", "archive", sha], cwd=REPO, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tree, filter="data")
    spec = yaml.safe_load((tree / "topologies/research.yaml").read_text())
    spec["min_rounds"] = spec["max_rounds"] = rounds
    for agent in spec["agents"]:
        agent["budget"] = {"max_output_tokens": max_output}
    spec.setdefault("manager", {})["budget"] = {"max_output_tokens": 2 * max_output}
    (tree / "topologies/bench_cache.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return tree


def _text(request: str) -> str:
    messages = json.loads(request)["messages"]
    return "".join(
        f"<{m['role']}>{m.get('content') or ''}{json.dumps(m.get('tool_calls') or '')}"
        for m in messages
    )


def reusable(texts: list[str], index: int) -> float:
    """The share of request `index`'s text that an earlier request's text starts with: the most
    any prefix cache can reuse, whatever the server keeps."""
    text = texts[index]
    best = max(
        (len(os.path.commonprefix([earlier, text])) for earlier in texts[:index]),  # noqa: RUF071 - text, not paths
        default=0,
    )
    return best / max(len(text), 1)


def tally(
    version: str, records: list[dict[str, Any]], trace: Path, wall: float, status: int
) -> Tally:
    starts = sorted(
        (event["ts"], event["round"])
        for event in map(json.loads, trace.read_text().splitlines())
        if event.get("event") == "round_start"
    )

    def round_of(t: float) -> int:
        return max((r for ts, r in starts if ts <= t), default=0)

    total = [r["prompt_n"] + r["cache_n"] for r in records]
    texts = [_text(r["request"]) for r in records]
    later = [i for i, r in enumerate(records) if round_of(r["t"]) >= 2]
    return Tally(
        version=version,
        wall_s=wall,
        requests=len(records),
        prompt=sum(total),
        cached=sum(r["cache_n"] for r in records),
        prompt_later=sum(total[i] for i in later),
        cached_later=sum(records[i]["cache_n"] for i in later),
        bound_later=sum(total[i] * reusable(texts, i) for i in later),
        rounds=max((r for _, r in starts), default=0),
        status=status,
    )


def save(keep: Path, version: str, trace: Path, requests: Path) -> None:
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(trace, keep / f"{version}-trace.jsonl")
    shutil.copy(requests, keep / f"{version}-requests.json")


async def run_version(
    version: str, tree: Path, embed_url: str, scratch: Path, keep: Path | None
) -> Tally:
    from dytopo.managed.server import chat_server

    server = chat_server()  # a fresh server: nothing cached from the other version's run
    await server.start()
    try:
        trace, out = scratch / f"{version}-{time.time_ns()}.jsonl", scratch / "records.json"
        command = [
            sys.executable,
            __file__,
            "--child",
            str(tree),
            str(out),
            "run",
            "topologies/bench_cache.yaml",
            "--backend-url",
            server.url,
            "--embed-url",
            embed_url,
            "--trace",
            str(trace),
            "--json",
        ]
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=tree,
            stdout=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(tree)},
        )
        status = await process.wait()
        wall = time.perf_counter() - started
        if keep is not None:
            save(keep, version, trace, out)
        return tally(version, json.loads(out.read_text()), trace, wall, status)
    finally:
        server.stop()


def report(rows: dict[str, list[Tally]], old: str) -> str:
    base = statistics.mean(t.wall_s for t in rows[old])
    lines = [
        "| layout | requests | prompt tokens | cached (run) | cached (rounds >= 2) "
        f"| bound (rounds >= 2) | wall s | wall vs {old} |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for version, tallies in rows.items():
        walls = [t.wall_s for t in tallies]
        wall = statistics.mean(walls)
        spread = f" ({min(walls):.0f}-{max(walls):.0f})" if len(walls) > 1 else ""
        requests = sum(t.requests for t in tallies) // len(tallies)
        prompt = sum(t.prompt for t in tallies)
        later = sum(t.prompt_later for t in tallies)
        lines.append(
            f"| {version} | {requests} | {prompt // len(tallies)} | "
            f"{share(sum(t.cached for t in tallies), prompt)} | "
            f"{share(sum(t.cached_later for t in tallies), later)}"
            f" | {share(round(sum(t.bound_later for t in tallies)), later)}"
            f" | {wall:.1f}{spread} | {wall / base:.2f} |"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default=OLD, help="The old layout's commit (default: %(default)s)")
    parser.add_argument("--new", default="HEAD", help="The new layout's commit")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--max-output",
        type=int,
        default=256,
        help="max_tokens of an agent's reply (the manager's: twice that); the default 800 lets "
        "the 135M model ramble for minutes per round, and the share depends on the prompts",
    )
    parser.add_argument(
        "--keep", type=Path, help="Save each run's trace and chat requests with their timings here"
    )
    ns = parser.parse_args()

    from dytopo.logs import configure_logging
    from dytopo.managed.server import embedding_server

    configure_logging("warning")
    with tempfile.TemporaryDirectory(prefix="dytopo-cache-bench-") as folder:
        scratch = Path(folder)
        trees = {
            ns.old: export(ns.old, scratch, ns.rounds, ns.max_output),
            ns.new: export(ns.new, scratch, ns.rounds, ns.max_output),
        }
        versions = {label: tree.name for label, tree in trees.items()}
        old = versions[ns.old]
        rows: dict[str, list[Tally]] = {versions[ns.old]: [], versions[ns.new]: []}
        embedder = embedding_server()
        await embedder.start()
        try:
            for repeat in range(ns.repeats):
                order = list(trees.items()) if repeat % 2 == 0 else list(reversed(trees.items()))
                for label, tree in order:
                    t = await run_version(versions[label], tree, embedder.url, scratch, ns.keep)
                    rows[t.version].append(t)
                    print(
                        f"{t.version}: exit {t.status}, {t.rounds} rounds, {t.requests} requests, "
                        f"cached {share(t.cached, t.prompt)} (rounds >= 2: "
                        f"{share(t.cached_later, t.prompt_later)}), wall {t.wall_s:.1f}s",
                        flush=True,
                    )
        finally:
            embedder.stop()
    print()
    print("\n".join(machine_lines()))
    print(
        f"- research swarm, min_rounds = max_rounds = {ns.rounds}, replies <= {ns.max_output} "
        f"tokens (manager {2 * ns.max_output}), {ns.repeats} repeat(s)"
    )
    print()
    print(report(rows, old))


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--child":
        raise SystemExit(child(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:]))
    asyncio.run(main())
