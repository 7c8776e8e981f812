"""The real handler.js against a service that answers too much, redirects elsewhere or echoes
secrets: what reaches the chat stays bounded, readable and free of credentials, and neither the
task nor the token leaves DYTOPO_URL's origin."""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from skill_kit import (
    FAST,
    NODE,
    FakeService,
    Raw,
    Reply,
    Route,
    info,
    plugins_for,
    run_skill,
    scripted,
    services,
)

pytestmark = pytest.mark.skipif(NODE is None, reason="needs node (18+) on PATH")

MB = 1 << 20
HUGE_MB = 300
"""What the hostile service offers to send; the handler may read at most 8 MB of it."""
RSS_BOUND_MB = 200
"""Node's own peak is about 60 MB; reading 300 MB whole takes more than 600."""


@pytest.fixture
def service() -> Iterator[Callable[[Route], FakeService]]:
    with services() as start:
        yield start


def chat(report: dict[str, Any]) -> list[str]:
    """Everything the chat and the server log got: introspect lines, log lines, the result."""
    return [i["text"] for i in report["introspect"]] + report["logs"] + [report["result"]]


def one_line(text: str) -> None:
    assert "\n" not in text
    assert len(text) < 600, text[:600]


def huge_answer() -> Iterator[bytes]:
    """A run record whose final answer never ends (HUGE_MB of it)."""
    yield b'{"id": "r1", "status": "succeeded", "final_answer": "'
    block = b"a" * MB
    for _ in range(HUGE_MB):
        yield block


