"""A server without embeddings is found before round 1 is paid for.

Every round routes by embeddings; a generation-only llama-server (started without
--embeddings) answers HTTP 501 on /v1/embeddings. The run used to find out at its first routing
step, after the manager's opening and every agent's round-1 step had been paid for."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import yaml
from batch_kit import TOPOLOGY, respond

from dytopo.backends import llamacpp
from dytopo.doctor import run_doctor
from dytopo.embedders import http as embedder_http
from dytopo.embedders.http import HttpEmbedder
from dytopo.errors import BackendError
from dytopo.runner import run_on
from dytopo.testing import ScriptedBackend
from dytopo.topology import Topology

URL = "http://llama.test:8008"
NOT_SUPPORTED = {
    "error": {
        "code": 501,
        "message": "This server does not support embeddings. Start it with `--embeddings`",
        "type": "not_supported_error",
    }
}


def topology() -> Topology:
    return Topology.model_validate(yaml.safe_load(TOPOLOGY))


def generation_only(request: httpx.Request) -> httpx.Response:
    """llama-server without --embeddings: chat works, /v1/embeddings is 501."""
    if request.url.path == "/v1/embeddings":
        return httpx.Response(501, json=NOT_SUPPORTED)
    if request.url.path == "/props":
        return httpx.Response(200, json={"total_slots": 2, "default_generation_settings": {}})
    return httpx.Response(400, json={"error": {"message": "not in this test"}})


def embedder(handler: Any) -> HttpEmbedder:
    return HttpEmbedder(URL, client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))


async def test_a_run_on_a_server_without_embeddings_stops_before_any_request() -> None:
    backend = ScriptedBackend(responder=respond)
    with pytest.raises(BackendError) as info:
        await run_on(
            topology(),
            "task",
            backend,
            embedder(generation_only),
            trace_path=None,
            base_dir=None,
            source=None,
        )
    message = str(info.value)
    assert "\n" not in message
    assert "HTTP 501" in message
    assert "--embeddings" in message
    assert "embed_url" in message
    assert info.value.status == 501
    assert backend.requests == []  # neither the opening nor round 1 was paid for


async def test_a_run_with_embeddings_makes_one_tiny_probe_first() -> None:
    asked: list[list[str]] = []

    def embeddings(request: httpx.Request) -> httpx.Response:
        texts = json.loads(request.content)["input"]
        asked.append(texts)
        data = [{"index": k, "embedding": [1.0, float(k % 3)]} for k in range(len(texts))]
        return httpx.Response(200, json={"data": data})

    backend = ScriptedBackend(responder=respond)
    result = await run_on(
        topology(),
        "task",
        backend,
        embedder(embeddings),
        trace_path=None,
        base_dir=None,
        source=None,
    )
    assert len(result.rounds) == 2
    assert asked[0] == ["probe"]
    assert len(asked) == 1 + len(result.rounds)  # the probe, then one batch per round


async def test_doctor_names_the_fix_for_a_server_without_embeddings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def client(settings: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(generation_only))

    monkeypatch.setattr(embedder_http, "build_client", client)
    monkeypatch.setattr(llamacpp, "build_client", client)
    report = await run_doctor(URL)
    (check,) = [c for c in report.checks if c.name == "embeddings"]
    assert (check.ok, report.embeddings, report.ok) == (False, False, False)
    assert "HTTP 501" in check.detail
    assert "--embeddings" in check.fix
    assert "--embed-url" in check.fix
