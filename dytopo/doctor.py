"""`dytopo doctor`: check that a server can carry a swarm, and measure it."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable

from pydantic import BaseModel, Field

from dytopo.backends.llamacpp import LlamaCppBackend
from dytopo.backends.types import ChatMessage, ChatRequest, Sampling
from dytopo.budget.plan import kv_layout
from dytopo.embedders.http import HttpEmbedder
from dytopo.errors import BackendError, DyTopoError, ManagedServerError
from dytopo.managed import models
from dytopo.managed.resolve import own_server

TEMPLATE_FIX = (
    "serve the model with `--jinja --chat-template-file` and a template that has a tools section "
    "(DyTopo ships dytopo/managed/templates/chatml_tools.jinja)"
)

EMBEDDINGS_FIX = (
    "start llama-server with --embeddings (and a pooled sentence-embedding model), or pass "
    "--embed-url (or set $DYTOPO_EMBED_URL / embedder.base_url) to a server that has them: "
    "runs stop before round 1 without them"
)

CACHE_FIX = (
    "let the server reuse prompts: run llama-server without --no-cache-prompt (and never send "
    "cache_prompt: false); with several slots keep its host prompt cache (--cache-ram above 0) "
    "or slot similarity (-sps above 0)"
)

CACHE_PREFIX = "Reference notes for a prompt-cache check.\n" + "\n".join(
    f"Note {i}: the {name} measured {i * 7} units on day {i + 3}."
    for i, name in enumerate(
        ["river", "forest", "harbor", "valley", "bridge", "tower", "market", "garden"] * 3
    )
)
"""A system prompt of ~470 tokens (SmolLM2) that the prompt-cache check sends twice."""


class Check(BaseModel):
    name: str
    ok: bool
    detail: str = ""
    fix: str = ""
    warning: bool = False
    """Works, but slower than it could (ok stays True: the server can still carry a swarm)."""


class PromptCache(BaseModel):
    """What the second of two requests with the same prefix got from the server's cache."""

    reused: int = 0
    """Prompt tokens the server did not process again (cache_n)."""
    prompt: int = 0
    """Prompt tokens of that request."""


class Burst(BaseModel):
    requests: int = 0
    completed: int = 0
    max_in_flight: int = 0
    """Most requests the server itself was processing at once (polled from /slots)."""
    client_max_in_flight: int = 0
    """Most requests the client had in flight at once."""
    wall_s: float = 0.0


class EmbeddedModelStatus(BaseModel):
    """The chat model of the embedded server: the one running, or the one a run would start."""

    name: str
    title: str
    file: str
    """The GGUF (a split model's assembled copy in the model cache)."""
    ready: bool
    """Installed and, when split, assembled and verified: it starts without waiting."""
    bytes: int | None = None
    problem: str = ""
    """Why it cannot start, with the command that fixes it."""


def embedded_status(name: str | None = None) -> EmbeddedModelStatus:
    """What `dytopo doctor` says about the embedded chat model `name` (None: the default)."""
    try:
        model = models.embedded_model(name)
    except ManagedServerError as exc:  # a bad $DYTOPO_MODEL: a warning beside another server
        chosen = name or os.environ.get("DYTOPO_MODEL", "")
        return EmbeddedModelStatus(name=chosen, title="", file="", ready=False, problem=str(exc))
    status = EmbeddedModelStatus(
        name=model.name, title=model.title, file="", ready=False, bytes=model.size
    )
    try:
        path = models.model_file(model)
    except ManagedServerError as exc:
        status.problem = str(exc)
        return status
    status.file, status.ready = str(path), models.is_ready(model)
    if status.bytes is None and path.is_file():
        status.bytes = path.stat().st_size
    return status


def embedded_check(status: EmbeddedModelStatus, *, in_use: bool) -> Check:
    """The doctor's line on the embedded model; a problem is a warning (this server may not
    need it)."""
    size = f", {status.bytes / 1e9:.2f} GB" if status.bytes else ""
    state = "ready" if status.ready else "assembled from its packages on first start"
    detail = f"{status.name} ({status.title}): {status.file or 'not installed'}"
    detail += f" ({state}{size})" if not status.problem else ""
    if not in_use:
        detail += "; used when no server is configured (--model or $DYTOPO_MODEL choose it)"
    return Check(
        name="embedded model",
        ok=True,
        warning=bool(status.problem),
        detail=detail,
        fix=status.problem,
    )


