import asyncio

import httpx
import pytest

from dytopo.backends import ChatMessage, ChatRequest
from dytopo.errors import BackendUnavailable
from dytopo.testing import Reply, ScriptedBackend


def request(tag: str = "", text: str = "hi") -> ChatRequest:
    return ChatRequest(messages=[ChatMessage(role="user", content=text)], tag=tag)


async def test_plays_replies_errors_and_delays_in_order() -> None:
    backend = ScriptedBackend(
        ["one", Reply(content="two", delay_s=0.01), BackendUnavailable("down", url="x")]
    )
    assert (await backend.chat(request())).content == "one"
    assert (await backend.chat(request())).content == "two"
    with pytest.raises(BackendUnavailable):
        await backend.chat(request())
    assert len(backend.requests) == 3
    backend.assert_complete()


async def test_tagged_queues_route_by_request_tag() -> None:
    backend = ScriptedBackend(by_tag={"manager": ["m"], "critic": ["c"]})
    assert (await backend.chat(request("critic"))).content == "c"
    assert (await backend.chat(request("manager"))).content == "m"


async def test_unexpected_call_fails_loudly() -> None:
    backend = ScriptedBackend()
    with pytest.raises(AssertionError, match="unexpected request"):
        await backend.chat(request("writer"))


async def test_assert_complete_reports_unused_replies() -> None:
    backend = ScriptedBackend(["a", "b"])
    await backend.chat(request())
    with pytest.raises(AssertionError, match="1 scripted replies unused"):
        backend.assert_complete()


async def test_respects_its_slot_limit() -> None:
    backend = ScriptedBackend([Reply(content=str(i), delay_s=0.01) for i in range(6)], slots=2)
    async with asyncio.TaskGroup() as group:
        for _ in range(6):
            group.create_task(backend.chat(request()))
    assert backend.limiter.max_in_use == 2


async def test_unit_tests_cannot_reach_the_network() -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(AssertionError, match="unit test tried to reach"):
            await client.get("http://127.0.0.1:9/")
