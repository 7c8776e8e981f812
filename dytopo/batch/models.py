"""What a batch runs and what each run leaves: plain data, so any worker can produce it."""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

from dytopo.backends.types import Usage
from dytopo.routing.config import Mode
from dytopo.swarm.result import HaltReason

Key = tuple[str, str]
"""(item id, mode): one run of a batch."""

Baseline = Literal["plain"]
"""A run without a swarm: one chat completion of the same model with the task (`dytopo eval`)."""
RunMode: TypeAlias = Mode | Baseline
"""What a record was run in: a routing mode, or the baseline."""


class BatchItem(BaseModel):
    """One task of a batch."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200)
    """Unique within the batch; names the run's record and trace."""
    task: str = Field(min_length=1)
    """The text the swarm is given."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """Topology changes for this item only: `rounds`, `seed`, `tau` (see `with_overrides`)."""
    meta: dict[str, Any] = Field(default_factory=dict)
    """What the caller needs afterwards (e.g. a benchmark's tests); never sent to the model."""


class RunRecord(BaseModel):
    """One finished run of one item in one mode: a line of the batch's record file.

    `ok` is false when the run stopped with an error (`error`, one line); its usage and rounds
    are then what it had spent and completed before it stopped."""

    item: str
    mode: RunMode
    ok: bool
    final_answer: str = ""
    rounds: int = 0
    halt_reason: HaltReason | None = None
    usage: Usage = Field(default_factory=Usage)
    wall_s: float = 0.0
    run_id: str | None = None
    trace: str | None = None
    error: str = ""
    server: str | None = None
    """The server that ran it (`dytopo batch`; a run moved off a dead server: the last one)."""
    grade: dict[str, Any] = Field(default_factory=dict)
    """Filled by the batch's grader (e.g. `dytopo eval`): whatever it judged of the answer."""

    @property
    def key(self) -> Key:
        return (self.item, self.mode)
