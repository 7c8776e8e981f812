"""Where a run's costs and events go: the ledger of its state, and its trace."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from dytopo import activity
from dytopo.agents.answer import Work
from dytopo.agents.base import StepContext
from dytopo.agents.memory import MemoryItem
from dytopo.backends.meter import run_meter
from dytopo.swarm.state import Ledger
from dytopo.swarm.trace import Trace


class Recorder:
    """Hands out step contexts whose events reach the trace, and charges what they used."""

    def __init__(self, trace: Trace, ledger: Ledger, task: str) -> None:
        self.trace = trace
        self.ledger = ledger
        self.task = task

    def context(
        self,
        round: int,
        who: str,
        *,
        goal: str = "",
        memory: Sequence[MemoryItem] = (),
        same_round: Sequence[MemoryItem] = (),
        own_work: Work | None = None,
    ) -> StepContext:
        """A fresh context for one agent step or manager duty in `round`."""
        return StepContext(
            task=self.task,
            goal=goal,
            round=round,
            memory=list(memory),
            same_round=list(same_round),
            own_work=own_work,
            emit=self._emitter(round, who),
        )

    def charge(self, who: str, ctx: StepContext) -> None:
        """Book a finished step or duty, and free its hold on the run's token meter."""
        # Tool-call attempts are not re-asks of the structured reply.
        reasked = sum(1 for a in ctx.attempts if a.kind == "structured") > 1
        self.ledger.charge(who, ctx.round, ctx.usage, reasked=reasked)
        meter = run_meter.get()
        if meter is not None:
            meter.release()

    def activity(self, round: int, who: str, doing: str = "") -> activity.Hook:
        """The live-view hook for one agent step or manager duty (`agent_state` events);
        `doing` names the duty when a note has no detail of its own."""

        def hook(state: activity.State, detail: str) -> None:
            if state not in ("done", "failed"):
                detail = detail or doing
            self.trace.live("agent_state", round=round, agent=who, state=state, detail=detail)

        return hook

    def failed(self) -> None:
        self.ledger.failures += 1

    def _emitter(self, round: int, who: str) -> Callable[..., None]:
        def emit(event: str, **fields: Any) -> None:
            self.ledger.count(event, fields)
            self.trace.emit(event, round=round, agent=who, **fields)

        return emit
