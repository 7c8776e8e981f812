"""The llama.cpp client against a real llama-server."""

from __future__ import annotations

import asyncio

import pytest

from dytopo.backends import BackendSettings, ChatMessage, ChatRequest, LlamaCppBackend, Sampling
from dytopo.doctor import run_doctor
from dytopo.errors import BackendUnavailable
from dytopo.managed import LlamaServerProcess, ManagedStack
from dytopo.managed.server import chat_server, free_port


async def test_doctor_passes_and_burst_stays_within_slots(stack: ManagedStack) -> None:
    report = await run_doctor(stack.chat_url, stack.embed_url, source="embedded")
    failed = [c for c in report.checks if not c.ok]
    assert not failed, failed
    assert report.slots == 2
    assert report.n_ctx_per_slot == 2048
    assert report.burst.requests == 6
    assert report.burst.completed == 6
    assert 1 <= report.burst.max_in_flight <= report.slots
    assert report.burst.client_max_in_flight == report.slots


async def test_token_count_matches_the_servers_own(stack: ManagedStack) -> None:
    messages = [
        ChatMessage(role="system", content="You are terse."),
        ChatMessage(role="user", content="Name three primary colours, comma separated."),
    ]
    async with LlamaCppBackend(stack.chat_url) as backend:
        counted = await backend.count_tokens(messages)
        reply = await backend.chat(
            ChatRequest(messages=messages, max_tokens=1, sampling=Sampling(temperature=0.0))
        )
    assert counted == reply.usage.prompt_tokens


async def test_cancelled_request_frees_the_server_slot(stack: ManagedStack) -> None:
    async with LlamaCppBackend(stack.chat_url) as backend:
        long = ChatRequest(
            messages=[ChatMessage(role="user", content="Write a very long story about ships.")],
            max_tokens=1500,
            sampling=Sampling(temperature=0.8),
        )
        task = asyncio.create_task(backend.chat(long))
        for _ in range(200):
            if await backend.busy_slots() >= 1:
                break
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            if await backend.busy_slots() == 0:
                break
            await asyncio.sleep(0.02)
        assert await backend.busy_slots() == 0, "server kept generating for a cancelled request"


async def test_retries_across_a_server_restart(dytopo_home: object) -> None:
    port = free_port()
    first = chat_server(slots=1, ctx_per_slot=1024)
    first.port = port
    await first.start()
    settings = BackendSettings(
        base_url=first.url, max_attempts=30, backoff_initial_s=0.2, backoff_max_s=0.5
    )
    request = ChatRequest(messages=[ChatMessage(role="user", content="Say hi.")], max_tokens=8)
    second: LlamaServerProcess | None = None
    try:
        async with LlamaCppBackend(settings) as backend:
            assert (await backend.chat(request)).usage.requests == 1
            first.stop()  # the server dies mid-run ...

            async def restart() -> None:
                nonlocal second
                await asyncio.sleep(1.0)
                second = chat_server(slots=1, ctx_per_slot=1024)
                second.port = port
                await second.start()  # ... and comes back on the same port

            async with asyncio.TaskGroup() as group:
                group.create_task(restart())
                reply = group.create_task(backend.chat(request))
            assert reply.result().attempts > 1
            assert backend.http.retries >= 1
    finally:
        first.stop()
        if second is not None:
            second.stop()


async def test_unavailable_error_names_url_and_fix() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    settings = BackendSettings(
        base_url=url, max_attempts=3, backoff_initial_s=0.01, backoff_max_s=0.02
    )
    backend = LlamaCppBackend(settings)
    with pytest.raises(BackendUnavailable) as info:
        await backend.connect()
    await backend.aclose()
    assert url in str(info.value)
    assert "after 3 attempt(s)" in str(info.value)
