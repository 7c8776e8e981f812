"""The real handler.js, loaded the way AnythingLLM's loader loads it and called once under Node,
against a scripted HTTP service on loopback (one thread per request, like a real server)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from dytopo.skill import SKILL_NAME, export_skill

HARNESS = Path(__file__).with_name("skill_harness.cjs")
NODE = shutil.which("node")

FAST = {"DYTOPO_POLL_S": "0.05"}


def run_skill(
    plugins: Path, args: object, extra: dict[str, str] | None = None, timeout: float = 60
) -> dict[str, Any]:
    """Load the exported skill as AnythingLLM does, call it once; the harness's report."""
    assert NODE is not None
    proc = subprocess.run(
        [NODE, str(HARNESS), str(plugins), SKILL_NAME, json.dumps(args), json.dumps(extra or {})],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    assert "threw" not in report, report["threw"]
    assert report["resultType"] == "string", report
    return report


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Raw:
    """A reply written as it is: these headers and no Content-Length unless given, then the
    chunks until they end or the client hangs up (the connection closing ends the body)."""

    chunks: Iterable[bytes]
    headers: dict[str, str] = field(default_factory=dict)


Reply = tuple[int, Any, dict[str, str]]
Route = Callable[[str, str, Any], Reply]


@dataclass
class FakeService:
    """A loopback HTTP server answering with `route(method, path, body)`."""

    route: Route
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    sent: list[int] = field(default_factory=list)
    """Body bytes written for each Raw reply, counted until the client hung up."""

    def requests(self, method: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method]


def _handler(fake: FakeService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            fake.seen.append(Seen(self.command, self.path, dict(self.headers), body))
            status, payload, headers = fake.route(self.command, self.path, body)
            if isinstance(payload, Raw):
                self._stream(status, payload)
                return
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            for key, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, status: int, payload: Raw) -> None:
            self.close_connection = True
            self.send_response(status)
            for key, value in {"Content-Type": "application/json", **payload.headers}.items():
                self.send_header(key, value)
            self.end_headers()
            sent = 0
            try:
                for chunk in payload.chunks:
                    self.wfile.write(chunk)
                    sent += len(chunk)
            except OSError:
                pass  # the client stopped reading and closed the connection
            fake.sent.append(sent)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


@contextmanager
def services() -> Iterator[Callable[[Route], FakeService]]:
    """Start fake services with the function given; all stop when the block ends."""
    servers: list[ThreadingHTTPServer] = []

    def start(route: Route) -> FakeService:
        fake = FakeService(route)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        fake.url = f"http://127.0.0.1:{server.server_address[1]}"
        return fake

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


EDGES: dict[int, list[Any]] = {
    1: [["researcher", "analyst"], ["critic", "writer"]],
    2: [],
    3: [{"source": "researcher", "target": "analyst"}, {"source": "critic", "target": "writer"}],
}


def info(status: str, rounds: int = 0) -> dict[str, Any]:
    summaries = [
        {"round": r, "goal": f"goal {r}", "edges": EDGES[r], "finished": False}
        for r in range(1, rounds + 1)
    ]
    return {"id": "r1", "status": status, "round": rounds, "max_rounds": 3, "rounds": summaries}


def scripted(states: list[Any]) -> Route:
    """POST gives run r1; each GET gives the next state (the last one repeats)."""
    queue = list(states)

    def route(method: str, path: str, body: Any) -> Reply:
        if method == "POST" and path == "/v1/runs":
            return 202, {"id": "r1", "status": "queued"}, {}
        if method == "GET" and path == "/v1/runs/r1":
            return 200, queue.pop(0) if len(queue) > 1 else queue[0], {}
        if method == "DELETE" and path == "/v1/runs/r1":
            return 200, info("cancelled"), {}
        return 404, {"detail": f"no route {method} {path}"}, {}

    return route


def plugins_for(tmp_path: Path, url: str, **kw: Any) -> Path:
    plugins = tmp_path / "agent-skills"
    export_skill(plugins, url=url, **kw)
    return plugins


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
