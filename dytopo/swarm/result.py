"""What a run returns: typed records of every round, the answer, usage and timings."""

from __future__ import annotations

from collections import Counter
from typing import Literal

import networkx as nx
from pydantic import BaseModel, Field

from dytopo.agents.base import AgentOutput
from dytopo.agents.manager import ManagerDecision
from dytopo.agents.structured import Attempt
from dytopo.backends.types import Usage
from dytopo.routing.router import Routing
from dytopo.swarm.check import Check

HaltReason = Literal["manager", "checked", "max_rounds", "budget", "error"]
"""checked: the answer's check passed (`answer.tests_from`, `halt_on_pass`)."""


class AgentStep(BaseModel):
    """One agent's step in one round."""

    agent: str
    ok: bool
    output: AgentOutput | None = None
    error: str = ""
    skipped: str = ""
    """Why the step was cancelled without fault: the round was settled before it finished
    (the answer's check passed). Not a failure; its tokens so far are in `usage`."""
    usage: Usage = Field(default_factory=Usage)
    attempts: list[Attempt] = Field(default_factory=list)
    dropped: list[str] = Field(default_factory=list)
    """Memory items context packing left out of this step's prompt."""
    packing: dict[str, int] = Field(default_factory=dict)
    """full_tokens (everything kept), prompt_tokens (as sent), budget."""
    wall_s: float = 0.0
    queued_s: float = 0.0
    """Seconds spent waiting for a server slot (limited by queue_timeout_s, not agent_timeout_s)."""


class Delivery(BaseModel):
    """A private message moved along an edge."""

    source: str
    target: str
    score: float
    phase: Literal["after_round", "same_round"] = "after_round"


class RoundRecord(BaseModel):
    round: int
    goal: str
    steps: list[AgentStep]
    routing: Routing
    deliveries: list[Delivery]
    decision: ManagerDecision | None = None
    """None when the manager failed and the fallback applied."""
    halt_accepted: bool = False
    check: Check | None = None
    """The answer's check after this round (`answer.tests_from`), when it ran."""
    usage: Usage = Field(default_factory=Usage)
    """Agents' steps plus the manager's decision in this round."""
    wall_s: float = 0.0

    def graph(self) -> nx.DiGraph[str]:
        return self.routing.graph()


class UnfinishedRound(BaseModel):
    """The round a run stopped in: the agent steps that had finished (failed ones included)."""

    round: int
    goal: str
    steps: list[AgentStep] = Field(default_factory=list)
    """In agent order; agents still running when the run stopped are missing."""
    routing: Routing | None = None
    """Set when the round got as far as routing (e.g. the manager's decision failed)."""
    deliveries: list[Delivery] = Field(default_factory=list)


class RunResult(BaseModel):
    """Everything a run produced. Also written, event by event, to the trace."""

    run_id: str
    task: str
    final_answer: str
    halt_reason: HaltReason
    rounds: list[RoundRecord] = Field(default_factory=list)
    """Completed rounds."""
    unfinished: UnfinishedRound | None = None
    """Set when the run stopped with an error (RunError.partial) in the middle of a round."""
    usage: Usage = Field(default_factory=Usage)
    usage_by_agent: dict[str, Usage] = Field(default_factory=dict)
    wall_s: float = 0.0
    trace_path: str | None = None
    reasks: int = 0
    """Structured replies that needed at least one re-ask."""
    failures: int = 0
    """Agent steps or manager duties that failed after the whole ladder."""
    stats: Counter[str] = Field(default_factory=Counter)
    """Ladder and tool counters: structured_attempts, structured_malformed, tool_call_attempts,
    tool_call_malformed, tool_calls, tool_errors."""

    @property
    def goals(self) -> list[str]:
        return [r.goal for r in self.rounds]

    def graphs(self) -> list[nx.DiGraph[str]]:
        return [r.graph() for r in self.rounds]
