import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from dytopo.backends import BackendSettings, ChatMessage, ChatRequest, LlamaCppBackend
from dytopo.errors import BackendError, BackendUnavailable, ContextOverflow, MalformedReply

URL = "http://llama.test:8008"
PROPS = {
    "default_generation_settings": {"n_ctx": 65536},
    "total_slots": 2,
    "model_alias": "qwen3-30b",
    "chat_template_caps": {"supports_tools": True},
    "build_info": "b1234",
}


def sse(*chunks: dict[str, Any]) -> httpx.Response:
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})


def completion(text: str = "hi", prompt: int = 10, completion_tokens: int = 2) -> httpx.Response:
    """A llama-server style stream: text deltas, then finish, usage and timings."""
    half = len(text) // 2
    return sse(
        {"choices": [{"delta": {"role": "assistant", "content": text[:half]}}]},
        {"choices": [{"delta": {"content": text[half:]}}]},
        {"choices": [{"delta": {}, "finish_reason": "stop"}]},
        {
            "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion_tokens},
            "timings": {
                "prompt_n": prompt,
                "predicted_n": completion_tokens,
                "predicted_per_second": 50.0,
                "prompt_per_second": 500.0,
                "cache_n": 3,
            },
        },
    )


Handler = Callable[[httpx.Request], Any]


def backend(handler: Handler, **settings: Any) -> LlamaCppBackend:
    settings.setdefault("backoff_initial_s", 0.001)
    settings.setdefault("backoff_max_s", 0.002)
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return LlamaCppBackend(BackendSettings(base_url=URL, **settings), client=client)


def request(text: str = "hello") -> ChatRequest:
    return ChatRequest(messages=[ChatMessage(role="user", content=text)], max_tokens=8)


def server(chat: Handler | None = None) -> Handler:
    def handle(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/props":
            return httpx.Response(200, json=PROPS)
        if req.url.path == "/v1/chat/completions":
            return chat(req) if chat else completion()
        return httpx.Response(404, text="not found")

    return handle


async def test_connect_reads_props_and_sizes_the_limiter() -> None:
    b = backend(server())
    info = await b.connect()
    assert (info.slots, info.n_ctx_per_slot, info.model) == (2, 65536, "qwen3-30b")
    assert info.supports_tools is True
    assert b.limiter.capacity == 2


async def test_config_overrides_props() -> None:
    info = await backend(server(), slots=1, n_ctx_per_slot=2048).connect()
    assert (info.slots, info.n_ctx_per_slot) == (1, 2048)


async def test_server_without_props_works_with_a_warning() -> None:
    def handle(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "llama3:8b"}]})
        if req.url.path == "/v1/chat/completions":
            body = json.loads(req.content)
            assert "top_k" not in body  # only portable sampling keys go to foreign servers
            return sse({"choices": [{"delta": {"content": "ok"}, "finish_reason": "stop"}]})
        return httpx.Response(404)

    b = backend(handle)
    with capture_logs() as logs:
        info = await b.connect()
    assert not info.llamacpp
    assert info.model == "llama3:8b"
    assert any(e["event"] == "backend.no_props" for e in logs)
    assert (await b.chat(request())).content == "ok"
    assert await b.count_tokens([ChatMessage(role="user", content="x" * 300)]) >= 100


async def test_chat_parses_usage_and_timings() -> None:
    b = backend(server())
    reply = await b.chat(request())
    assert reply.content == "hi"
    assert reply.usage.prompt_tokens == 10
    assert reply.usage.cached_tokens == 3
    assert reply.timings is not None
    assert reply.timings.predicted_per_second == 50.0
    assert b.usage.requests == 1


async def test_request_body_carries_schema_sampling_and_tools() -> None:
    seen: list[dict[str, Any]] = []

    def chat(req: httpx.Request) -> httpx.Response:
        seen.append(json.loads(req.content))
        return completion()

    req = request()
    req.json_schema = {"type": "object"}
    req.tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    req.tool_choice = "required"
    await backend(server(chat)).chat(req)
    body = seen[0]
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert body["tool_choice"] == "required"
    assert body["top_k"] == 20
    assert body["repeat_penalty"] == 1.0