@cache
def gzip_bomb() -> bytes:
    """HUGE_MB of JSON text in about 300 KB of gzip (members of 10 MB each, concatenated)."""
    member = gzip.compress(b" " * (10 * MB), 6)
    return gzip.compress(b'{"id": "r1", "status": "queued", "x": "') + member * (HUGE_MB // 10)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "until-close"])
def test_a_huge_body_is_not_read_whole(tmp_path: Path, service: Any, declared: bool) -> None:
    def route(method: str, path: str, body: Any) -> Reply:
        if method == "POST":
            return 202, {"id": "r1", "status": "queued"}, {}
        length = {"Content-Length": str(HUGE_MB * MB + 60)} if declared else {}
        return 200, Raw(huge_answer(), length), {}

    fake = service(route)
    report = run_skill(plugins_for(tmp_path, fake.url), {"task": "t"}, FAST)
    assert report["result"] == (
        f"DyTopo service at {fake.url} sent more than 8 MB for GET /v1/runs/r1, far more than "
        "a DyTopo service sends; the skill stopped reading it: check DYTOPO_URL in the "
        "dytopo-swarm skill settings. (while following run r1)"
    )
    assert report["maxRssMb"] < RSS_BOUND_MB
    assert fake.sent[0] < 64 * MB  # the handler hung up: the rest was never sent


def test_a_gzip_bomb_stops_at_the_cap_after_decompression(tmp_path: Path, service: Any) -> None:
    bomb = gzip_bomb()
    assert len(bomb) < MB

    def route(method: str, path: str, body: Any) -> Reply:
        return 202, Raw([bomb], {"Content-Encoding": "gzip"}), {}

    fake = service(route)
    report = run_skill(plugins_for(tmp_path, fake.url), {"task": "t"}, FAST)
    assert report["result"].startswith(
        f"DyTopo service at {fake.url} sent more than 8 MB for POST /v1/runs"
    )
    assert report["maxRssMb"] < RSS_BOUND_MB
    assert len(fake.seen) == 1


def test_a_long_final_answer_is_clipped_with_a_note(tmp_path: Path, service: Any) -> None:
    # An emoji (two UTF-16 units in Node) straddles the cut: it goes whole, not half.
    answer = "x" * 49_999 + "\N{GRINNING FACE}" + "y" * 2_000_000
    fake = service(scripted([{**info("succeeded", 1), "final_answer": answer}]))
    report = run_skill(plugins_for(tmp_path, fake.url), {"task": "t"}, FAST)
    result = report["result"]
    kept, _, note = result.partition("\n\n[dytopo-swarm: ")
    assert kept == "x" * 49_999
    total = len(answer.encode("utf-16-le")) // 2  # Node counts UTF-16 units
    assert note == (
        f"the final answer is {total} characters; the last {total - 49_999} were cut here. "
        f"The whole answer is the final_answer of GET {fake.url}/v1/runs/r1 and in the run's "
        "trace on the DyTopo service.]"
    )


def test_an_answer_at_the_limit_passes_whole(tmp_path: Path, service: Any) -> None:
    answer = "z" * 50_000
    fake = service(scripted([{**info("succeeded", 1), "final_answer": answer}]))
    assert run_skill(plugins_for(tmp_path, fake.url), {"task": "t"}, FAST)["result"] == answer


def test_rounds_past_fifty_are_counted_not_listed(tmp_path: Path, service: Any) -> None:
    def state(status: str, rounds: int) -> dict[str, Any]:
        summaries = [{"round": r, "goal": f"g{r}", "edges": []} for r in range(1, rounds + 1)]
        return {"id": "r1", "status": status, "max_rounds": 100_000, "rounds": summaries}

    done = {**state("succeeded", 100_000), "final_answer": "done"}
    fake = service(scripted([state("running", 40), state("running", 60), done]))
    report = run_skill(plugins_for(tmp_path, fake.url), {"task": "t"}, FAST)
    lines = [i["text"] for i in report["introspect"]]
    assert lines[0].startswith("DyTopo run r1 started")
    assert lines[1:51] == [
        f"DyTopo round {r}/100000 - goal: g{r}; no messages passed" for r in range(1, 51)
    ]
    assert lines[51:] == [
        "DyTopo run r1 has more than 50 rounds: the rest are not listed one by one; "
        "their count follows when the run ends.",
        "DyTopo run r1: 99950 more round(s) after the first 50, up to round 100000, "
        "were not listed here.",
    ]
    assert report["result"] == "done"


def test_a_round_line_stays_one_short_line(tmp_path: Path, service: Any) -> None:
    long = "n" * 100_000
    summary = {"round": 1, "goal": "g" * 100_000, "edges": [[long, long]] * 50}
    fake = service(scripted([{**info("succeeded"), "rounds": [summary], "final_answer": "ok"}]))
    report = run_skill(plugins_for(tmp_path, fake.url), {"task": "t"}, FAST)
    for line in report["introspect"]:
        one_line(line["text"])


# -- redirects --------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "status"), [("POST", 307), ("POST", 308), ("GET", 302)])
def test_a_redirect_to_another_origin_is_not_followed(
    tmp_path: Path, service: Any, method: str, status: int
) -> None:
    elsewhere = service(lambda m, p, b: (200, {"id": "stolen", "status": "succeeded"}, {}))
    base = scripted([info("running", 1)])

    def route(m: str, path: str, body: Any) -> Reply:
        if m == method:
            return status, {}, {"Location": f"{elsewhere.url}{path}"}
        return base(m, path, body)

    fake = service(route)
    plugins = plugins_for(tmp_path, fake.url, token="the-service-token")
    report = run_skill(plugins, {"task": "secret plans"}, FAST)
    path = "/v1/runs" if method == "POST" else "/v1/runs/r1"
    expected = (
        f"DyTopo service at {fake.url} redirected {method} {path} to {elsewhere.url}; a redirect "
        "to another origin is not followed (the task and token stay with DYTOPO_URL): set "
        "DYTOPO_URL to the service's own address in the dytopo-swarm skill settings."
    )
    assert report["result"].startswith(expected)
    one_line(report["result"])
    assert elsewhere.seen == []


def test_a_redirect_within_the_service_is_followed(tmp_path: Path, service: Any) -> None:
    base = scripted([{**info("succeeded", 1), "final_answer": "followed"}])

    def route(method: str, path: str, body: Any) -> Reply:
        if path.startswith("/v1/"):
            return 307, {}, {"Location": f"/api{path}"}
        return base(method, path.removeprefix("/api"), body)

    fake = service(route)
    report = run_skill(plugins_for(tmp_path, fake.url), {"task": "t"}, FAST)
    assert report["result"] == "followed"
    posts = [s for s in fake.seen if s.method == "POST"]
    assert [(s.path, s.body) for s in posts] == [
        ("/v1/runs", {"task": "t", "topology": "research"}),
        ("/api/v1/runs", {"task": "t", "topology": "research"}),
    ]


# -- credentials ------------------------------------------------------------------------------

PASSWORD = "hunter2-Secret"


@pytest.mark.parametrize(
    "url",
    [
        "http://admin:{pw}@127.0.0.1:{port}",
        "http://admin:{pw}@127.0.0.1:{port}/",
        "http://:{pw}@127.0.0.1:{port}",
        "ftp://admin:{pw}@127.0.0.1:{port}",
        "admin:{pw}@127.0.0.1:{port}",
        "http://admin:{pw}@[bad",
    ],
)
def test_a_password_in_the_url_never_reaches_the_chat(
    tmp_path: Path, service: Any, url: str
) -> None:
    fake = service(scripted([info("running")]))
    port = fake.url.rsplit(":", 1)[1]
    setting = url.format(pw=PASSWORD, port=port)
    report = run_skill(plugins_for(tmp_path, fake.url), {"task": "t"}, {"DYTOPO_URL": setting})
    assert fake.seen == []
    assert report["result"].startswith("DYTOPO_URL ")
    one_line(report["result"])
    assert "***@" in report["result"]
    assert not any(PASSWORD in text or "admin" in text for text in chat(report))


def test_a_url_with_credentials_is_refused_and_says_what_to_do(
    tmp_path: Path, service: Any
) -> None:
    fake = service(scripted([info("running")]))
    setting = fake.url.replace("http://", f"http://admin:{PASSWORD}@")
    report = run_skill(plugins_for(tmp_path, fake.url), {"task": "t"}, {"DYTOPO_URL": setting})
    assert report["result"] == (
        f'DYTOPO_URL "{fake.url.replace("http://", "http://***@")}" holds a user name or '
        "password: remove them from the URL and put the service's token in DYTOPO_TOKEN "
        "(dytopo-swarm skill settings)."
    )


def test_a_service_that_echoes_the_token_does_not_put_it_in_the_chat(
    tmp_path: Path, service: Any
) -> None:
    token = "tok-0123456789"
    leaky = f"you sent Bearer {token} from http://admin:{PASSWORD}@host:1"

    def route(method: str, path: str, body: Any) -> Reply:
        if method == "POST":
            return 202, {"id": "r1", "status": "queued"}, {}
        return 200, {"id": "r1", "status": "failed", "error": leaky}, {}

    fake = service(route)
    report = run_skill(plugins_for(tmp_path, fake.url, token=token), {"task": "t"}, FAST)
    assert report["result"] == ("DyTopo run r1 failed: you sent Bearer *** from http://***@host:1")
    fake = service(lambda m, p, b: (404, {"detail": leaky}, {}))
    report = run_skill(plugins_for(tmp_path / "b", fake.url, token=token), {"task": "t"}, FAST)
    assert token not in report["result"]
    assert PASSWORD not in report["result"]
    assert re.search(r"HTTP 404 on POST /v1/runs\): you sent Bearer \*\*\*", report["result"])


def test_the_memory_bound_is_above_an_ordinary_call(tmp_path: Path, service: Any) -> None:
    fake = service(scripted([{**info("succeeded"), "final_answer": "ok"}]))
    report = run_skill(plugins_for(tmp_path, fake.url), {"task": "t"}, FAST)
    assert 10 < report["maxRssMb"] < RSS_BOUND_MB
