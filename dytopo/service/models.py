"""The service's public messages: what a caller sends (RunRequest) and what it reads (RunInfo)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "interrupted"})


class RunRequest(BaseModel):
    """A run to start."""

    task: str = Field(min_length=1, max_length=20_000)
    """The task, self-contained: the agents see nothing else."""
    topology: str | None = Field(default=None, max_length=64)
    """A topology name in the service's topologies folder (`research`); default: the service's
    default topology, unless `inline` is given."""
    inline: dict[str, Any] | None = None
    """A topology (its YAML as JSON) instead of a name: name, description, max_rounds,
    min_rounds, seed, routing (mode, tau, top_k), agents (id, card, instructions, text_work;
    no tools) and manager (card, instructions); role cards resolve in the service's folders.
    Anything else is the operator's and refused."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """Fields merged into the topology with its own names: max_rounds, min_rounds, seed and
    routing (mode, tau, top_k), e.g. {"max_rounds": 3, "routing": {"mode": "broadcast"}};
    anything else is refused."""


class RoundSummary(BaseModel):
    """One round: its goal and who sent a message to whom."""

    round: int
    goal: str = ""
    edges: list[tuple[str, str]] = Field(default_factory=list)
    """(sender, receiver) pairs, at most 256 of them (the trace has every one)."""
    messages: int = 0
    """Edges of the round, all of them."""
    finished: bool = False


class RunInfo(BaseModel):
    """A run as the service knows it; written to <runs_dir>/<id>.json on every change."""

    id: str
    status: RunStatus
    topology: str
    """The topology's name (`inline:<name>` for an inline one)."""
    task: str
    created_at: str
    """ISO 8601, UTC."""
    started_at: str | None = None
    finished_at: str | None = None
    round: int = 0
    """The current round, or the last one."""
    max_rounds: int = 0
    progress: str = ""
    """One line, e.g. "round 2/4: 3 of 4 agents done"."""
    rounds: list[RoundSummary] = Field(default_factory=list)
    final_answer: str | None = None
    halt_reason: str | None = None
    usage: dict[str, Any] | None = None
    """Tokens of the whole run, as `dytopo run --json` prints them."""
    error: str | None = None
    """Why the run failed or stopped, one line."""
    resumable: bool = False
    """POST /v1/runs/{id}/resume continues it (from its last complete round)."""
