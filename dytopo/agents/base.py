"""Agents: one async step per round that returns the four fields; LLM-backed or plain Python."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dytopo.agents.answer import Work
from dytopo.agents.memory import MemoryItem
from dytopo.agents.structured import Attempt
from dytopo.backends.meter import usage_to
from dytopo.backends.types import Usage
from dytopo.errors import AgentFailed

PRIVATE_CHARS = 4000
"""Cap of an agent's private message: a whole function with a note on what changed fits."""


class AgentOutput(BaseModel):
    """What every agent says each round (strict JSON from LLM agents).

    The length caps go into the JSON schema the server enforces, so a model caught in a
    repetition loop is stopped at the cap instead of running into max_tokens.
    """

    model_config = ConfigDict(extra="forbid")

    public: str = Field(max_length=240)
    """Short progress report that every agent and the manager can see."""
    private: str = Field(max_length=PRIVATE_CHARS)
    """The substantive content, sent only along this round's outgoing edges."""
    query: str = Field(max_length=160)
    """One sentence: what this agent needs now (the need descriptor)."""
    key: str = Field(max_length=160)
    """One sentence: what this agent can offer now (the offer descriptor)."""


def checked_output(agent: str, value: object) -> AgentOutput:
    """A custom agent's return value as an AgentOutput: one already, or a dict that validates.

    Raises AgentFailed naming what came back, so a plug-in's mistake is a failed step.
    """
    if isinstance(value, AgentOutput):
        return value
    if isinstance(value, Mapping):
        try:
            return AgentOutput.model_validate(dict(value))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'output'}: {e['msg']}"
                for e in exc.errors()
            )
            raise AgentFailed(
                f"agent {agent} returned a dict that is not a valid AgentOutput ({problems})"
            ) from exc
    raise AgentFailed(
        f"agent {agent} returned {type(value).__name__}, not an AgentOutput "
        "(return AgentOutput(public=..., private=..., query=..., key=...))"
    )


@dataclass
class StepContext:
    """Everything an agent sees for one step, plus accounting it may fill in."""

    task: str
    goal: str
    round: int
    memory: list[MemoryItem]
    """H_i: own public messages and received private messages, oldest first."""
    same_round: list[MemoryItem] = field(default_factory=list)
    """`tiered` execution only: private messages from earlier tiers of this round."""
    own_work: Work | None = None
    """This agent's latest work product (its last private message), to build on."""
    failed_check: str = ""
    """The answer's check of `own_work`, when it failed (also in `memory`): what to fix."""
    usage: Usage = field(default_factory=Usage)
    attempts: list[Attempt] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    """What context packing left out of the prompt, for the trace."""
    packing: dict[str, int] = field(default_factory=dict)
    """Prompt tokens with everything kept (`full_tokens`) and as sent (`prompt_tokens`)."""
    emit: Callable[..., None] | None = None
    """Trace hook (set by the scheduler): `ctx.event("tool_call", ...)`."""
    on_work: Callable[[str], Awaitable[None]] | None = None
    """Set by the scheduler: sees the work product as soon as it is written."""
    settled: str = ""
    """Set when this step's work settled the round (why): the run ends with it, so what the
    step would do after handing it in (describing it for routing) can be left out."""

    def event(self, name: str, **fields: Any) -> None:
        if self.emit is not None:
            self.emit(name, **fields)

    def counting(self) -> AbstractContextManager[None]:
        """Book every request sent inside the block to this context's `usage` (backends report
        each request's usage, complete or not, through `dytopo.backends.meter.settle`)."""
        return usage_to(self._spent)

    def _spent(self, usage: Usage) -> None:
        self.usage = self.usage + usage

    async def work_done(self, text: str) -> None:
        """Hand in this step's work product before the step is over (what comes after it,
        such as the descriptors, may still run). The round may be settled by it: a passing
        check of the answer cancels the teammates' steps that are still running."""
        if self.on_work is not None:
            await self.on_work(text)

    def accounting(self) -> dict[str, Any]:
        """The trace fields every step and manager duty reports."""
        return {
            "usage": self.usage,
            "attempts": self.attempts,
            "dropped": self.dropped,
            "packing": self.packing,
        }

    def record_attempt(self, attempt: Attempt) -> None:
        """Keep a ladder attempt and put it in the trace."""
        self.attempts.append(attempt)
        self.event("ladder", **attempt.model_dump())


class Agent(ABC):
    """A swarm member. Subclass and implement `step`; mix freely with LLM agents."""

    def __init__(self, id: str, role: str | None = None, does: str = "") -> None:
        self.id = id
        self.role = role or id
        self.does = does
        """One line on what this agent does, for the manager's view of its team."""

    @abstractmethod
    async def step(self, ctx: StepContext) -> AgentOutput:
        """Do this round's work and describe what you need and offer."""


class FunctionAgent(Agent):
    """An agent made from an async function `(ctx) -> AgentOutput` (no LLM needed)."""

    def __init__(
        self,
        id: str,
        fn: Callable[[StepContext], Awaitable[AgentOutput]],
        role: str | None = None,
    ) -> None:
        super().__init__(id, role)
        self._fn = fn

    async def step(self, ctx: StepContext) -> AgentOutput:
        return await self._fn(ctx)
