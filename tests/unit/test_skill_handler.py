"""The real handler.js, loaded by AnythingLLM's loader code path under Node, against a scripted
HTTP service on loopback: every outcome is one readable string, never an exception."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from skill_kit import (
    FAST,
    NODE,
    FakeService,
    Reply,
    Route,
    closed_port,
    info,
    plugins_for,
    run_skill,
    scripted,
    services,
)

pytestmark = pytest.mark.skipif(NODE is None, reason="needs node (18+) on PATH")


@pytest.fixture
def service() -> Iterator[Callable[[Route], FakeService]]:
    with services() as start:
        yield start


def test_final_answer_and_one_introspect_per_round(tmp_path: Path, service: Any) -> None:
    done = {**info("succeeded", 3), "final_answer": "42 is the answer."}
    fake = service(
        scripted([info("queued"), info("running", 1), info("running", 1), info("running", 2), done])
    )
    plugins = plugins_for(tmp_path, fake.url, token="s3cret")
    report = run_skill(plugins, {"task": "  What is six times seven?  "}, FAST)

    assert report["result"] == "42 is the answer."
    rounds = [i["text"] for i in report["introspect"] if i["text"].startswith("DyTopo round")]
    assert rounds == [
        "DyTopo round 1/3 - goal: goal 1; researcher -> analyst, critic -> writer",
        "DyTopo round 2/3 - goal: goal 2; no messages passed",
        "DyTopo round 3/3 - goal: goal 3; researcher -> analyst, critic -> writer",
    ]
    post = fake.requests("POST")[0]
    assert post.body == {"task": "What is six times seven?", "topology": "research"}
    assert post.headers["Authorization"] == "Bearer s3cret"
    assert all(s.headers.get("Authorization") == "Bearer s3cret" for s in fake.seen)
    assert any("r1" in line for line in report["logs"])


def test_topology_argument_beats_the_default(tmp_path: Path, service: Any) -> None:
    fake = service(scripted([{**info("succeeded", 1), "final_answer": "done"}]))
    plugins = plugins_for(tmp_path, fake.url, topology="math")
    assert run_skill(plugins, {"task": "t", "topology": "code"}, FAST)["result"] == "done"
    assert run_skill(plugins, {"task": "t"}, FAST)["result"] == "done"
    assert [p.body["topology"] for p in fake.requests("POST")] == ["code", "math"]
    assert "Authorization" not in fake.requests("POST")[0].headers


def test_service_down_is_a_readable_string(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    report = run_skill(plugins_for(tmp_path, url), {"task": "anything"}, FAST)
    assert report["result"].startswith(f"DyTopo service unreachable at {url}")
    assert "dytopo serve" in report["result"]
    assert "DYTOPO_URL" in report["result"]
    assert "\n" not in report["result"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({}, "needs `task`"),
        ({"task": "   "}, "needs `task`"),
        ({"task": 7}, "needs `task`"),
        ({"task": ["a"]}, "needs `task`"),
        ({"task": "t", "topology": 3}, "`topology` must be a name"),
        ({"task": "x" * 20_001}, "the limit is 20000"),
        (None, "arguments as an object"),
        ("just text", "arguments as an object"),
    ],
)
def test_bad_arguments_are_refused_before_any_request(
    tmp_path: Path, service: Any, args: object, expected: str
) -> None:
    fake = service(scripted([info("queued")]))
    report = run_skill(plugins_for(tmp_path, fake.url), args, FAST)
    assert expected in report["result"]
    assert fake.seen == []


def test_a_failed_run_gives_its_one_line_error(tmp_path: Path, service: Any) -> None:
    failed = {**info("failed", 1), "error": "backend at http://x unreachable:\nstart it"}
    fake = service(scripted([info("running"), failed]))
    report = run_skill(plugins_for(tmp_path, fake.url), {"task": "t"}, FAST)
    assert report["result"] == "DyTopo run r1 failed: backend at http://x unreachable: start it"


def test_interrupted_and_cancelled_runs_say_so(tmp_path: Path, service: Any) -> None:
    fake = service(scripted([{**info("interrupted", 1), "resumable": True}]))
    report = run_skill(plugins_for(tmp_path, fake.url), {"task": "t"}, FAST)
    assert report["result"] == (
        "DyTopo run r1 was interrupted (the service stopped during it); "
        "resume it with POST /v1/runs/r1/resume."
    )
    fake = service(scripted([info("cancelled")]))
    report = run_skill(plugins_for(tmp_path / "b", fake.url), {"task": "t"}, FAST)
    assert report["result"] == "DyTopo run r1 was cancelled before it finished."


def test_deadline_cancels_the_run_and_says_so(tmp_path: Path, service: Any) -> None:
    fake = service(scripted([info("running", 1)]))
    plugins = plugins_for(tmp_path, fake.url, timeout_s=1)
    report = run_skill(plugins, {"task": "t"}, {"DYTOPO_POLL_S": "0.2"})
    assert [s.path for s in fake.requests("DELETE")] == ["/v1/runs/r1"]
    assert report["result"].startswith(
        "DyTopo run r1 did not finish within DYTOPO_TIMEOUT_S (1 s), so it was cancelled."
    )
    gets = fake.requests("GET")
    assert 2 <= len(gets) <= 8  # polled until the deadline, not past it


def test_wrong_token_points_at_dytopo_token(tmp_path: Path, service: Any) -> None:
    fake = service(lambda m, p, b: (401, {"detail": "missing or wrong bearer token"}, {}))
    report = run_skill(plugins_for(tmp_path, fake.url, token="wrong"), {"task": "t"}, FAST)
    assert "HTTP 401" in report["result"]
    assert "check DYTOPO_TOKEN" in report["result"]


def test_refusals_carry_the_service_detail(tmp_path: Path, service: Any) -> None:
    def route(method: str, path: str, body: Any) -> Reply:
        if body and body.get("topology") == "nope":
            return 404, {"detail": "unknown topology 'nope': known are code, math, research"}, {}
        return 429, {"detail": "queue full"}, {"Retry-After": "30"}

    fake = service(route)
    plugins = plugins_for(tmp_path, fake.url)
    report = run_skill(plugins, {"task": "t", "topology": "nope"}, FAST)
    assert report["result"] == (
        "DyTopo service refused the request (HTTP 404 on POST /v1/runs): "
        "unknown topology 'nope': known are code, math, research"
    )
    report = run_skill(plugins, {"task": "t"}, FAST)
    assert report["result"] == "DyTopo service is busy: its run queue is full. Try again in 30 s."


def test_a_server_that_is_not_dytopo_is_named(tmp_path: Path, service: Any) -> None:
    fake = service(lambda m, p, b: (200, b"<html>hello</html>", {"Content-Type": "text/html"}))
    report = run_skill(plugins_for(tmp_path, fake.url), {"task": "t"}, FAST)
    assert "did not answer like a DyTopo service" in report["result"]
    assert "check DYTOPO_URL" in report["result"]


def test_service_gone_mid_run_ends_after_a_few_polls(tmp_path: Path, service: Any) -> None:
    state = {"gets": 0}

    def route(method: str, path: str, body: Any) -> Reply:
        if method == "POST":
            return 202, {"id": "r1", "status": "queued"}, {}
        state["gets"] += 1
        if state["gets"] == 1:
            return 503, {"detail": "restarting"}, {}  # one blip heals
        if state["gets"] == 2:
            return 200, info("running", 1), {}
        return 502, {"detail": "bad gateway"}, {}

    fake = service(route)
    report = run_skill(plugins_for(tmp_path, fake.url), {"task": "t"}, FAST)
    assert report["result"] == (
        "DyTopo service failed (HTTP 502 on GET /v1/runs/r1): bad gateway (while following run r1)"
    )
    assert state["gets"] == 2 + 3


def test_bad_settings_are_named(tmp_path: Path, service: Any) -> None:
    fake = service(scripted([info("queued")]))
    plugins = plugins_for(tmp_path, fake.url)
    report = run_skill(plugins, {"task": "t"}, {"DYTOPO_TIMEOUT_S": "soon"})
    assert report["result"].startswith('DYTOPO_TIMEOUT_S "soon" is not a positive number')
    report = run_skill(plugins, {"task": "t"}, {"DYTOPO_URL": "ftp://x"})
    assert report["result"].startswith('DYTOPO_URL "ftp://x" is not an http(s) URL')
    assert fake.seen == []
