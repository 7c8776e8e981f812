"""Tokens per routing mode at equal rounds on the real embedded server, and where they go.

    .venv/bin/python benchmarks/modes.py --out benchmarks/modes.md
    .venv/bin/python benchmarks/modes.py --tasks 1 --modes dynamic broadcast --rounds 2

The research topology (its four agents, manager and seed) runs in every mode on each task with
`min_rounds = max_rounds = ROUNDS`, so every mode does the same number of rounds. One embedded
stack (SmolLM2-135M chat server, 2 slots, and the MiniLM embedding server) serves every run; the
modes run interleaved, their order rotated per task, so machine load drifts over all of them.

Every chat request the swarm sends is recorded (a LlamaCppBackend subclass), with the usage the
server reported. After each run (outside its wall time) every request's prompt is cut into its
parts, and each part is tokenized by the server's own /tokenize: the system prompt (role card,
instructions, format), the task, the agent's own past reports, messages routed to it, the
manager's transcript and the team's work, the tool definitions and follow-up turns (tool calls,
results, re-asks), the round goal and closing instruction; what the chat template and the
blank lines between parts add is the rest. Token counts do not depend on machine load; wall
time does (load average and CPU seconds are reported beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from common import machine_lines

from dytopo.agents.llm import FRESH, MEMORY
from dytopo.backends import BackendSettings, ChatRequest, ChatResponse, LlamaCppBackend
from dytopo.budget.plan import plan_budgets, server_context
from dytopo.embedders.base import Embedder
from dytopo.embedders.http import HttpEmbedder
from dytopo.loader import load_topology
from dytopo.logs import configure_logging
from dytopo.managed import ManagedStack
from dytopo.swarm.build import build_swarm
from dytopo.swarm.result import RunResult
from dytopo.topology import Topology

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = ROOT / "topologies" / "research.yaml"
MODES = ["dynamic", "broadcast", "chain", "star", "random", "single"]
EXTRA_TASKS = [
    "Compare SQLite and PostgreSQL for a small internal web tool and recommend one.",
    "List the main risks of rolling out a new login page on a Friday and how to reduce them.",
]
PARTS = [
    "card+format",
    "task",
    "own memory",
    "routed messages",
    "manager transcript",
    "tools+turns",
    "goal+closing",
    "template+headers",
]
"""Where a prompt's tokens go. "routed messages": messages other agents' outputs put in this
agent's memory (the part that differs between modes); "manager transcript": the public lines
and latest work the manager reads; "tools+turns": tool definitions, tool calls and results, and
re-ask turns; "template+headers": chat-template markup, section headers and separators (the
request's count minus the parts)."""

SECTIONS = [
    (f"\n\n{MEMORY}\n", "memory"),
    (f"\n\n{FRESH}\n", "routed messages"),
    ("\n\nTOOL RESULTS:\n", "tools+turns"),
]
GOAL = re.compile(r"\n\nROUND \d+ GOAL(?: \(from the manager\))?:\n")
MANAGER_SECTIONS = [
    ("\n\nPUBLIC MESSAGES (oldest first):\n", "manager transcript"),
    ("\n\nTEAM'S LATEST WORK:\n", "manager transcript"),
]
MANAGER_HEADS = ("Round ", "No agent has spoken yet.", "The run is over")


@dataclass
class Sent:
    """One chat request and the usage the server reported for it."""

    request: ChatRequest
    response: ChatResponse


class RecordingBackend(LlamaCppBackend):
    """The library's client, keeping every request and reply (for the prompt breakdown)."""

    def __init__(self, settings: BackendSettings) -> None:
        super().__init__(settings)
        self.sent: list[Sent] = []

    async def chat(self, request: ChatRequest) -> ChatResponse:
        response = await super().chat(request)
        self.sent.append(Sent(request, response))
        return response


def variant(topology: Topology, mode: str, rounds: int, max_output: int = 0) -> Topology:
    """The topology in `mode` with exactly `rounds` rounds; every reply capped at `max_output`
    tokens (0: the topology's caps). The cap is the same in every mode: it only cuts the 135M
    model's rare runaway replies (up to 800 tokens each), which dominate wall time."""
    routing = topology.routing.model_copy(update={"mode": mode})
    update: dict[str, object] = {"routing": routing, "min_rounds": rounds, "max_rounds": rounds}
    if max_output:

        def capped(spec: Any) -> Any:
            budget = spec.budget.model_copy(update={"max_output_tokens": max_output})
            return spec.model_copy(update={"budget": budget})

        update |= {
            "agents": [capped(a) for a in topology.agents],
            "manager": capped(topology.manager),
        }
    return topology.model_copy(update=update)


async def run_once(
    topology: Topology,
    task: str,
    backend: LlamaCppBackend,
    embedder: Embedder,
    trace: Path,
) -> RunResult:
    """What `dytopo run` does (runner._built), on a backend the benchmark chose."""
    info = await backend.connect()
    plan = plan_budgets(
        topology,
        n_ctx=server_context(info.n_ctx_per_slot, info.slots, False),
        slots=info.slots,
    )
    assert plan.fits, plan.problems
    swarm = build_swarm(topology, backend, embedder, base_dir=TOPOLOGY.parent, plan=plan)
    return await swarm.run(task, trace_path=trace)


class Splitter:
    """Cuts prompts into their parts and counts each part's tokens with the server's tokenizer."""

    def __init__(self, backend: LlamaCppBackend) -> None:
        self.backend = backend
        self.cache: dict[str, int] = {}

    async def tokens(self, text: str) -> int:
        if not text:
            return 0
        if text not in self.cache:
            body = {"content": text, "add_special": False, "parse_special": False}
            response, _ = await self.backend.http.send("POST", "/tokenize", json=body)
            self.cache[text] = len(response.json()["tokens"])
        return self.cache[text]

    async def split(self, sent: Sent) -> Counter[str]:
        request = sent.request
        messages = request.messages
        parts: Counter[str] = Counter()
        parts["card+format"] += await self.tokens(messages[0].content or "")
        user = messages[1].content or ""
        pieces = agent_parts(user) if request.tag != "manager" else manager_parts(user)
        for name, text in pieces:
            parts[name] += await self.tokens(text)
        full = await self.backend.count_tokens(messages, request.tools)
        bare = await self.backend.count_tokens(messages[:2])
        parts["tools+turns"] += full - bare
        parts["template+headers"] += full - sum(parts.values())
        return parts


def sections(text: str, markers: Sequence[tuple[str, str]]) -> tuple[str, list[tuple[str, str]]]:
    """`text` up to the first marker, and (name, body) for each marker found, in text order.
    The markers themselves (section headers) are left out: they count as template."""
    found = sorted((at, marker, name) for marker, name in markers if (at := text.find(marker)) >= 0)
    ends = [at for at, _, _ in found[1:]] + [len(text)] if found else []
    head = text[: found[0][0]] if found else text
    return head, [
        (name, text[at + len(marker) : end])
        for (at, marker, name), end in zip(found, ends, strict=True)
    ]


def agent_parts(user: str) -> list[tuple[str, str]]:
    """An agent's user message (LLMAgent.messages): task, memory, fresh, notes, goal, closing."""
    goal = list(GOAL.finditer(user))[-1]
    task_text, found = sections(user[: goal.start()], SECTIONS)
    out = [("goal+closing", user[goal.start() :]), ("task", task_text)]
    for name, body in found:
        if name != "memory":
            out.append((name, body))
            continue
        # Memory entries start "[round N] "; the agent's own reports say "you reported".
        for entry in re.split(r"\n(?=\[round \d+\] )", body):
            own = re.match(r"\[round \d+\] you reported: ", entry) is not None
            out.append(("own memory" if own else "routed messages", entry))
    return out


def manager_parts(user: str) -> list[tuple[str, str]]:
    """The manager's user message (LLMManager._ask): task, transcript, work, head, duty."""
    cut = min(
        (i for i in (user.rfind(f"\n\n{h}") for h in MANAGER_HEADS) if i >= 0), default=len(user)
    )
    task_text, found = sections(user[:cut], MANAGER_SECTIONS)
    return [("task", task_text), *found, ("goal+closing", user[cut:])]


@dataclass
class Row:
    task: int
    mode: str
    result: RunResult
    wall_s: float
    client_cpu_s: float
    server_cpu_s: float
    load: float
    parts: Counter[str] = field(default_factory=Counter)
    counted: int = 0
    """Prompt tokens the parts add up to (the server's count of the same prompts)."""

    @property
    def prompt(self) -> int:
        return self.result.usage.prompt_tokens

    @property
    def edges(self) -> float:
        rounds = self.result.rounds
        return statistics.mean(len(r.routing.edges) for r in rounds) if rounds else 0.0


def cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def bench(ns: argparse.Namespace, done: Callable[[list[Row]], None]) -> list[Row]:
    """Every run; `done(rows)` after each (the report is rewritten, so a stopped benchmark
    keeps what it measured)."""
    base = load_topology(TOPOLOGY)
    tasks = [base.task or "", *EXTRA_TASKS][: ns.tasks]
    rows: list[Row] = []
    me = psutil.Process()
    async with ManagedStack(slots=2, ctx_per_slot=4096) as stack:
        assert stack.chat is not None
        assert stack.chat.pid is not None
        server = psutil.Process(stack.chat.pid)
        with tempfile.TemporaryDirectory() as tmp:
            for k, task in enumerate(tasks):
                # Rotated per task: no mode always runs first (cold cache) or last.
                order = ns.modes[k % len(ns.modes) :] + ns.modes[: k % len(ns.modes)]
                for mode in order:
                    topology = variant(base, mode, ns.rounds, ns.max_output)
                    settings = topology.backend.model_copy(update={"base_url": stack.chat_url})
                    backend = RecordingBackend(settings)
                    embedder = HttpEmbedder(stack.embed_url or stack.chat_url)
                    trace = Path(tmp) / f"{k}-{mode}.jsonl"
                    try:
                        cpu0, srv0, t0 = me.cpu_times(), cpu(server), time.monotonic()
                        result = await run_once(topology, task, backend, embedder, trace)
                        wall = time.monotonic() - t0
                        cpu1 = me.cpu_times()
                        row = Row(
                            task=k,
                            mode=mode,
                            result=result,
                            wall_s=wall,
                            client_cpu_s=cpu1.user + cpu1.system - cpu0.user - cpu0.system,
                            server_cpu_s=cpu(server) - srv0,
                            load=os.getloadavg()[0],
                        )
                        splitter = Splitter(backend)
                        for sent in backend.sent:
                            row.parts += await splitter.split(sent)
                            row.counted += sent.response.usage.prompt_tokens
                    finally:
                        await embedder.aclose()
                        await backend.aclose()
                    rows.append(row)
                    done(rows)
                    u = result.usage
                    print(
                        f"task {k} {mode:9}: rounds {len(result.rounds)}, prompt {u.prompt_tokens}"
                        f" (cached {u.cached_tokens}), completion {u.completion_tokens}, "
                        f"edges/round {row.edges:.1f}, wall {wall:.1f}s, load {row.load:.1f}",
                        flush=True,
                    )
    return rows


def mean(rows: Sequence[Row], key: Callable[[Row], float]) -> float:
    return statistics.mean(key(r) for r in rows)


def by_mode(rows: Sequence[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(r.mode, []).append(r)
    return out


def usage_table(rows: Sequence[Row]) -> list[str]:
    groups = by_mode(rows)
    ref = groups.get("broadcast") or next(iter(groups.values()))
    ref_prompt = mean(ref, lambda r: r.prompt)
    ref_name = ref[0].mode
    lines = [
        "| mode | rounds | edges/round | requests | prompt tok | cached | completion tok "
        f"| prompt vs {ref_name} | re-asks | failed steps | wall s | client CPU s | server CPU s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mode, group in groups.items():
        u = [r.result.usage for r in group]
        cached = sum(x.cached_tokens for x in u) / max(1, sum(x.prompt_tokens for x in u))
        lines.append(
            f"| {mode} | {mean(group, lambda r: len(r.result.rounds)):.1f} "
            f"| {mean(group, lambda r: r.edges):.1f} "
            f"| {mean(group, lambda r: r.result.usage.requests):.0f} "
            f"| {mean(group, lambda r: r.prompt):.0f} | {100 * cached:.0f}% "
            f"| {mean(group, lambda r: r.result.usage.completion_tokens):.0f} "
            f"| {mean(group, lambda r: r.prompt) / ref_prompt:.2f} "
            f"| {sum(r.result.reasks for r in group)} | {sum(r.result.failures for r in group)} "
            f"| {mean(group, lambda r: r.wall_s):.1f} | {mean(group, lambda r: r.client_cpu_s):.1f}"
            f" | {mean(group, lambda r: r.server_cpu_s):.0f} |"
        )
    return lines


def per_task_table(rows: Sequence[Row]) -> list[str]:
    modes = list(by_mode(rows))
    lines = [
        "| task | " + " | ".join(f"{m} prompt / completion" for m in modes) + " |",
        "| --- |" + " --- |" * len(modes),
    ]
    for k in sorted({r.task for r in rows}):
        cells = []
        for m in modes:
            r = next((x for x in rows if x.task == k and x.mode == m), None)
            cells.append(f"{r.prompt} / {r.result.usage.completion_tokens}" if r else "-")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return lines


def parts_table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| mode | " + " | ".join(PARTS) + " | parts sum vs server count |",
        "| --- |" + " --- |" * (len(PARTS) + 1),
    ]
    for mode, group in by_mode(rows).items():
        total: Counter[str] = Counter()
        for r in group:
            total += r.parts
        whole = sum(total[p] for p in PARTS)
        counted = sum(r.counted for r in group)
        cells = [f"{total[p] / len(group):.0f} ({100 * total[p] / whole:.0f}%)" for p in PARTS]
        lines.append(f"| {mode} | " + " | ".join(cells) + f" | {whole / counted:.3f} |")
    return lines


def report(rows: Sequence[Row], ns: argparse.Namespace, seconds: float) -> str:
    tasks = [load_topology(TOPOLOGY).task or "", *EXTRA_TASKS][: ns.tasks]
    cap = ns.max_output or "the topology's"
    lines = [
        "## Tokens per routing mode at equal rounds",
        "",
        "Machine:",
        *machine_lines(),
        "",
        f"Command: `.venv/bin/python benchmarks/modes.py --tasks {ns.tasks} --rounds {ns.rounds} "
        f"--max-output {ns.max_output} --modes {' '.join(ns.modes)}`; total {seconds / 60:.1f} "
        f"min for {len(rows)} of {ns.tasks * len(ns.modes)} runs, load average "
        f"{min(r.load for r in rows):.1f}-{max(r.load for r in rows):.1f} during the runs.",
        "",
        f"Research topology (4 agents + manager, seed 7), min_rounds = max_rounds = {ns.rounds}, "
        f"every reply capped at {cap} tokens, "
        "embedded SmolLM2-135M (2 slots x 4096). Tasks:",
        "",
        *[f"{k}. {t}" for k, t in enumerate(tasks)],
        "",
        "Mean per run over the tasks (re-asks and failed steps: summed over the tasks):",
        "",
        *usage_table(rows),
        "",
        "Per task (prompt / completion tokens):",
        "",
        *per_task_table(rows),
        "",
        "Where the prompt tokens go (mean per run, tokens and share of the prompt):",
        "",
        *parts_table(rows),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3, choices=[1, 2, 3])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    parser.add_argument(
        "--max-output", type=int, default=512, help="max_tokens of every reply (0: topology's)"
    )
    parser.add_argument("--out", type=Path, default=None, help="Write the report here.")
    ns = parser.parse_args()
    configure_logging("warning")
    started = time.monotonic()

    def done(rows: list[Row]) -> None:
        if ns.out:
            ns.out.write_text(report(rows, ns, time.monotonic() - started))

    rows = asyncio.run(bench(ns, done))
    print(report(rows, ns, time.monotonic() - started))


if __name__ == "__main__":
    main()
