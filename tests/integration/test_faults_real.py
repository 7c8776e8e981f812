"""Kill the real llama-server mid-run (SIGKILL), restart it, resume: the run completes, and every
round completed before the kill is in the trace and the result exactly as it was.

Three kill points, each found from the run's own trace events (an observer), not from sleeps:
- an agent step: round 2 started and the chat server's /slots shows a request being processed;
- the embedding: round 2's last agent step is done; the embedding server is stopped (SIGSTOP) so
  the routing request waits unread in its socket, then killed with that request in flight;
- the manager's decision: round 2 is routed and /slots shows the manager's request processing.

Each test has its own servers (it kills them), a 2-agent topology with short replies, and
fast-failing retries, to stay around a minute of CPU on two cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from trace_checks import check_round, check_trace

from dytopo.cli.runs import list_runs
from dytopo.errors import BackendUnavailable, RunError
from dytopo.managed import LlamaServerProcess, ManagedStack
from dytopo.runner import aresume, arun
from dytopo.swarm.checkpoint import checkpoint_path, read_checkpoint
from dytopo.swarm.result import RunResult

Event = dict[str, Any]

# Short replies: less to generate on two cores, and fewer replies cut off at max_tokens. Text
# work: a reply cut off is still work, and only three short fields are JSON (a round in which
# every step fails ends the run).
SHORT = "instructions: Keep every field under 15 words., budget: {max_output_tokens: 160}"
AGENT_IDS = ["researcher", "writer"]
AGENTS = len(AGENT_IDS)
TOPOLOGY = f"""\
name: faults
task: Compare LRU and LFU cache eviction for a web cache in two sentences.
backend:
  max_attempts: 2        # a dead server fails the run in about a second
  backoff_initial_s: 0.2
  backoff_max_s: 0.5
