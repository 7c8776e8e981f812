"""Which llama-server prompt-cache settings serve a swarm best: measured side by side.

    .venv/bin/python benchmarks/server_cache.py            # every variant once
    .venv/bin/python benchmarks/server_cache.py --repeats 2 --only defaults pin

A synthetic swarm, identical for every variant: AGENTS agents and a manager, ROUNDS rounds. Each
agent's prompt is its role card and the shared task, then its memory (append-only: one entry per
past round), then this round's new messages and goal; so each prompt extends the agent's
previous one, as DyTopo's prefix-stable layout does. The agents of a round are sent at once
through DyTopo's own client (LlamaCppBackend: its FIFO slot limiter and streaming; pinned to a
slot per tag with `id_slot` in the pin variants), then the manager's request (its transcript
grows by every agent's public line).

Every variant starts its own server with the embedded server's arguments plus its flags, runs
the swarm and stops the server. The prompts are the same in every variant (fixed text; replies
are not fed back), so the cached share differs only by the server's cache policy. The first row
is the bound: the tokens each prompt shares with its tag's previous prompt. Wall time is noisy
on a shared machine: compare within one run (with --repeats the variants run interleaved).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import psutil
from common import share

from dytopo.backends import (
    BackendSettings,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    LlamaCppBackend,
    Sampling,
    Usage,
)
from dytopo.logs import configure_logging
from dytopo.managed.server import LlamaServerProcess, chat_args

WORDS = (  # noqa: SIM905 (a list literal of 55 words is harder to read)
    "data model cache slot prompt token agent round memory graph edge query key value server "
    "answer evidence source claim check plan draft review risk cost time budget result table "
    "method sample error bias trend signal noise metric baseline ratio growth market price "
    "supply demand policy region city river energy water carbon storage battery solar wind"
).split()


@dataclass(frozen=True)
class Variant:
    name: str
    flags: list[str] = field(default_factory=list)
    """Extra llama-server flags on top of the embedded server's arguments (no cache flags)."""
    pin: bool = False
    """Send `id_slot`: the k-th tag to ask goes to slot k mod slots (else the server picks)."""
    slots: int = 2


IDEAL = "ideal: each prompt reuses its tag's previous prompt"


def variants(slots: int, agents: int) -> list[Variant]:
    tags = agents + 1
    rows = [
        Variant(IDEAL),
        Variant("build defaults (= CACHE_FLAGS)"),
        Variant("--cache-ram 0", ["--cache-ram", "0"]),
        Variant("--no-cache-idle-slots", ["--no-cache-idle-slots"]),
        Variant("-sps 0 (LRU slot)", ["-sps", "0"]),
        Variant("--kv-unified", ["--kv-unified"]),
        Variant(f"pin id_slot (tags {tags} > slots {slots})", pin=True),
    ]
    # Pinning can give every tag a slot of its own only with a slot per tag.
    rows += [
        Variant(f"{tags} slots, unpinned", slots=tags),
        Variant(f"{tags} slots, pin id_slot", pin=True, slots=tags),
        Variant(f"{tags} slots, --cache-ram 0, unpinned", ["--cache-ram", "0"], slots=tags),
        Variant(
            f"{tags} slots, --cache-ram 0, pin id_slot",
            ["--cache-ram", "0"],
            pin=True,
            slots=tags,
        ),
    ]
    return rows


def text(seed: str, words: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


@dataclass
class Swarm:
    agents: int
    rounds: int
    head_words: int = 100
    entry_words: int = 32
    max_tokens: int = 8

    def agent_messages(self, agent: int, round: int) -> list[dict[str, str]]:
        head = (
            f"You are agent {agent}. ROLE: {text(f'role{agent}', 40)}\nFORMAT: answer with JSON "
            f"public, private, query, key.\nTASK: {text('task', self.head_words)}"
        )
        memory = "\n".join(
            f"[round {r}] {text(f'mem{agent}-{r}', self.entry_words)}" for r in range(1, round)
        )
        new = text(f"new{agent}-{round}", self.entry_words)
        goal = f"ROUND {round} GOAL: {text(f'goal{round}', 18)} Reply now."
        return [
            {"role": "system", "content": head},
            {"role": "user", "content": f"MEMORY:\n{memory}\nNEW:\n{new}\n{goal}"},
        ]

    def manager_messages(self, round: int) -> list[dict[str, str]]:
        head = f"You are the manager. {text('manager', 40)}\nTASK: {text('task', self.head_words)}"
        transcript = "\n".join(
            f"[round {r}] agent {a}: {text(f'pub{a}-{r}', 22)}"
            for r in range(1, round + 1)
            for a in range(self.agents)
        )
        goal = f"Decide round {round}: {text(f'mgoal{round}', 18)}"
        return [
            {"role": "system", "content": head},
            {"role": "user", "content": f"TRANSCRIPT:\n{transcript}\n{goal}"},
        ]


@dataclass
class Tally:
    prompt: int = 0
    cached: int = 0
    prompt_later: int = 0
    """Prompt tokens of rounds >= 2."""
    cached_later: int = 0
    prompt_ms: float = 0.0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    """CPU seconds the server used for the swarm: less noisy than wall time on a shared machine
    (but its threads' busy-waiting counts too)."""

    def book(self, round: int, reply: ChatResponse) -> None:
        self.prompt += reply.usage.prompt_tokens
        self.cached += reply.usage.cached_tokens
        if round >= 2:
            self.prompt_later += reply.usage.prompt_tokens
            self.cached_later += reply.usage.cached_tokens
        self.prompt_ms += reply.timings.prompt_ms if reply.timings else 0.0


def request(messages: list[dict[str, str]], tag: str, max_tokens: int) -> ChatRequest:
    return ChatRequest(
        messages=[ChatMessage.model_validate(m) for m in messages],
        max_tokens=max_tokens,
        sampling=Sampling(temperature=0.0, seed=1),
        tag=tag,
    )


class PinnedBackend(LlamaCppBackend):
    """Sends the k-th tag to ask to slot k mod slots (`id_slot`), where its last prompt is."""

    def __init__(self, settings: BackendSettings) -> None:
        super().__init__(settings)
        self.home: dict[str, int] = {}

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        slot = self.home.setdefault(request.tag, len(self.home)) % self.info.slots
        return {**super()._body(request), "id_slot": slot}


async def run_swarm(backend: LlamaCppBackend, swarm: Swarm) -> Tally:
    """The swarm through DyTopo's own client: its FIFO slot limiter and streaming."""
    tally = Tally()
    started = time.monotonic()
    for round in range(1, swarm.rounds + 1):
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(
                    backend.chat(
                        request(swarm.agent_messages(a, round), f"agent{a}", swarm.max_tokens)
                    )
                )
                for a in range(swarm.agents)
            ]
        for task in tasks:
            tally.book(round, task.result())
        manager = request(swarm.manager_messages(round), "manager", swarm.max_tokens)
        tally.book(round, await backend.chat(manager))
    tally.wall_s = time.monotonic() - started
    return tally


