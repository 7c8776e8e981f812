"""A simulated llama-server: N slots, a FIFO queue, per-token costs and a prefix cache per slot.

    backend = SimulatedBackend(slots=4, prompt_token_s=20e-6, output_token_s=80e-6)
    result = await Swarm(agents_on(backend), manager_on(backend), HashEmbedder()).run(task)
    backend.served  # what each request cost, and when it ran

It runs a real swarm with no model and no network, fast, on the asyncio clock: a request waits
first come, first served for a free slot, then sleeps `prompt_token_s` for each prompt token
past the longest common prefix with what that slot holds from its last request (llama-server
keeps it: prompt and reply), plus `output_token_s` per generated token. A free slot is chosen
as llama-server chooses one: the one holding the longest common prefix if that is at least
`slot_similarity` of the prompt, else the least recently used.

Replies are valid JSON for the request's `json_schema` (agent outputs, round goals, manager
decisions that never halt, final answers); query and key name two of `topics` words, so a
hashing embedder routes them. They are the same for the same (tag, request number) in every
run. Tokens are `CHARS_PER_TOKEN` characters of the prompt rendered as ChatML, and
`count_tokens` counts them the same way, so packing plans exactly what the server charges.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from dytopo.backends.base import Backend
from dytopo.backends.http import error_for
from dytopo.backends.limiter import SlotLimiter
from dytopo.backends.meter import admit, settle
from dytopo.backends.types import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    ServerInfo,
    Timings,
    Usage,
)
from dytopo.errors import ContextOverflow

CHARS_PER_TOKEN = 4
URL = "simulated://v1/chat/completions"

_WORDS = """
cache eviction latency throughput schema index replica shard quorum lease backoff retry timeout
checksum snapshot compaction tombstone bloom filter partition leader follower gossip vector clock
merkle tree hinted handoff anti entropy read repair consistency isolation serializable deadlock
mutex semaphore barrier fence epoch watermark window join aggregate
"""
TOPICS = tuple(_WORDS.split())
"""Words of need and offer descriptors (two each): agents sharing one get an edge."""


@dataclass(frozen=True)
class Served:
    """One request as the simulated server served it; times are the event loop's clock."""

    tag: str
    slot: int
    queued_at: float
    """When it reached the queue."""
    started_at: float
    """When a slot took it."""
    ended_at: float
    prompt_tokens: int
    cached_tokens: int
    """Prompt tokens the slot already held (not charged)."""
    completion_tokens: int

    @property
    def service_s(self) -> float:
        """Seconds it held its slot."""
        return self.ended_at - self.started_at


def render(messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None) -> str:
    """The prompt as a ChatML template renders it, generation prompt included."""
    parts = [f"<|im_start|>system\n{json.dumps(list(tools))}<|im_end|>\n"] if tools else []
    for m in messages:
        calls = "".join(f"\n<tool_call>{c.name} {c.arguments}" for c in m.tool_calls or [])
        parts.append(f"<|im_start|>{m.role}\n{m.content or ''}{calls}<|im_end|>\n")
    parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def common_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix (binary search on slices: C speed, no char loop)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass
