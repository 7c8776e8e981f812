"""What a report shows of a run: typed views of its trace, built by `dytopo.report.load`.

Every field has a default and unknown fields are ignored, so an older trace, a crashed run or a
newer writer's extra fields still make a view; what is missing shows as missing.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dytopo.backends.types import Usage


class View(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class AttemptView(View):
    """One rung of an agent's or the manager's ladder (a `ladder` event)."""

    attempt: int = 1
    ok: bool = True
    kind: str = "structured"
    error: str = ""
    finish_reason: str = ""


class ToolCallView(View):
    """One tool call (a `tool_call` event)."""

    tool: str = "?"
    ok: bool = True
    error: str = ""
    arguments: Any = None
    result: str = ""
    repeated: bool = False
    wall_s: float = 0.0


class AgentView(View):
    """One agent's step in one round: its four fields, cost, packing and tool calls."""

    agent: str
    finished: bool = False
    """Its `agent_output` is in the trace (a crash may cut a round before it)."""
    ok: bool = True
    error: str = ""
    skipped: str = ""
    """Why the step was cancelled without fault (the round was settled before it ended)."""
    query: str = ""
    key: str = ""
    public: str = ""
    private: str = ""
    usage: Usage = Field(default_factory=Usage)
    dropped: list[Any] = Field(default_factory=list)
    """What context packing left out of the prompt."""
    packing: dict[str, Any] = Field(default_factory=dict)
    wall_s: float = 0.0
    queued_s: float = 0.0
    tool_calls: list[ToolCallView] = Field(default_factory=list)
    attempts: list[AttemptView] = Field(default_factory=list)

    @property
    def reasks(self) -> int:
        """Failed structured attempts: each one cost a request the reply could not use."""
        return sum(1 for a in self.attempts if a.kind == "structured" and not a.ok)


class EdgeView(View):
    """`source` sends its private message to `target`; score = cos(query_target, key_source)."""

    source: str
    target: str
    score: float = 0.0
    forced: bool = False


class RoutingView(View):
    """One round's graph (a `routing` event)."""

    mode: str = ""
    agents: list[str] = Field(default_factory=list)
    similarity: list[list[float | None]] = Field(default_factory=list)
    """similarity[i][j] = cos(query_i, key_j): row i receives, column j offers."""
    tau: float | None = None
    edges: list[EdgeView] = Field(default_factory=list)
    order: list[str] = Field(default_factory=list)
    """Delivery order sigma."""
    acyclic: bool | None = None
    hub: str | None = None
    edges_left_out: int = 0
    """Edges past the report's limit (the weakest), not in `edges`."""

    @property
    def edge_count(self) -> int:
        return len(self.edges) + self.edges_left_out


class DeliveryView(View):
    """A private message that moved along an edge."""

    source: str = Field("?", validation_alias="from")
    target: str = Field("?", validation_alias="to")
    score: float | None = None
    phase: str = ""


class DecisionView(View):
    """The manager's decision after a round."""

    halt: bool = False
    accepted: bool = False
    rejected_because: str = ""
    reason: str = ""
    goal_next: str = ""
    final_answer: str = ""
    usage: Usage = Field(default_factory=Usage)


class FallbackView(View):
    """A manager duty that failed; the run went on with a fallback."""

    duty: str = ""
    error: str = ""
    error_type: str = ""
    goal: str = ""


class ResumeView(View):
    """A `run_resumed` event: the run continued from its checkpoint."""

    from_round: int | None = None
    completed_rounds: int | None = None
    status: str = ""
    forced: bool = False


class RoundView(View):
    number: int
    goal: str = ""
    agents: list[AgentView] = Field(default_factory=list)
    routing: RoutingView | None = None
    deliveries: list[DeliveryView] = Field(default_factory=list)
    decision: DecisionView | None = None
    fallbacks: list[FallbackView] = Field(default_factory=list)
    manager_attempts: list[AttemptView] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    wall_s: float | None = None
    failed: list[str] = Field(default_factory=list)
    complete: bool = False
    """Its `round_end` is in the trace."""
    repeated: bool = False
    """A resumed run ran it again; this is the later copy, which the result holds."""

    def agent(self, agent_id: str) -> AgentView | None:
        return next((a for a in self.agents if a.agent == agent_id), None)

    @property
    def reasks(self) -> int:
        manager = sum(1 for a in self.manager_attempts if a.kind == "structured" and not a.ok)
        return manager + sum(a.reasks for a in self.agents)

    @property
    def tool_calls(self) -> int:
        return sum(len(a.tool_calls) for a in self.agents)


class MoreRounds(View):
    """Rounds past the report's limit: their numbers and the tokens they used."""

    first: int | None = None
    last: int | None = None
    usage: Usage = Field(default_factory=Usage)


class RunView(View):
    """A whole run as its trace tells it."""

    source: str = ""
    """The trace file's name."""
    run_id: str = ""
    name: str = ""
    task: str = ""
    mode: str = ""
    execution: str = ""
    embedder: str = ""
    tau: float | None = None
    seed: int | None = None
    max_rounds: int | None = None
    min_rounds: int | None = None
    started_ts: float | None = None
    agents: list[str] = Field(default_factory=list)
    """Every agent seen in the run, in the run's order (graph positions come from this)."""
    opening_goal: str = ""
    rounds: list[RoundView] = Field(default_factory=list)
    more_rounds: MoreRounds | None = None
    """Rounds left out past the limit (their tokens are in the totals)."""
    resumes: list[ResumeView] = Field(default_factory=list)
    fallbacks: list[FallbackView] = Field(default_factory=list)
    """Manager fallbacks outside a round (the final answer's)."""
    manager_attempts: list[AttemptView] = Field(default_factory=list)
    """The manager's ladder outside a round's decision (opening goal, final answer)."""
    budget_stops: list[dict[str, Any]] = Field(default_factory=list)
    ended: bool = False
    """The last attempt wrote its `run_end`."""
    halt_reason: str = ""
    final_answer: str = ""
    error: str = ""
    unfinished_round: int | None = None
    usage: Usage = Field(default_factory=Usage)
    usage_by_agent: dict[str, Usage] = Field(default_factory=dict)
    failures: int | None = None
    wall_s: float | None = None
    notices: list[str] = Field(default_factory=list)
    """What the reader must know about the trace itself (partial, torn, skipped lines)."""

    torn: bool = False
    """The trace's last line is cut short: something was being written when it was read."""

    @property
    def partial(self) -> bool:
        return not self.ended or self.torn

    @property
    def reasks(self) -> int:
        """Ladder re-asks: failed structured attempts of agents and manager."""
        outside = sum(1 for a in self.manager_attempts if a.kind == "structured" and not a.ok)
        return outside + sum(r.reasks for r in self.rounds)

    @property
    def tool_calls(self) -> int:
        return sum(r.tool_calls for r in self.rounds)

    @property
    def tool_errors(self) -> int:
        return sum(1 for r in self.rounds for a in r.agents for c in a.tool_calls if not c.ok)

    def round(self, number: int) -> RoundView | None:
        return next((r for r in self.rounds if r.number == number), None)
