"""The llama.cpp client against a real llama-server."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from dytopo.backends import BackendSettings, ChatMessage, ChatRequest, LlamaCppBackend, Sampling
from dytopo.doctor import run_doctor
from dytopo.errors import BackendError, BackendUnavailable
from dytopo.managed import LlamaServerProcess, ManagedStack
from dytopo.managed.server import chat_server, free_port


async def assert_slots_free_early(backend: LlamaCppBackend, max_tokens: int) -> None:
    """Every slot goes idle after a cancel, well before the server could have generated
    `max_tokens` at its own measured speed: it stopped, it did not run on to the end.

    Time-based (not a fixed number of polls): on a loaded CPU the server notices the closed
    connection only at its next token, which can take seconds.
    """
    started = time.monotonic()
    while time.monotonic() - started < 120:  # polling: the server offers no idle event
        if not await backend.busy_slots():
            break
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    assert await backend.busy_slots() == 0, "server kept generating for a cancelled request"
    metrics, _ = await backend.http.send("GET", "/metrics", retry=False)
    rate = re.search(r"^llamacpp:predicted_tokens_seconds ([0-9.e+-]+)$", metrics.text, re.M)
    if rate and float(rate.group(1)) > 0:  # no completed request yet: no speed to compare to
        full_run_s = max_tokens / float(rate.group(1))
        assert elapsed < full_run_s / 2, (
            f"idle after {elapsed:.1f}s; a full run is {full_run_s:.1f}s"
        )


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
        await assert_slots_free_early(backend, long.max_tokens)


async def test_retries_across_a_server_restart(dytopo_home: object) -> None:
    port = free_port()
    first = chat_server(slots=1, ctx_per_slot=1024)
    first.port = port
    # 20 attempts (the cap) of up to 2 s each outlast a restart even on a loaded machine.
    settings = BackendSettings(
        base_url=first.url, max_attempts=20, backoff_initial_s=0.5, backoff_max_s=2.0
    )
    await first.start()
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


async def test_holders_and_waiters_cancelled_together_free_every_slot(stack: ManagedStack) -> None:
    """Cancel slot holders and queued waiters in the same loop iteration: every task ends in
    CancelledError, the client's books balance and the server's slots all come free.

    One holder is a real request; the other holds its slot without I/O (as a scripted or
    custom agent does), so its release lands in the very iteration the waiters are cancelled
    in: the race that once raised ValueError from the waiters.
    """
    long = ChatRequest(
        messages=[ChatMessage(role="user", content="Write a very long story about ships.")],
        max_tokens=1500,
        sampling=Sampling(temperature=0.8),
    )

    async def hold_without_io() -> None:
        async with backend.limiter:
            await asyncio.Event().wait()

    async with LlamaCppBackend(stack.chat_url) as backend:
        assert backend.info.slots == 2
        real = asyncio.create_task(backend.chat(long))
        bare = asyncio.create_task(hold_without_io())
        waiters = [asyncio.create_task(backend.chat(long)) for _ in range(3)]
        deadline = time.monotonic() + 120
        while not (await backend.busy_slots() == 1 and backend.limiter.waiting == 3):
            assert time.monotonic() < deadline, "the real request never started"
            await asyncio.sleep(0.02)
        for task in [bare, waiters[1], waiters[0], real, waiters[2]]:
            task.cancel()  # back to back: all land in the same loop iteration
        results = await asyncio.gather(real, bare, *waiters, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results), results
        assert (backend.limiter.in_use, backend.limiter.waiting) == (0, 0)
        await assert_slots_free_early(backend, long.max_tokens)
        short = ChatRequest(messages=[ChatMessage(role="user", content="Say hi.")], max_tokens=4)
        replies = await asyncio.gather(*(backend.chat(short) for _ in range(3)))
        assert all(r.usage.requests == 1 for r in replies)
        assert backend.limiter.max_in_use == 2


@pytest.mark.parametrize(
    "url", ["not a url", "file:///tmp/server", "ftp://127.0.0.1", "http://[::1"]
)
async def test_unusable_urls_fail_at_once_through_the_real_transport(url: str) -> None:
    settings = BackendSettings.model_construct(
        **{**BackendSettings().model_dump(), "base_url": url, "max_attempts": 6}
    )
    backend = LlamaCppBackend(settings)
    started = asyncio.get_running_loop().time()
    with pytest.raises(BackendError) as info:
        await backend.connect()
    await backend.aclose()
    assert not isinstance(info.value, BackendUnavailable)
    assert backend.http.retries == 0
    assert asyncio.get_running_loop().time() - started < 1.0
    assert url in str(info.value)
    assert "\n" not in str(info.value)
