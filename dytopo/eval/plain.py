"""The baseline an eval compares the swarm with: one plain call of the same model.

One chat completion to the same server: the task text (the very text the swarm gets) as the only
message, no system prompt, the first agent's sampling at temperature 0, at most
`MAX_TOKENS` output tokens. Its reply is graded exactly like a swarm's final answer. Its trace is
two events (`plain_request`, `plain_reply`) in the same folder as the swarm's traces.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import structlog

from dytopo.backends.base import Backend
from dytopo.backends.types import ChatMessage, ChatRequest, ChatResponse, Sampling
from dytopo.batch import BatchItem, RunRecord
from dytopo.batch.models import Baseline
from dytopo.errors import DyTopoError
from dytopo.topology import Topology

log = structlog.get_logger("dytopo.eval")

MODE: Baseline = "plain"
MAX_TOKENS = 768
TAG = "plain"
"""The request's tag (in logs and scripted tests)."""


def sampling(topology: Topology) -> Sampling:
    """The first agent's sampling (the developer's, in humaneval.yaml) at temperature 0."""
    return topology.agents[0].sampling.model_copy(
        update={"temperature": 0.0, "seed": topology.seed}
    )


def settings(topology: Topology) -> dict[str, Any]:
    """What a plain run depends on besides the task (pinned with an eval's records)."""
    return {"max_tokens": MAX_TOKENS, "sampling": sampling(topology).model_dump()}


def request(item: BatchItem, topology: Topology) -> ChatRequest:
    return ChatRequest(
        messages=[ChatMessage(role="user", content=item.task)],
        max_tokens=MAX_TOKENS,
        sampling=sampling(topology),
        tag=TAG,
    )


def _write_trace(path: Path, asked: ChatRequest, reply: ChatResponse | None, error: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    events: list[dict[str, Any]] = [
        {"event": "plain_request", "ts": round(time.time(), 3), **asked.model_dump(mode="json")}
    ]
    done: dict[str, Any] = {"event": "plain_reply", "ts": round(time.time(), 3)}
    if reply is not None:
        done |= reply.model_dump(mode="json", include={"content", "finish_reason", "usage"})
    if error:
        done["error"] = error
    events.append(done)
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events), "utf-8")


async def run_plain(
    item: BatchItem, topology: Topology, backend: Backend, *, trace_path: Path
) -> RunRecord:
    """One plain call for `item` and its record (mode `plain`, one round). A call the server
    refuses or fails (a DyTopo error: unreachable, context overflow, malformed reply) is a
    record with `ok=False` and its error line, as a failed swarm run is."""
    asked = request(item, topology)
    started = time.monotonic()
    reply: ChatResponse | None = None
    error = ""
    try:
        reply = await backend.chat(asked)
    except DyTopoError as exc:
        error = (str(exc).splitlines() or [type(exc).__name__])[0]
        log.warning("eval.plain_failed", item=item.id, error=error)
    wall_s = round(time.monotonic() - started, 3)
    _write_trace(trace_path, asked, reply, error)
    if reply is None:
        return RunRecord(
            item=item.id, mode=MODE, ok=False, wall_s=wall_s, trace=str(trace_path), error=error
        )
    return RunRecord(
        item=item.id,
        mode=MODE,
        ok=True,
        final_answer=reply.content,
        rounds=1,
        usage=reply.usage,
        wall_s=wall_s,
        trace=str(trace_path),
    )