class SimulatedBackend(Backend):
    """A Backend whose server is simulated in-process (see the module docstring)."""

    slots: int = 2
    prompt_token_s: float = 20e-6
    """Seconds per prompt token the slot does not hold yet."""
    output_token_s: float = 80e-6
    """Seconds per generated token."""
    n_ctx_per_slot: int = 8192
    slot_similarity: float = 0.1
    """llama-server's -sps default: a slot is chosen for its cache only if it holds at least
    this share of the prompt."""
    topics: Sequence[str] = TOPICS
    private_chars: int = 400
    """Length of each agent's private message."""
    served: list[Served] = field(default_factory=list, init=False)
    """Every completed request, in the order it finished."""

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError(f"slots must be >= 1, got {self.slots}")
        if min(self.prompt_token_s, self.output_token_s) < 0:
            raise ValueError("per-token costs must be >= 0")
        self.limiter = SlotLimiter(self.slots)
        self._cached = [""] * self.slots
        self._last_used = [0] * self.slots
        self._free = set(range(self.slots))
        self._counts: dict[str, int] = {}
        self._clock = 0
        self._usage = Usage()
        self.in_flight = 0
        self.max_in_flight = 0
        # Private messages are cut from one long text: cheap, so the client is what is timed.
        shuffled = random.Random(0).sample(list(self.topics) * 8, len(self.topics) * 8)
        self._text = " ".join(shuffled * (1 + self.private_chars // (6 * len(shuffled))))

    @property
    def usage(self) -> Usage:
        return self._usage

    @property
    def info(self) -> ServerInfo:
        return ServerInfo(
            base_url="simulated://",
            model="simulated",
            slots=self.slots,
            n_ctx_per_slot=self.n_ctx_per_slot,
            supports_tools=False,
        )

    async def connect(self) -> ServerInfo:
        return self.info

    async def count_tokens(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> int:
        return tokens(render(messages, tools))

    async def chat(self, request: ChatRequest) -> ChatResponse:
        await admit(self, request)
        prompt = render(request.messages, request.tools)
        n_prompt = tokens(prompt)
        if n_prompt + request.max_tokens > self.n_ctx_per_slot:
            raise _overflow(n_prompt, request.max_tokens, self.n_ctx_per_slot)
        number = self._counts.get(request.tag, 0)
        self._counts[request.tag] = number + 1
        loop = asyncio.get_running_loop()
        queued_at = loop.time()
        async with self.limiter:
            started_at = loop.time()
            slot = self._take(prompt)
            try:
                # Writing the reply is the server's work: it happens in the slot's time.
                content, finish = self._reply(request, number)
                n_out = tokens(content)
                cached = _cached_tokens(common_prefix(self._cached[slot], prompt), prompt)
                await asyncio.sleep(
                    (n_prompt - cached) * self.prompt_token_s + n_out * self.output_token_s
                )
                self._cached[slot] = prompt + content
            finally:
                self._give(slot)
            ended_at = loop.time()
        self.served.append(
            Served(request.tag, slot, queued_at, started_at, ended_at, n_prompt, cached, n_out)
        )
        usage = Usage(
            prompt_tokens=n_prompt, completion_tokens=n_out, cached_tokens=cached, requests=1
        )
        self._usage = self._usage + usage
        settle(usage)
        timings = Timings(
            prompt_n=n_prompt - cached,
            prompt_ms=(n_prompt - cached) * self.prompt_token_s * 1000,
            predicted_n=n_out,
            predicted_ms=n_out * self.output_token_s * 1000,
            cache_n=cached,
        )
        return ChatResponse(
            content=content,
            finish_reason=finish,
            usage=usage,
            timings=timings,
            wall_s=ended_at - started_at,
        )

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[str]]:
        reply = await self.chat(request)

        async def deltas() -> AsyncIterator[str]:
            yield reply.content

        yield deltas()

    def _take(self, prompt: str) -> int:
        """The free slot whose cache matches the most of `prompt`, if that is at least
        `slot_similarity` of it; else the least recently used free slot."""
        best = max(self._free, key=lambda s: (common_prefix(self._cached[s], prompt), -s))
        share = common_prefix(self._cached[best], prompt) / max(1, len(prompt))
        if share < self.slot_similarity or share == 0:
            best = min(self._free, key=lambda s: (self._last_used[s], s))
        self._free.remove(best)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return best

    def _give(self, slot: int) -> None:
        self._clock += 1
        self._last_used[slot] = self._clock
        self._free.add(slot)
        self.in_flight -= 1

    def _reply(self, request: ChatRequest, number: int) -> tuple[str, str]:
        """Content and finish reason: valid JSON for the schema, cut at max_tokens."""
        rng = random.Random(f"{request.tag}:{number}")
        fields = set((request.json_schema or {}).get("properties", {}))
        words = list(self.topics)
        reply: dict[str, Any]
        if {"public", "private", "query", "key"} <= fields:
            topic = " ".join(rng.sample(words, 2))
            start = rng.randrange(len(self._text) - self.private_chars)
            reply = {
                "public": f"{request.tag} worked on {topic} (step {number + 1}).",
                "private": self._text[start : start + self.private_chars],
                "query": " ".join(rng.sample(words, 2)),
                "key": " ".join(rng.sample(words, 2)),
            }
        elif "goal_next" in fields:
            reply = {
                "goal_next": f"Go deeper on {' '.join(rng.sample(words, 2))}.",
                "halt": False,
                "reason": "more rounds help",
                "final_answer": "",
            }
        elif "goal" in fields:
            reply = {"goal": f"Study {' '.join(rng.sample(words, 3))} and report."}
        elif "final_answer" in fields:
            reply = {"final_answer": "Summary: " + " ".join(rng.sample(words, 12))}
        else:
            reply = {"text": " ".join(rng.sample(words, 8))}
        content = json.dumps(reply)
        limit = request.max_tokens * CHARS_PER_TOKEN
        return (content, "stop") if len(content) <= limit else (content[:limit], "length")


def _cached_tokens(prefix: int, prompt: str) -> int:
    """Prompt tokens wholly inside a common prefix of `prefix` characters."""
    return tokens(prompt) if prefix == len(prompt) else prefix // CHARS_PER_TOKEN


def _overflow(prompt: int, max_tokens: int, n_ctx: int) -> ContextOverflow:
    needed = f"{prompt} prompt + {max_tokens} max_tokens > {n_ctx}"
    body = json.dumps(
        {
            "error": {
                "code": 400,
                "message": f"the request exceeds the available context size ({needed})",
                "type": "exceed_context_size_error",
            }
        }
    )
    error = error_for(400, body, URL)
    assert isinstance(error, ContextOverflow)
    return error