routing: {{mode: dynamic, tau: 0.3}}
max_rounds: 2
min_rounds: 2
seed: 7
structured_reasks: 1
manager: {{{SHORT}}}
agents:
""" + "".join(f"  - {{id: {a}, text_work: true, {SHORT}}}\n" for a in AGENT_IDS)


@dataclass
class KillPoint:
    server: str
    """"chat" or "embed"."""
    arm: Callable[[Event, list[Event]], bool]
    """True at the trace event from which on the server is to die."""
    wait: str
    """"slots": until /slots shows a request processing; "unread": stop the server at once
    and wait until a request sits unread in its socket."""


def _round_2_started(event: Event, events: list[Event]) -> bool:
    return event["event"] == "round_start" and event["round"] == 2


def _round_2_agents_done(event: Event, events: list[Event]) -> bool:
    if event["event"] != "agent_output" or event["round"] != 2:
        return False
    outputs = [e for e in events if e["event"] == "agent_output" and e["round"] == 2]
    # With no agent left to route, no embedding request would follow.
    return len(outputs) == AGENTS and any(e["ok"] for e in outputs)


def _round_2_routed(event: Event, events: list[Event]) -> bool:
    return event["event"] == "routing" and event["round"] == 2


POINTS = {
    "agent_step": KillPoint("chat", _round_2_started, "slots"),
    "embedding": KillPoint("embed", _round_2_agents_done, "unread"),
    "manager_call": KillPoint("chat", _round_2_routed, "slots"),
}


@dataclass
class Killer:
    """Trace observer that SIGKILLs one server at a kill point."""

    server: LlamaServerProcess
    point: KillPoint
    events: list[Event] = field(default_factory=list)
    armed: asyncio.Event = field(default_factory=asyncio.Event)
    armed_at: float = 0.0
    killed: dict[str, Any] = field(default_factory=dict)
    """Where the kill happened (for the report)."""

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if self.armed.is_set() or not self.point.arm(event, self.events):
            return
        self.armed_at = time.monotonic()
        if self.point.wait == "unread":
            assert self.server.pid is not None
            os.kill(self.server.pid, signal.SIGSTOP)  # before the next request leaves
        self.armed.set()

    async def run(self, work: Coroutine[Any, Any, RunResult]) -> RunResult:
        watcher = asyncio.create_task(self._watch())
        try:
            return await work
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _watch(self) -> None:
        await self.armed.wait()
        busy = await (self._processing() if self.point.wait == "slots" else self._unread())
        process = self.server.process
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        last = self.events[-1]
        self.killed = {
            "after_event": last["event"],
            "round": last.get("round"),
            "waited_s": round(time.monotonic() - self.armed_at, 2),
            "in_flight": busy,
        }

    async def _processing(self) -> str:
        async with httpx.AsyncClient(timeout=10) as client:
            while True:
                slots = (await client.get(f"{self.server.url}/slots")).json()
                busy = [s["id"] for s in slots if s.get("is_processing")]
                if busy:
                    return f"slots {busy} processing"
                await asyncio.sleep(0.01)

    async def _unread(self) -> str:
        # Polled: the kernel's socket table has nothing to wait on.
        while True:
            if waiting := unread_bytes(self.server.port):
                return f"{waiting} request bytes unread in the stopped server's socket"
            await asyncio.sleep(0.01)


def unread_bytes(port: int) -> int:
    """Bytes received but not yet read by the server sockets of `port` (Linux /proc/net/tcp)."""
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                established = fields[3] == "01"
                if local_port == port and established:
                    total += int(fields[4].split(":")[1], 16)
    return total


@pytest.fixture
def servers(dytopo_home: Path, monkeypatch: pytest.MonkeyPatch) -> ManagedStack:
    """A chat + embedding server pair of this test's own (the session's is never killed)."""
    monkeypatch.setenv("DYTOPO_HOME", str(dytopo_home))
    return ManagedStack(slots=2, ctx_per_slot=2048)


# Two runs' worth of generation plus a server restart: ~4 min idle, but 15 min when the two
# cores are shared (CI once hit 900 s in the resumed run's last manager call, all steps valid).
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("where", sorted(POINTS))
async def test_kill_restart_resume(servers: ManagedStack, tmp_path: Path, where: str) -> None:
    topology, trace = tmp_path / "faults.yaml", tmp_path / "run.jsonl"
    topology.write_text(TOPOLOGY, encoding="utf-8")
    clock = {"start": time.monotonic()}
    async with servers as stack:
        urls = {"backend_url": stack.chat_url, "embed_url": stack.embed_url}
        target = stack.chat if POINTS[where].server == "chat" else stack.embed
        assert target is not None
        killer = Killer(target, POINTS[where])
        with pytest.raises(RunError) as stopped:
            await killer.run(arun(topology, trace_path=trace, observers=[killer], **urls))
        clock["killed"] = time.monotonic()
        before = trace.read_text(encoding="utf-8")
        partial: RunResult = stopped.value.partial

        await target.start()  # the same server again, on the same port
        clock["restarted"] = time.monotonic()
        resumed = await aresume(trace, **urls)
        clock["resumed"] = time.monotonic()

    # The kill hit the point it was meant for, and the run stopped saying how to go on.
    assert killer.killed["round"] == 2, killer.killed
    assert isinstance(stopped.value.__cause__, BackendUnavailable), repr(stopped.value.__cause__)
    assert "continue it with: dytopo resume" in str(stopped.value)
    assert [r.round for r in partial.rounds] == [1]
    check_trace(_events(before), rounds=1)

    # The trace was only appended to: every event before the kill is still there, unchanged.
    after = trace.read_text(encoding="utf-8")
    assert after.startswith(before)
    events = _events(after)
    cut = next(k for k, e in enumerate(events) if e["event"] == "run_resumed")
    assert events[cut]["from_round"] == 2
    assert events[cut]["completed_rounds"] == 1
    assert [e for e in events[cut:] if e.get("round", 2) < 2] == []  # round 1 never re-run
    assert _round_events(events[:cut], 1) == _round_events(_events(before), 1)

    # The resumed run completed, with round 1 exactly as the stopped run had it.
    assert [r.round for r in resumed.rounds] == [1, 2]
    assert resumed.rounds[0] == partial.rounds[0]
    assert resumed.halt_reason in ("manager", "max_rounds")
    check_round(events[cut:], 2, AGENTS)
    assert events[-1]["event"] == "run_end"
    assert "error" not in events[-1]
    assert read_checkpoint(checkpoint_path(trace)).status == "complete"
    (row,) = list_runs(tmp_path)
    assert (row.status, row.rounds) == ("complete", 2)

    print(
        f"\n{where}: killed {POINTS[where].server} {killer.killed}; "
        f"run+kill {clock['killed'] - clock['start']:.1f}s, "
        f"restart {clock['restarted'] - clock['killed']:.1f}s, "
        f"resume {clock['resumed'] - clock['restarted']:.1f}s; "
        f"round 1 identical: {len(_round_events(events[:cut], 1))} events"
    )


def _events(text: str) -> list[Event]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _round_events(events: list[Event], t: int) -> list[Event]:
    return [e for e in events if e.get("round") == t]
