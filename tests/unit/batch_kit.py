"""Pooled batches on in-process servers: a two-agent topology that runs two rounds, and servers
that answer it (scripted), accept more requests than the slots they report (so a test sees any
excess), and can die."""

from __future__ import annotations

from pathlib import Path

from helpers import decision, final, goal, step

from dytopo.backends.limiter import SlotLimiter
from dytopo.backends.types import ChatRequest, ChatResponse, ServerInfo
from dytopo.batch import BatchItem
from dytopo.batch.schedule import RunSpec
from dytopo.errors import BackendUnavailable
from dytopo.loader import load_topology
from dytopo.testing import Reply, ScriptedBackend, ScriptItem

TOPOLOGY = """\
name: pair
routing: {mode: dynamic, tau: 0.5}
embedder: {kind: hash}
max_rounds: 2
min_rounds: 1
structured_reasks: 0
agents:
  - {id: researcher}
  - {id: writer}
"""
DELAY_S = 0.01
"""Each scripted request takes this long in its slot: runs overlap, so limits are exercised."""


def respond(request: ChatRequest) -> ScriptItem:
    """Agents step; the manager sets a goal, never halts (two rounds), then answers."""
    fields = (request.json_schema or {}).get("properties", {})
    if request.tag != "manager":
        content = step("did it", "the details", f"need {request.tag}", f"offer {request.tag}")
    elif "goal" in fields:
        content = goal("go")
    elif "halt" in fields:
        content = decision(False)
    else:
        content = final("the answer")
    return Reply(content=content, delay_s=DELAY_S)


class Server(ScriptedBackend):
    """A server that reports `slots` but serves any number of requests at once, counting
    them (`limiter.max_in_use`); `die_after` requests on, it answers nothing (chat and connect
    raise BackendUnavailable, as the real client does when the server is gone)."""

    def __init__(self, slots: int = 2, die_after: int | None = None) -> None:
        super().__init__(responder=respond, slots=slots)
        self.limiter = SlotLimiter(1000)
        self.die_after = die_after

    @property
    def dead(self) -> bool:
        return self.die_after is not None and len(self.requests) >= self.die_after

    async def connect(self) -> ServerInfo:
        if self.dead:
            raise BackendUnavailable("server gone", url="scripted://")
        return await super().connect()

    async def chat(self, request: ChatRequest) -> ChatResponse:
        if self.dead:
            raise BackendUnavailable("server gone after 2 attempts", url="scripted://")
        return await super().chat(request)


def spec(tmp_path: Path) -> RunSpec:
    path = tmp_path / "pair.yaml"
    path.write_text(TOPOLOGY, encoding="utf-8")
    return RunSpec(
        topology=load_topology(path),
        traces_dir=tmp_path / "traces",
        base_dir=tmp_path,
        source=path,
    )


def items(n: int) -> list[BatchItem]:
    return [BatchItem(id=f"line-{k}", task=f"task number {k}") for k in range(1, n + 1)]
