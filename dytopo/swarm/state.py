"""Everything a run needs to continue after its last complete round, as one JSON-ready model.

A run keeps one `RunState` while it goes. After every complete round the state is written to
the run's checkpoint (dytopo/swarm/checkpoint.py); `Swarm.resume` continues from it as if the run
had never stopped: same memories, transcript, goal, random numbers and accounting.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field, field_validator

from dytopo.agents.manager import PublicMessage
from dytopo.agents.memory import MemoryItem
from dytopo.backends.types import Usage
from dytopo.routing.router import Routing
from dytopo.swarm.result import HaltReason, RoundRecord, RunResult, UnfinishedRound


class Ledger(BaseModel):
    """What the run has cost so far, by agent and by round, and how often things went wrong."""

    usage: Usage = Field(default_factory=Usage)
    by_agent: dict[str, Usage] = Field(default_factory=dict)
    by_round: dict[int, Usage] = Field(default_factory=dict)
    """Everything charged to round t: its agent steps and manager duties (the opening goal
    counts to round 1, the final answer to the last round)."""
    reasks: int = 0
    """Structured replies that needed at least one re-ask."""
    failures: int = 0
    """Agent steps or manager duties that failed after the whole ladder."""
    stats: Counter[str] = Field(default_factory=Counter)
    """Ladder and tool counters (see RunResult.stats)."""

    def charge(self, who: str, round: int, usage: Usage, *, reasked: bool) -> None:
        self.usage = self.usage + usage
        self.by_agent[who] = self.by_agent.get(who, Usage()) + usage
        self.by_round[round] = self.by_round.get(round, Usage()) + usage
        if reasked:
            self.reasks += 1

    def count(self, event: str, fields: dict[str, Any]) -> None:
        """Count a trace event of a step: tool calls and ladder attempts."""
        if event == "tool_call":
            self.stats["tool_calls"] += 1
            self.stats["tool_errors"] += 0 if fields.get("ok") else 1
        elif event == "ladder":
            kind = fields.get("kind", "structured")
            self.stats[f"{kind}_attempts"] += 1
            if not fields.get("ok"):
                self.stats[f"{kind}_malformed"] += 1

    @property
    def tokens(self) -> int:
        return self.usage.prompt_tokens + self.usage.completion_tokens


class MeterState(BaseModel):
    """The run's token meter (run_token_budget) between rounds."""

    used: int = 0
    refused: str = ""


class RunState(BaseModel):
    """One run after its last complete round (`round`; 0 before the first one)."""

    run_id: str
    task: str
    agents: list[str]
    """Agent ids in swarm order; a resumed swarm must have the same."""
    round: int = 0
    """The last complete round."""
    goal: str | None = None
    """The next round's goal; None until the manager has opened the run."""
    memory: dict[str, list[MemoryItem]]
    """H_i of every agent, oldest first."""
    transcript: list[PublicMessage] = Field(default_factory=list)
    """Every public message, in sigma order per round."""
    rounds: list[RoundRecord] = Field(default_factory=list)
    """Complete rounds, each with its routing, deliveries and usage."""
    ledger: Ledger = Field(default_factory=Ledger)
    """Changed in place while a round runs, so a run that stops mid-round reports its costs."""
    last_round_tokens: int = 0
    """Tokens the last complete round used: the forecast for the next one (budget guard)."""
    rng: list[Any]
    """random.Random.getstate() in JSON form (`random` mode draws its edges from it); checked
    when the state is read, so a damaged checkpoint is refused before a resume starts."""
    manager: dict[str, Any] = Field(default_factory=dict)
    """A manager's own state, when it implements `StatefulManager`."""
    meter: MeterState | None = None
    """The token meter, when the run has a run_token_budget."""
    wall_s: float = 0.0
    """Seconds the run has been running, over all its attempts, until this state."""

    @field_validator("rng")
    @classmethod
    def _rng_loads(cls, rng: list[Any]) -> list[Any]:
        try:
            load_rng(rng)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(
                "not a random-number state ([version, 625 integers, gauss] as "
                f"random.Random.getstate() gives it): {exc}"
            ) from None
        return rng

    @classmethod
    def begin(cls, run_id: str, task: str, agents: list[str], seed: int) -> RunState:
        return cls(
            run_id=run_id,
            task=task,
            agents=agents,
            memory={a: [] for a in agents},
            rng=dump_rng(random.Random(seed)),
        )

    @property
    def routing_history(self) -> list[Routing]:
        return [r.routing for r in self.rounds]

    def result(
        self,
        halt_reason: HaltReason,
        final_answer: str,
        *,
        unfinished: UnfinishedRound | None = None,
        wall_s: float = 0.0,
        trace_path: str | None = None,
    ) -> RunResult:
        """What the run returns (or RunError.partial holds) when it ends in this state."""
        ledger = self.ledger
        return RunResult(
            run_id=self.run_id,
            task=self.task,
            final_answer=final_answer,
            halt_reason=halt_reason,
            rounds=self.rounds,
            unfinished=unfinished,
            usage=ledger.usage,
            usage_by_agent=ledger.by_agent,
            wall_s=wall_s,
            trace_path=trace_path,
            reasks=ledger.reasks,
            failures=ledger.failures,
            stats=ledger.stats,
        )

    @property
    def halted(self) -> RoundRecord | None:
        """The last round, if the manager's halt was accepted in it (the run is over)."""
        last = self.rounds[-1] if self.rounds else None
        return last if last is not None and last.halt_accepted else None


def dump_rng(rng: random.Random) -> list[Any]:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def load_rng(state: list[Any]) -> random.Random:
    """The generator `dump_rng` saved; TypeError or ValueError when `state` is not one."""
    version, internal, gauss = state
    if gauss is not None and (isinstance(gauss, bool) or not isinstance(gauss, int | float)):
        raise TypeError(f"gauss must be a number or null, not {type(gauss).__name__}")
    rng = random.Random()
    rng.setstate((version, tuple(internal), gauss))
    return rng


@runtime_checkable
class StatefulManager(Protocol):
    """A manager that keeps state between its calls implements both methods, so a resumed run
    gets it back (LLMManager keeps none: it sees the transcript every time)."""

    def dump_state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...
