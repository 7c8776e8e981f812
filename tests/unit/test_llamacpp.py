import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from dytopo.backends import (
    BackendSettings,
    ChatMessage,
    ChatRequest,
    LlamaCppBackend,
    queue_clock,
)
from dytopo.backends.http import HttpTransport
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


def llama_error(message: str, kind: str, **extra: Any) -> dict[str, Any]:
    """llama-server's error body."""
    return {"error": {"code": 400, "message": message, "type": kind, **extra}}


@pytest.mark.parametrize(
    "body",
    [
        # llama-server: the structured type, whatever its message says (the wording moves
        # between builds)
        llama_error(
            "request (5000 tokens) exceeds the available context size (4096 tokens), try "
            "increasing it",
            "exceed_context_size_error",
            n_prompt_tokens=5000,
            n_ctx=4096,
        ),
        llama_error("prompt is 5000 tokens, slot holds 4096", "exceed_context_size_error"),
        # OpenAI's API names it by code
        {
            "error": {
                "message": "too long",
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
            }
        },
    ],
)
async def test_a_context_overflow_is_known_by_its_type(body: dict[str, Any]) -> None:
    calls = {"n": 0}

    def chat(req: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(400, json=body)

    with pytest.raises(ContextOverflow, match="does not fit the server's context") as info:
        await backend(server(chat)).chat(request())
    assert (info.value.status, calls["n"]) == (400, 1)


@pytest.mark.parametrize(
    "body",
    [
        llama_error("n_probs must not exceed 10 in this context", "invalid_request_error"),
        {"error": {"message": "max_tokens exceeds the model's limit (see context docs)"}},
        "max_tokens exceeds the limit; the context window is fine",
        {"error": {"code": {"n": 1}, "type": ["odd"], "message": "odd fields"}},
    ],
)
async def test_other_errors_that_mention_exceed_and_context_are_not_overflows(
    body: dict[str, Any] | str,
) -> None:
    def chat(req: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(400, text=body)
        return httpx.Response(400, json=body)

    with pytest.raises(BackendError, match="HTTP 400") as info:
        await backend(server(chat)).chat(request())
    assert type(info.value) is BackendError


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


# --- The slot is held only while a request is in flight, never during a retry's backoff ---


async def test_a_retrying_request_does_not_hold_the_slot_during_its_backoff() -> None:
    served: list[str] = []
    b_waits = asyncio.Event()

    class Clock:
        def queued(self) -> None:
            b_waits.set()

        def served(self) -> None:
            return

    async def chat(req: httpx.Request) -> httpx.Response:
        who = json.loads(req.content)["messages"][0]["content"]
        if who == "A" and not served:
            served.append("A1")
            await b_waits.wait()  # B now waits for the only slot
            return httpx.Response(503, text="Loading model")
        served.append("B" if who == "B" else "A2")
        return completion()

    b = backend(server(chat), slots=1)

    async def ask_b() -> None:
        queue_clock.set(Clock())
        await b.chat(request("B"))

    async with asyncio.TaskGroup() as group:
        a = group.create_task(b.chat(request("A")))
        group.create_task(ask_b())
    # B ran while A slept before its retry (with the slot held, A would have gone first).
    assert served == ["A1", "B", "A2"]
    assert a.result().attempts == 2
    assert b.limiter.max_in_use == 1
    assert b.limiter.in_use == 0


# --- Errors that cannot heal are not retried ---


@pytest.mark.parametrize(
    "error",
    [
        httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'file://'."),
        httpx.UnsupportedProtocol("Request URL is missing an 'http://' or 'https://' protocol."),
        httpx.LocalProtocolError("Illegal header value b'Bearer x\\n'"),
    ],
)
@pytest.mark.parametrize("path", ["/props", "/v1/chat/completions"])
async def test_request_errors_fail_at_once_with_one_clear_line(
    error: httpx.RequestError, path: str
) -> None:
    calls = {"n": 0}

    def handle(req: httpx.Request) -> httpx.Response:
        if req.url.path != path:
            return server()(req)
        calls["n"] += 1
        raise error

    b = backend(handle, max_attempts=6)
    with pytest.raises(BackendError) as info:
        await b.chat(request())
    assert calls["n"] == 1
    assert b.http.retries == 0
    assert not isinstance(info.value, BackendUnavailable)
    message = str(info.value)
    assert "\n" not in message
    assert f"{URL}{path}" in message
    assert ("api_key" if isinstance(error, httpx.LocalProtocolError) else "http://") in message


async def test_a_url_that_does_not_parse_fails_at_once() -> None:
    calls = {"n": 0}

    def handle(req: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(200, json=PROPS)

    # The transport itself, whatever the configuration layer lets through.
    client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    http = HttpTransport("http://[::1", BackendSettings(base_url=URL, max_attempts=6), client)
    with pytest.raises(BackendError) as info:
        await http.send("GET", "/props")
    assert calls["n"] == 0
    assert http.retries == 0
    assert not isinstance(info.value, BackendUnavailable)
    assert "http://[::1/props" in str(info.value)
    assert "backend URL" in str(info.value)


# --- SSE: truncated streams, error events, malformed data ---


def raw(text: str) -> httpx.Response:
    return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})


def data(*chunks: dict[str, Any]) -> str:
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)