async def ideal(backend: LlamaCppBackend, swarm: Swarm) -> Tally:
    """The bound: every prompt reuses all of its tag's previous prompt that it starts with."""
    tally = Tally()
    last: dict[str, list[int]] = {}
    for round in range(1, swarm.rounds + 1):
        asks = [(f"agent{a}", swarm.agent_messages(a, round)) for a in range(swarm.agents)]
        for tag, messages in [*asks, ("manager", swarm.manager_messages(round))]:
            response, _ = await backend.http.send(
                "POST", "/apply-template", json={"messages": messages}
            )
            tokens = await backend.tokenize(response.json()["prompt"])
            before = last.get(tag, [])
            common = next(
                (i for i, (x, y) in enumerate(zip(tokens, before, strict=False)) if x != y),
                min(len(tokens), len(before)),
            )
            last[tag] = tokens
            usage = Usage(prompt_tokens=len(tokens), cached_tokens=common)
            tally.book(round, ChatResponse(usage=usage))
    return tally


async def run_variant(variant: Variant, swarm: Swarm, ctx_per_slot: int) -> Tally:
    args = chat_args(slots=variant.slots, ctx_per_slot=ctx_per_slot, cache_flags=variant.flags)
    server = LlamaServerProcess("bench-cache", args)
    await server.start()
    settings = BackendSettings(base_url=server.url)
    process = psutil.Process(server.pid)
    try:
        async with (PinnedBackend if variant.pin else LlamaCppBackend)(settings) as backend:
            if variant.name == IDEAL:
                return await ideal(backend, swarm)
            cpu = sum(process.cpu_times()[:2])
            tally = await run_swarm(backend, swarm)
            tally.cpu_s = sum(process.cpu_times()[:2]) - cpu
            return tally
    finally:
        server.stop()


def report(rows: dict[str, list[Tally]]) -> str:
    base = next(name for name in rows if name != IDEAL)
    base_wall = statistics.mean(t.wall_s for t in rows[base])
    lines = [
        "| variant | prompt tok | cached (run) | cached (rounds >= 2) | server CPU s | wall s "
        f"| wall vs {base} |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, tallies in rows.items():
        t = tallies[0]
        walls = [x.wall_s for x in tallies]
        wall = statistics.mean(walls)
        spread = f" ({min(walls):.0f}-{max(walls):.0f})" if len(walls) > 1 else ""
        cpu_s = statistics.mean(x.cpu_s for x in tallies)
        timing = (
            f"{cpu_s:.0f} | {wall:.1f}{spread} | {wall / base_wall:.2f}" if wall else "- | - | -"
        )
        lines.append(
            f"| {name} | {t.prompt} | {share(t.cached, t.prompt, 0)} | "
            f"{share(t.cached_later, t.prompt_later, 0)} | {timing} |"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--ctx-per-slot", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--only", nargs="*", default=None, help="Run only variants whose name contains one of these"
    )
    ns = parser.parse_args()
    configure_logging("warning")
    swarm = Swarm(agents=ns.agents, rounds=ns.rounds)
    chosen = [
        v
        for v in variants(ns.slots, ns.agents)
        if v.name == IDEAL or ns.only is None or any(word in v.name for word in ns.only)
    ]
    rows: dict[str, list[Tally]] = {v.name: [] for v in chosen}
    for repeat in range(ns.repeats):
        # Interleaved, every other pass backwards: drifting machine load hits all variants.
        order = chosen if repeat % 2 == 0 else list(reversed(chosen))
        for variant in order:
            if variant.name == IDEAL and repeat:
                continue  # the bound depends on the prompts only
            tally = await run_variant(variant, swarm, ns.ctx_per_slot)
            rows[variant.name].append(tally)
            print(
                f"{variant.name}: cached {share(tally.cached, tally.prompt, 0)} "
                f"(rounds >= 2: {share(tally.cached_later, tally.prompt_later, 0)}), "
                f"server CPU {tally.cpu_s:.1f}s, wall {tally.wall_s:.1f}s",
                flush=True,
            )
    print()
    print(
        f"{platform.machine()}, {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; "
        f"{ns.agents} agents + manager, {ns.rounds} rounds, {ns.slots} slots x "
        f"{ns.ctx_per_slot} ctx, {ns.repeats} repeat(s)"
    )
    print(report(rows))


if __name__ == "__main__":
    asyncio.run(main())