async def test_transient_failures_are_retried_and_counted() -> None:
    calls = {"n": 0}

    def chat(req: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.ConnectError("refused")
        if calls["n"] == 2:
            return httpx.Response(503, json={"error": {"message": "Loading model"}})
        return completion()

    b = backend(server(chat))
    with capture_logs() as logs:
        reply = await b.chat(request())
    assert reply.attempts == 3
    assert b.http.retries == 2
    assert [e["event"] for e in logs].count("backend.retry") == 2


async def test_unavailable_after_retries_names_the_url() -> None:
    def handle(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    b = backend(handle, max_attempts=3)
    with pytest.raises(BackendUnavailable) as info:
        await b.connect()
    message = str(info.value)
    assert URL in message
    assert "3 attempt" in message
    assert "dytopo doctor" in message


async def test_client_errors_are_not_retried() -> None:
    calls = {"n": 0}

    def chat(req: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(400, json={"error": {"message": "bad field"}})

    with pytest.raises(BackendError, match="HTTP 400"):
        await backend(server(chat)).chat(request())
    assert calls["n"] == 1


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, "the request exceeds the available context size", ContextOverflow),
        (
            500,
            "Failed to parse tool call: output does not match the expected format",
            MalformedReply,
        ),
    ],
)
async def test_error_bodies_map_to_errors(status: int, body: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        await backend(server(lambda r: httpx.Response(status, text=body))).chat(request())


async def test_never_more_requests_in_flight_than_slots() -> None:
    state = {"now": 0, "max": 0}

    async def handle(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/props":
            return httpx.Response(200, json=PROPS)
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        await asyncio.sleep(0.01)
        state["now"] -= 1
        return completion()

    b = backend(handle)
    async with asyncio.TaskGroup() as group:
        for i in range(9):
            group.create_task(b.chat(request(str(i))))
    assert state["max"] == 2
    assert b.usage.requests == 9


async def test_count_tokens_applies_template_then_tokenizes_and_caches() -> None:
    paths: list[str] = []

    def handle(req: httpx.Request) -> httpx.Response:
        paths.append(req.url.path)
        if req.url.path == "/props":
            return httpx.Response(200, json=PROPS)
        if req.url.path == "/apply-template":
            return httpx.Response(200, json={"prompt": "<|im_start|>user\nhi<|im_end|>"})
        if req.url.path == "/tokenize":
            assert json.loads(req.content)["content"].startswith("<|im_start|>")
            return httpx.Response(200, json={"tokens": [1, 2, 3, 4, 5]})
        return httpx.Response(404)

    b = backend(handle)
    messages = [ChatMessage(role="user", content="hi")]
    assert await b.count_tokens(messages) == 5
    assert await b.count_tokens(messages) == 5
    assert paths.count("/tokenize") == 1


async def test_cancellation_frees_the_slot() -> None:
    release, entered = asyncio.Event(), asyncio.Event()

    async def handle(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/props":
            return httpx.Response(200, json=PROPS)
        entered.set()
        await release.wait()
        return completion()

    b = backend(handle, slots=1)
    task = asyncio.create_task(b.chat(request()))
    await entered.wait()
    assert b.limiter.in_use == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert b.limiter.in_use == 0
    release.set()
    assert (await b.chat(request())).content == "hi"


async def test_tool_call_fragments_are_assembled() -> None:
    def chat(req: httpx.Request) -> httpx.Response:
        return sse(
            {
                "choices": [
                    {
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": "c1",
                                    "function": {"name": "calc", "arguments": '{"expr'},
                                }
                            ]
                        }
                    }
                ]
            },
            {
                "choices": [
                    {
                        "delta": {
                            "tool_calls": [
                                {"index": 0, "function": {"arguments": 'ession": "1+1"}'}}
                            ]
                        },
                        "finish_reason": "tool_calls",
                    }
                ]
            },
        )

    reply = await backend(server(chat)).chat(request())
    assert reply.finish_reason == "tool_calls"
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == [
        ("c1", "calc", '{"expression": "1+1"}')
    ]


async def test_error_event_mid_stream_maps_to_malformed_reply() -> None:
    def chat(req: httpx.Request) -> httpx.Response:
        return sse({"error": {"code": 500, "message": "output does not match the expected format"}})

    with pytest.raises(MalformedReply):
        await backend(server(chat)).chat(request())


async def test_stream_yields_text_deltas() -> None:
    b = backend(server(lambda r: completion("hello world")))
    async with b.stream(request()) as deltas:
        parts = [d async for d in deltas]
    assert "".join(parts) == "hello world"
    assert b.usage.requests == 1


async def test_embedder_batches_in_order_normalises_and_cuts_long_inputs() -> None:
    from dytopo.embedders import HttpEmbedder

    seen: list[list[str]] = []

    def handle(req: httpx.Request) -> httpx.Response:
        inputs = json.loads(req.content)["input"]
        seen.append(inputs)
        data = [
            {"index": i, "embedding": [3.0, 4.0] if i == 0 else [0.0, 2.0]}
            for i in range(len(inputs))
        ]
        return httpx.Response(200, json={"data": list(reversed(data))})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    embedder = HttpEmbedder(URL, client=client)
    vectors = await embedder.embed(["short", "x" * 5000])
    assert vectors == [[0.6, 0.8], [0.0, 1.0]]
    assert len(seen) == 1
    assert len(seen[0][1]) == 500