class DoctorReport(BaseModel):
    ok: bool = False
    url: str
    embed_url: str | None = None
    source: str = "configured"
    model: str = ""
    slots: int = 0
    n_ctx_per_slot: int = 0
    supports_tools: bool | None = None
    kv_layout: str = ""
    """How the server's slots keep their KV cache, as DyTopo plans for it."""
    json_schema: bool = False
    embeddings: bool = False
    prompt_tokens_per_s: float = 0.0
    generation_tokens_per_s: float = 0.0
    burst: Burst = Field(default_factory=Burst)
    prompt_cache: PromptCache = Field(default_factory=PromptCache)
    embedded_model: EmbeddedModelStatus | None = None
    """The embedded chat model that runs (source embedded or background) or would run."""
    checks: list[Check] = Field(default_factory=list)


async def run_doctor(
    url: str, embed_url: str | None = None, *, source: str = "configured", burst_factor: int = 3
) -> DoctorReport:
    """Run every check against the server at `url`; never raises for a failing server."""
    report = DoctorReport(url=url, embed_url=embed_url, source=source)
    async with LlamaCppBackend(url) as backend:
        try:
            info = await backend.connect()
        except DyTopoError as exc:
            report.checks.append(
                Check(
                    name="reachable",
                    ok=False,
                    detail=str(exc),
                    fix="start the server or fix --backend-url",
                )
            )
            return report
        report.model, report.slots = info.model, info.slots
        report.n_ctx_per_slot, report.supports_tools = info.n_ctx_per_slot, info.supports_tools
        report.checks.append(
            Check(
                name="reachable",
                ok=True,
                detail=f"{info.model}, {info.slots} slots x {info.n_ctx_per_slot} ctx",
            )
        )
        own = source in ("embedded", "background") or own_server(url, info.model)
        shared, how = kv_layout(None, own)
        report.kv_layout = how
        report.checks.append(
            Check(
                name="kv_layout",
                ok=True,
                detail=f"KV cache: {how}; planned: "
                + (
                    f"{info.slots} concurrent requests share {info.n_ctx_per_slot} tokens"
                    if shared
                    else f"each request up to {info.n_ctx_per_slot} tokens"
                ),
            )
        )
        report.checks.append(
            Check(
                name="tools",
                ok=bool(info.supports_tools),
                detail=f"chat template supports tools: {info.supports_tools}",
                fix="" if info.supports_tools else TEMPLATE_FIX,
            )
        )
        await _check(report, "json_schema", _json_schema(backend, report))
        await _check(report, "speed", _speed(backend, report))
        await _check(report, "prompt_cache", check_prompt_cache(backend, report))
        await _check(report, "embeddings", _embeddings(embed_url or url, report))
        await _check(report, "burst", _burst(backend, report, burst_factor))
    report.ok = all(c.ok for c in report.checks)
    return report


_FAILED = (DyTopoError, AssertionError, ValueError, KeyError)
"""What a check that fails raises (anything else is a bug in the doctor)."""


async def _check(report: DoctorReport, name: str, probe: Awaitable[str | Check]) -> None:
    try:
        detail = await probe
        check = detail if isinstance(detail, Check) else Check(name=name, ok=True, detail=detail)
        report.checks.append(check)
    except _FAILED as exc:
        report.checks.append(Check(name=name, ok=False, detail=f"{type(exc).__name__}: {exc}"))
    except ExceptionGroup as group:  # the burst's requests, failing together: one line
        first = _first_leaf(group)
        if not isinstance(first, _FAILED):
            raise
        detail = f"{type(first).__name__}: {first} ({_leaves(group)} requests failed)"
        report.checks.append(Check(name=name, ok=False, detail=detail))


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _leaves(error: BaseException) -> int:
    if isinstance(error, BaseExceptionGroup):
        return sum(_leaves(e) for e in error.exceptions)
    return 1


async def _json_schema(backend: LlamaCppBackend, report: DoctorReport) -> str:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    reply = await backend.chat(
        ChatRequest(
            messages=[
                ChatMessage(role="user", content="Name a big city and its population as JSON.")
            ],
            json_schema=schema,
            max_tokens=64,
            sampling=Sampling(temperature=0.1),
            tag="doctor",
        )
    )
    value = json.loads(reply.content)
    assert set(value) == {"city", "population"}, f"unexpected keys {sorted(value)}"
    report.json_schema = True
    return json.dumps(value)


