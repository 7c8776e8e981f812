"""Which server a run talks to: the configured one, a background one, or a fresh embedded one."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Literal

import httpx
import structlog
from pydantic import BaseModel

from dytopo.errors import ManagedServerError
from dytopo.managed import assets, models
from dytopo.managed.server import (
    DEFAULT_CTX_PER_SLOT,
    DEFAULT_SLOTS,
    ManagedStack,
    ProcessIdentity,
    chat_server,
    embedding_server,
)

log = structlog.get_logger("dytopo.managed")

Source = Literal["configured", "background", "embedded"]


class Endpoints(BaseModel):
    """Server roots for one run."""

    chat_url: str
    embed_url: str | None = None
    """Embedding server root; None: use the chat server's /v1/embeddings."""
    source: Source
    model: str | None = None
    """The embedded chat model's catalogue name; None for a configured server."""


class BackgroundState(BaseModel):
    """What `dytopo backend start` left running (kept in the cache folder)."""

    chat_url: str
    chat_pid: int
    embed_url: str
    embed_pid: int
    chat_process: ProcessIdentity
    """Who the chat server is: `stop` signals its pid only while the pid still names it."""
    embed_process: ProcessIdentity
    model: str | None = None
    """The chat model's catalogue name (None: recorded before models could be chosen)."""


def _state_file() -> Path:
    return assets.cache_dir() / "backend.json"


def _read_record() -> BackgroundState | None:
    path = _state_file()
    if not path.is_file():
        return None
    try:
        return BackgroundState.model_validate_json(path.read_text())
    except ValueError:
        return None


def read_background() -> BackgroundState | None:
    state = _read_record()
    if state is not None and state.chat_process.running() and state.embed_process.running():
        return state
    return None


async def start_background(
    *,
    model: str | None = None,
    slots: int = DEFAULT_SLOTS,
    ctx_per_slot: int = DEFAULT_CTX_PER_SLOT,
) -> BackgroundState:
    """Start the embedded servers detached, for many runs; `stop_background` ends them.
    Servers already running are returned as they are, unless they run another model."""
    chosen = models.embedded_model(model)
    existing = read_background()
    if existing is not None:
        if existing.model not in (None, chosen.name):
            raise ManagedServerError(
                f"the background server runs {existing.model}, not {chosen.name}: stop it "
                "first with `dytopo backend stop`"
            )
        return existing
    await asyncio.to_thread(models.ensure_model, chosen)  # seconds of I/O the first time
    chat = chat_server(model=chosen.name, slots=slots, ctx_per_slot=ctx_per_slot, detached=True)
    embed = embedding_server(detached=True)
    await chat.start()
    try:
        await embed.start()
    except BaseException:
        chat.stop()
        raise
    assert chat.pid is not None
    assert embed.pid is not None
    state = BackgroundState(
        chat_url=chat.url,
        chat_pid=chat.pid,
        embed_url=embed.url,
        embed_pid=embed.pid,
        chat_process=chat.identity(),
        embed_process=embed.identity(),
        model=chosen.name,
    )
    _state_file().write_text(state.model_dump_json())
    return state


def stop_background() -> Literal["stopped", "gone", "none"]:
    """Stop what `start_background` started and drop its record.

    "stopped": signalled; "gone": the recorded servers had exited (a pid that now names another
    process is left alone); "none": there was no readable record.
    """
    path = _state_file()
    state = _read_record()
    with suppress(FileNotFoundError):
        path.unlink()
    if state is None:
        return "none"
    stopped = [p.terminate() for p in (state.chat_process, state.embed_process)]
    return "stopped" if any(stopped) else "gone"


def configured_url(explicit: str | None) -> str | None:
    return explicit or os.environ.get("DYTOPO_BASE_URL") or None


@asynccontextmanager
async def endpoints(
    chat_url: str | None = None,
    embed_url: str | None = None,
    *,
    model: str | None = None,
    slots: int = DEFAULT_SLOTS,
    ctx_per_slot: int = DEFAULT_CTX_PER_SLOT,
) -> AsyncIterator[Endpoints]:
    """Yield the servers to use; an embedded stack started here is stopped on the way out.

    A configured server is used as is, even when down: silently swapping a user's 30B model for
    a small embedded one would be worse than the clear error the client raises. `model` (a
    catalogue name: --model, else the topology's backend.model) matters only when no server is
    configured: the background server serves when it runs that model (or when none was asked
    for, by `model` or $DYTOPO_MODEL), else an embedded stack starts on it.
    """
    url = configured_url(chat_url)
    embed = embed_url or os.environ.get("DYTOPO_EMBED_URL") or None
    if url:
        yield Endpoints(chat_url=url, embed_url=embed, source="configured")
        return
    asked = model or os.environ.get("DYTOPO_MODEL") or None
    chosen = models.embedded_model(model)  # an unknown name fails before anything starts
    state = read_background()
    if (
        state is not None
        and (asked is None or state.model == chosen.name)
        and await _healthy(state.chat_url)
    ):
        with _owned(state.chat_url):
            yield Endpoints(
                chat_url=state.chat_url,
                embed_url=state.embed_url,
                source="background",
                model=state.model,
            )
        return
    log.info("managed.embedded_start", model=chosen.name, slots=slots, ctx_per_slot=ctx_per_slot)
    async with ManagedStack(model=chosen.name, slots=slots, ctx_per_slot=ctx_per_slot) as stack:
        with _owned(stack.chat_url):
            yield Endpoints(
                chat_url=stack.chat_url,
                embed_url=stack.embed_url,
                source="embedded",
                model=chosen.name,
            )


_OWN: dict[str, int] = {}
"""Roots of the chat servers DyTopo started (embedded, background) that this process uses, with
how many users each has: their KV cache is one pool per slot (--no-kv-unified)."""


def own_server(url: str, model: str = "") -> bool:
    """Whether `url` is a chat server DyTopo started (so its KV layout is known): one this
    process started or found running, or one whose model alias (`model`, from /props) is a
    catalogue name, as DyTopo's servers are started (`--alias NAME --no-kv-unified`), also by
    another process (a test session's server, `dytopo backend start`)."""
    return url.rstrip("/") in _OWN or model in models.CATALOGUE


@contextmanager
def _owned(url: str) -> Iterator[None]:
    key = url.rstrip("/")
    _OWN[key] = _OWN.get(key, 0) + 1
    try:
        yield
    finally:
        _OWN[key] -= 1
        if not _OWN[key]:
            del _OWN[key]


async def _healthy(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            return (await client.get(f"{url}/health")).status_code == 200
    except httpx.TransportError:
        return False
