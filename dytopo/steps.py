"""The step scheduler: one round's agent steps, run concurrently, each under its own time limits.

Barrier mode (the paper's): every agent steps at once from its memory. Tiered mode: agents run
in topological tiers of last round's graph, and a tier reads this round's private messages of
the tiers before it. A step that fails or times out is recorded; it never throws away the steps
that finished.
"""

from __future__ import annotations

import time
from asyncio import TaskGroup
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import structlog

from dytopo.activity import reporting
from dytopo.agent import Agent, StepContext, checked_output
from dytopo.answer import Work
from dytopo.delivery import forward
from dytopo.errors import AgentFailed
from dytopo.memory import MemoryItem
from dytopo.meter import TokenCapReached
from dytopo.recorder import Recorder
from dytopo.result import AgentStep
from dytopo.router import Edge, tiers
from dytopo.step_timer import StepTimeout, StepTimer

log = structlog.get_logger("dytopo.swarm")

Memory = Mapping[str, Sequence[MemoryItem]]


class AgentAborted(AgentFailed):
    """An agent step failed and `on_agent_error` is `abort`; the cause is the agent's error."""

    def __init__(self, agent: str, message: str) -> None:
        super().__init__(message)
        self.agent = agent


@dataclass
class Scheduler:
    """Runs agent steps for one run; `on_step` sees each step as soon as it is done."""

    recorder: Recorder
    agent_timeout_s: float
    queue_timeout_s: float | None
    on_agent_error: Literal["continue", "abort"] = "continue"
    on_step: Callable[[AgentStep], None] = field(default=lambda step: None)
    own_work: Mapping[str, Work] = field(default_factory=dict)
    """Each agent's latest work product before this round (set by the round loop)."""

    async def barrier(
        self, round: int, goal: str, agents: Sequence[Agent], memory: Memory
    ) -> list[AgentStep]:
        """Every agent at once; results in agent order."""
        return await self._together(round, goal, agents, memory, {})

    async def tiered(
        self, round: int, goal: str, agents: Sequence[Agent], memory: Memory, edges: Sequence[Edge]
    ) -> tuple[list[AgentStep], dict[str, list[MemoryItem]]]:
        """Tier by tier of `edges` (last round's graph); returns the steps in agent order and
        the private messages each agent read within the round."""
        by_id = {a.id: a for a in agents}
        edges = [e for e in edges if e.source in by_id and e.target in by_id]
        same_round: dict[str, list[MemoryItem]] = {a.id: [] for a in agents}
        steps: dict[str, AgentStep] = {}
        for tier in tiers(list(by_id), edges):
            done = await self._together(round, goal, [by_id[i] for i in tier], memory, same_round)
            for step in done:
                steps[step.agent] = step
                if step.output is not None:
                    for target, item in forward(round, step.agent, step.output, edges).items():
                        same_round[target].append(item)
        return [steps[a.id] for a in agents], same_round

    async def _together(
        self,
        round: int,
        goal: str,
        agents: Sequence[Agent],
        memory: Memory,
        same_round: Memory,
    ) -> list[AgentStep]:
        results: dict[str, AgentStep] = {}
        try:
            async with TaskGroup() as group:
                for agent in agents:
                    ctx = self.recorder.context(
                        round,
                        agent.id,
                        goal=goal,
                        memory=memory[agent.id],
                        same_round=same_round.get(agent.id, ()),
                        own_work=self.own_work.get(agent.id),
                    )
                    group.create_task(self._step(agent, ctx, results))
        except BaseExceptionGroup as group:
            # on_agent_error=abort: the first failed agent (in agent order) ends the run.
            aborted = [e for e in group.exceptions if isinstance(e, AgentAborted)]
            if len(aborted) != len(group.exceptions):
                raise
            position = {a.id: k for k, a in enumerate(agents)}
            first = min(aborted, key=lambda e: position[e.agent])
            raise first from first.__cause__
        return [results[a.id] for a in agents]

    async def _step(self, agent: Agent, ctx: StepContext, results: dict[str, AgentStep]) -> None:
        started = time.monotonic()
        step = AgentStep(agent=agent.id, ok=False)
        timer = StepTimer(self.agent_timeout_s, self.queue_timeout_s)
        error: Exception | None = None
        live = self.recorder.activity(ctx.round, agent.id)
        try:
            with reporting(live):
                output = await timer.run(lambda: agent.step(ctx))
            step.output = checked_output(agent.id, output)
            step.ok = True
        except StepTimeout as exc:
            step.error, error = str(exc), exc
        except Exception as exc:  # a custom agent's bug must not kill the round
            step.error, error = f"{type(exc).__name__}: {exc}", exc
        step.usage, step.attempts, step.dropped = ctx.usage, ctx.attempts, ctx.dropped
        step.packing = ctx.packing
        step.wall_s = round(time.monotonic() - started, 3)
        step.queued_s = round(timer.queued_s, 3)
        live("done" if step.ok else "failed", step.error)
        if not step.ok:
            self.recorder.failed()
            log.warning("agent.failed", agent=agent.id, round=ctx.round, error=step.error)
        self.recorder.charge(agent.id, ctx)
        results[agent.id] = step
        self.on_step(step)
        # A step the token cap refused is the run's limit, not the agent's fault: no abort.
        abort = self.on_agent_error == "abort" and not isinstance(error, TokenCapReached)
        if error is not None and abort:
            raise AgentAborted(
                agent.id,
                f"agent {agent.id} failed in round {ctx.round} and on_agent_error is abort: "
                f"{step.error}",
            ) from error