PARTIAL = data({"choices": [{"delta": {"content": "half a rep"}}]})


async def test_a_stream_cut_before_done_and_finish_is_retried_by_chat() -> None:
    calls = {"n": 0}

    def chat(req: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return raw(PARTIAL) if calls["n"] == 1 else completion("whole")

    reply = await backend(server(chat)).chat(request())
    assert reply.content == "whole"
    assert reply.attempts == 2


async def test_a_stream_always_cut_short_is_an_error_not_a_reply() -> None:
    calls = {"n": 0}

    def chat(req: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return raw(PARTIAL)

    with pytest.raises(BackendUnavailable) as info:
        await backend(server(chat), max_attempts=3).chat(request())
    assert calls["n"] == 3
    assert "ended before [DONE] and without a finish reason" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "body",
    [
        data({"choices": [{"delta": {"content": "ok"}, "finish_reason": "stop"}]}),  # no [DONE]
        data({"choices": [{"delta": {"content": "ok"}}]}) + "data: [DONE]\n\n",  # no finish
        # comments, id/retry-only events and CRLF line ends carry nothing and break nothing
        ": keep-alive\r\n\r\nid: 7\r\nretry: 10\r\n\r\n"
        + data({"choices": [{"delta": {"content": "ok"}}]}).replace("\n", "\r\n")
        + "data: [DONE]\r\n\r\n",
    ],
)
async def test_a_stream_with_done_or_a_finish_reason_is_complete(body: str) -> None:
    reply = await backend(server(lambda r: raw(body))).chat(request())
    assert reply.content == "ok"
    assert reply.attempts == 1


async def test_unicode_line_separators_in_the_data_are_text_not_line_ends() -> None:
    # llama-server sends its JSON as raw UTF-8: a U+2028 or U+0085 inside a token is text, and
    # only CR and LF end an SSE line (str.splitlines would cut the JSON in two).
    text = "a\u2028b\x85c\u2029d"
    chunk = {"choices": [{"delta": {"content": text}, "finish_reason": "stop"}]}
    body = f"data: {json.dumps(chunk, ensure_ascii=False)}\n\ndata: [DONE]\n\n"
    reply = await backend(server(lambda r: raw(body))).chat(request())
    assert reply.content == text


async def test_an_event_cut_before_its_blank_line_is_lost() -> None:
    # The SSE spec drops an event the body ends inside: a `[DONE]` without its blank line does
    # not complete a reply that had no finish reason.
    body = data({"choices": [{"delta": {"content": "ok"}}]}) + "data: [DONE]"
    with pytest.raises(BackendUnavailable, match=r"ended before \[DONE\]"):
        await backend(server(lambda r: raw(body)), max_attempts=1).chat(request())


COMPLETION_JSON = {
    "choices": [{"message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 1},
}


@pytest.mark.parametrize("live", [False, True])
async def test_a_server_that_answers_json_instead_of_a_stream_gives_the_whole_reply(
    live: bool,
) -> None:
    b = backend(server(lambda r: httpx.Response(200, json=COMPLETION_JSON)))
    if live:
        assert await read_stream(b) == ["whole"]
    else:
        reply = await b.chat(request())
        assert (reply.content, reply.usage.prompt_tokens, reply.attempts) == ("whole", 9, 1)
    assert b.usage.requests == 1
    assert b.limiter.in_use == 0


async def test_a_json_error_answered_with_200_is_its_error() -> None:
    body = {"error": {"code": 500, "message": "output does not match the expected format"}}
    with pytest.raises(MalformedReply, match="expected format"):
        await backend(server(lambda r: httpx.Response(200, json=body))).chat(request())


@pytest.mark.parametrize("live", [False, True])
async def test_a_body_that_is_no_event_stream_fails_at_once(live: bool) -> None:
    calls = {"n": 0}

    def chat(req: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(
            200, text="<html>sign in</html>", headers={"content-type": "text/html"}
        )

    b = backend(server(chat))
    with pytest.raises(MalformedReply, match="'text/html', not an event stream") as info:
        await (read_stream(b) if live else b.chat(request()))
    assert "\n" not in str(info.value)
    assert calls["n"] == 1  # a proxy's page does not heal on a retry
    assert b.limiter.in_use == 0


async def read_stream(b: LlamaCppBackend, parts: list[str] | None = None) -> list[str]:
    """Consume `b.stream()` the way a live display does, collecting deltas into `parts`."""
    parts = [] if parts is None else parts
    async with b.stream(request()) as deltas:
        async for part in deltas:
            parts.append(part)
    return parts


async def test_live_stream_cut_short_surfaces_as_an_error() -> None:
    b = backend(server(lambda r: raw(PARTIAL)))
    parts: list[str] = []
    with pytest.raises(BackendUnavailable, match=r"ended before \[DONE\]"):
        await read_stream(b, parts)
    assert parts == ["half a rep"]
    assert b.limiter.in_use == 0


class DiesMidStream(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield PARTIAL.encode()
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


def dying(req: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200, stream=DiesMidStream(), headers={"content-type": "text/event-stream"}
    )


async def test_server_dying_mid_stream_is_retried_by_chat_and_typed_by_stream() -> None:
    b = backend(server(dying), max_attempts=2)
    with pytest.raises(BackendUnavailable, match="RemoteProtocolError"):
        await b.chat(request())
    assert b.http.retries == 1
    with pytest.raises(BackendUnavailable, match="RemoteProtocolError"):
        await read_stream(b)
    assert b.limiter.in_use == 0


async def test_live_stream_open_failure_is_typed() -> None:
    b = backend(server(lambda r: httpx.Response(503, text="Loading model")))
    with pytest.raises(BackendUnavailable, match="HTTP 503: Loading model"):
        async with b.stream(request()):
            pass
    assert b.limiter.in_use == 0


@pytest.mark.parametrize(
    ("body", "error", "text"),
    [
        (
            data({"error": {"code": 500, "message": "output does not match the expected format"}}),
            MalformedReply,
            "expected format",
        ),
        (
            'event: error\ndata: {"code": 400, "message": "the request exceeds the available '
            'context size"}\n\n',
            ContextOverflow,
            "exceeds",
        ),
        (
            data({"error": {"code": "context_length_exceeded", "message": "too long"}}),
            ContextOverflow,
            "context_length_exceeded: too long",
        ),
        (data({"error": "the model crashed"}), BackendError, "the model crashed"),
        (data({"error": ["odd", 1]}), BackendError, "['odd', 1]"),
        (data({"error": {"code": None, "type": "server_error"}}), BackendError, "server_error"),
        (data({"error": {"code": ["x"], "type": {"y": 1}, "message": "odd"}}), BackendError, "odd"),
        ("event: error\ndata: plain text\ndata: over two lines\n\n", BackendError, "plain text"),
        ("event: error\n\n", BackendError, "without a message"),
    ],
)
async def test_error_events_raise_their_error(
    body: str, error: type[BackendError], text: str
) -> None:
    calls = {"n": 0}

    def chat(req: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return raw(data({"choices": [{"delta": {"content": "a"}}]}) + body)

    with pytest.raises(error) as info:
        await backend(server(chat)).chat(request())
    assert type(info.value) is error
    assert text in str(info.value)
    assert "\n" not in str(info.value)
    assert calls["n"] == 1


async def test_a_busy_error_event_is_retried() -> None:
    calls = {"n": 0}

    def chat(req: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return raw(data({"error": {"code": "503", "message": "Loading model"}}))
        return completion("ok")

    reply = await backend(server(chat)).chat(request())
    assert (reply.content, reply.attempts) == ("ok", 2)


@pytest.mark.parametrize(
    "body",
    [
        "data: {not json\n\n",
        "data: " + "[" * 100_000 + "\n\n",
        'data: "just a string"\n\n',
        data({"choices": "not a list"}),
        data({"choices": [{"delta": {"content": 7}}]}),
        data({"choices": [{"delta": {"tool_calls": [{"index": "first"}]}}]}),
        data({"choices": [], "usage": {"prompt_tokens": "many"}}),
    ],
)
@pytest.mark.parametrize("live", [False, True])
async def test_malformed_data_is_one_line_malformed_reply(body: str, live: bool) -> None:
    calls = {"n": 0}

    def chat(req: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return raw(body + "data: [DONE]\n\n")

    b = backend(server(chat))
    with pytest.raises(MalformedReply) as info:
        await (read_stream(b) if live else b.chat(request()))
    message = str(info.value)
    assert "\n" not in message
    assert len(message) < 400
    assert URL in message
    assert calls["n"] == 1


async def test_a_cancelled_request_counts_what_the_server_did_for_its_step() -> None:
    from dytopo.backends.meter import usage_sink

    release, entered = asyncio.Event(), asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield data({"choices": [{"delta": {"content": "half"}}]}).encode()
        entered.set()
        await release.wait()

    async def handle(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/props":
            return httpx.Response(200, json=PROPS)
        return httpx.Response(200, content=body(), headers={"content-type": "text/event-stream"})

    b = backend(handle, slots=1)
    seen: list[int] = []

    async def step() -> None:
        usage_sink.set(lambda usage: seen.append(usage.prompt_tokens))
        await b.chat(request("a prompt the server was working on"))

    task = asyncio.create_task(step())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    usage = b.usage
    assert usage.requests == 1
    assert usage.completion_tokens == 1  # the piece that streamed
    assert usage.prompt_tokens > 0
    assert seen == [usage.prompt_tokens]
    assert usage.cached_tokens == 0  # nothing is assumed served from the cache


async def test_a_cut_stream_that_is_retried_counts_both_attempts() -> None:
    calls = {"n": 0}

    def chat(req: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return raw(PARTIAL) if calls["n"] == 1 else completion("whole", prompt=10)

    b = backend(server(chat))
    reply = await b.chat(request())
    assert reply.usage.requests == 1  # the reply reports its own attempt
    usage = b.usage
    assert usage.requests == 2
    assert usage.completion_tokens == 2 + 1  # the cut attempt streamed one piece
    assert usage.prompt_tokens > 10


async def test_a_refused_request_is_not_counted() -> None:
    def chat(req: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"message": "bad request", "code": 400}})

    b = backend(server(chat))
    with pytest.raises(BackendError):
        await b.chat(request())
    assert b.usage.requests == 0