async def _speed(backend: LlamaCppBackend, report: DoctorReport) -> str:
    text = "Explain in detail how a bicycle works, part by part. " * 6
    reply = await backend.chat(
        ChatRequest(
            messages=[ChatMessage(role="user", content=text)],
            max_tokens=96,
            tag="doctor",
            sampling=Sampling(temperature=0.7, seed=1),
        )
    )
    if reply.timings is None:
        report.generation_tokens_per_s = round(
            reply.usage.completion_tokens / max(reply.wall_s, 1e-6), 1
        )
        return f"~{report.generation_tokens_per_s} tok/s end to end (server reports no timings)"
    report.prompt_tokens_per_s = round(reply.timings.prompt_per_second, 1)
    report.generation_tokens_per_s = round(reply.timings.predicted_per_second, 1)
    return (
        f"prompt {report.prompt_tokens_per_s} tok/s, "
        f"generation {report.generation_tokens_per_s} tok/s"
    )


async def check_prompt_cache(backend: LlamaCppBackend, report: DoctorReport) -> Check:
    """Send one prefix twice; the second request should find it in the server's cache."""
    replies = []
    for question in ("Reply with yes.", "Reply with no."):
        replies.append(
            await backend.chat(
                ChatRequest(
                    messages=[
                        ChatMessage(role="system", content=CACHE_PREFIX),
                        ChatMessage(role="user", content=question),
                    ],
                    max_tokens=1,
                    sampling=Sampling(temperature=0.0),
                    tag="doctor",
                )
            )
        )
    second = replies[-1]
    cache = PromptCache(reused=second.usage.cached_tokens, prompt=second.usage.prompt_tokens)
    report.prompt_cache = cache
    line = f"reused {cache.reused} of {cache.prompt} prompt tokens"
    if cache.prompt and cache.reused * 2 >= cache.prompt:
        return Check(name="prompt_cache", ok=True, detail=line)
    if second.timings is None and not cache.reused:
        return Check(
            name="prompt_cache",
            ok=True,
            warning=True,
            detail="the server reports no cached prompt tokens (not llama-server?): cannot tell "
            "whether it reuses prompts",
        )
    return Check(
        name="prompt_cache",
        ok=True,
        warning=True,
        detail=f"{line}: the server processed the same prefix again, so every round of a "
        "swarm costs its whole prompt",
        fix=CACHE_FIX,
    )


async def _embeddings(url: str, report: DoctorReport) -> str | Check:
    embedder = HttpEmbedder(url)
    try:
        a, b, c = await embedder.embed(
            [
                "A man is eating food.",
                "A man is eating a piece of bread.",
                "The stock market fell sharply today.",
            ]
        )
    except BackendError as exc:
        if exc.status not in (404, 501):
            raise
        # A generation-only server: every run stops before round 1 (runner.probe_embedder).
        return Check(
            name="embeddings",
            ok=False,
            detail=f"{exc.url} answered HTTP {exc.status}: no embeddings on this server",
            fix=EMBEDDINGS_FIX,
        )
    finally:
        await embedder.aclose()
    related = sum(x * y for x, y in zip(a, b, strict=True))
    unrelated = sum(x * y for x, y in zip(a, c, strict=True))
    assert related > unrelated, f"related {related:.3f} <= unrelated {unrelated:.3f}"
    report.embeddings = True
    return f"dim {len(a)}, cosine related {related:.3f}, unrelated {unrelated:.3f}"


async def _burst(backend: LlamaCppBackend, report: DoctorReport, factor: int) -> str:
    n = factor * report.slots
    burst = Burst(requests=n)
    done = asyncio.Event()

    async def one(i: int) -> None:
        await backend.chat(
            ChatRequest(
                messages=[ChatMessage(role="user", content=f"Count from {i} to {i + 20}.")],
                max_tokens=32,
                tag=f"burst-{i}",
                sampling=Sampling(temperature=0.0),
            )
        )
        burst.completed += 1

    async def watch() -> None:
        while not done.is_set():
            try:
                burst.max_in_flight = max(burst.max_in_flight, await backend.busy_slots())
            except DyTopoError:
                return
            await asyncio.sleep(0.02)

    started = time.monotonic()
    backend.limiter.max_in_use = 0
    async with asyncio.TaskGroup() as group:
        watcher = group.create_task(watch())
        async with asyncio.TaskGroup() as requests:
            for i in range(n):
                requests.create_task(one(i))
        done.set()
        await watcher
    burst.wall_s = round(time.monotonic() - started, 2)
    burst.client_max_in_flight = backend.limiter.max_in_use
    report.burst = burst
    assert burst.completed == n, f"{burst.completed}/{n} completed"
    assert burst.max_in_flight <= report.slots, (
        f"server had {burst.max_in_flight} requests in flight, more than its {report.slots} slots"
    )
    return (
        f"{burst.completed}/{n} completed in {burst.wall_s}s, max in flight "
        f"{burst.max_in_flight} (server) / {burst.client_max_in_flight} (client), "
        f"slots {report.slots}"
    )
