"""The step scheduler: one round's agent steps, run concurrently, each under its own time limits.

Barrier mode (the paper's): every agent steps at once from its memory. Tiered mode: agents run
in topological tiers of last round's graph, and a tier reads this round's private messages of
the tiers before it. A step that fails or times out is recorded; it never throws away the steps
that finished. A round can be settled before its last step ends (`settle`: the answer's check
passed on a work product just handed in); the steps still running are then cancelled, their
server slots freed, and recorded as skipped.
"""

from __future__ import annotations

import asyncio
import time
from asyncio import TaskGroup
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import structlog

from dytopo.activity import State, reporting
from dytopo.agents.answer import Work
from dytopo.agents.base import Agent, StepContext, checked_output
from dytopo.agents.memory import MemoryItem
from dytopo.errors import AgentAborted, StepTimeout, TokenCapReached
from dytopo.routing.router import Edge, tiers
from dytopo.swarm.delivery import forward
from dytopo.swarm.recorder import Recorder
from dytopo.swarm.result import AgentStep
from dytopo.swarm.step_timer import StepTimer

log = structlog.get_logger("dytopo.swarm")

Memory = Mapping[str, Sequence[MemoryItem]]


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
    failed_checks: Mapping[str, str] = field(default_factory=dict)
    """Agent -> the failed check of its latest work (set by the round loop)."""
    settle: Callable[[int, str, str], Awaitable[str]] | None = None
    """(round, agent, work) -> why the round is settled ("" if it is not): asked as soon as an
    agent hands in its work product."""
    settled: str = ""
    """Why the current round was settled, if it was."""
    errors: dict[str, Exception] = field(default_factory=dict)
    """This round's failed steps: agent -> what it raised."""
    lead: str | None = None
    """The agent whose work may settle the round (the answer's author): its step starts first,
    the others once its first request holds a server slot (or its step ended). Otherwise the
    teammates may take every slot and the work that could end the round waits behind them."""

    async def barrier(
        self, round: int, goal: str, agents: Sequence[Agent], memory: Memory
    ) -> list[AgentStep]:
        """Every agent at once; results in agent order."""
        self.settled, self.errors = "", {}
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
        self.settled, self.errors = "", {}
        for tier in tiers(list(by_id), edges):
            if self.settled:
                for agent in tier:
                    steps[agent] = AgentStep(agent=agent, ok=False, skipped=self.settled)
                    self.on_step(steps[agent])
                continue
            done = await self._together(round, goal, [by_id[i] for i in tier], memory, same_round)
            for step in done:
                steps[step.agent] = step
            for step in done:
                if step.output is not None:
                    # Only to agents still to come: an edge into a tier that already ran (one
                    # `tiers` dropped to break a cycle) is this round's routing's to deliver.
                    for target, item in forward(round, step.agent, step.output, edges).items():
                        if target not in steps:
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
        tasks: dict[str, asyncio.Task[None]] = {}

        ids = {a.id for a in agents}
        lead = asyncio.Event() if self.lead in ids and len(agents) > 1 else None

        def hand_in(agent: str, ctx: StepContext) -> Callable[[str], Awaitable[None]]:
            async def on_work(text: str) -> None:
                if self.settle is None or self.settled:
                    return
                reason = await self.settle(round, agent, text)
                if reason and not self.settled:
                    self.settled = ctx.settled = reason
                    for other, task in tasks.items():
                        if other != agent and not task.done():
                            task.cancel()

            return on_work

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
                    ctx.on_work = hand_in(agent.id, ctx)
                    ctx.failed_check = self.failed_checks.get(agent.id, "")
                    leads = agent.id == self.lead
                    step = self._step(agent, ctx, results, lead, leads)
                    tasks[agent.id] = group.create_task(step)
        except BaseExceptionGroup as group:
            # on_agent_error=abort: the first failed agent (in agent order) ends the run.
            aborted = [e for e in group.exceptions if isinstance(e, AgentAborted)]
            if len(aborted) != len(group.exceptions):
                raise
            position = {a.id: k for k, a in enumerate(agents)}
            first = min(aborted, key=lambda e: position[e.agent])
            raise first from first.__cause__
        return [results[a.id] for a in agents]

    async def _step(
        self,
        agent: Agent,
        ctx: StepContext,
        results: dict[str, AgentStep],
        lead: asyncio.Event | None = None,
        leads: bool = False,
    ) -> None:
        started = time.monotonic()
        step = AgentStep(agent=agent.id, ok=False)
        timer = StepTimer(self.agent_timeout_s, self.queue_timeout_s)
        error: Exception | None = None
        shown = self.recorder.activity(ctx.round, agent.id)

        def live(state: State, detail: str) -> None:
            if lead is not None and leads and state != "waiting":
                lead.set()  # it holds a slot (or is done): the teammates may start
            shown(state, detail)

        handed_in = False
        on_work = ctx.on_work

        async def noted(text: str) -> None:
            nonlocal handed_in
            handed_in = True
            if on_work is not None:
                await on_work(text)

        ctx.on_work = noted

        try:
            if lead is not None and not leads:
                await lead.wait()
            with reporting(live), ctx.counting():
                output = await timer.run(lambda: agent.step(ctx))
            step.output = checked_output(agent.id, output)
            step.ok = True
            if not handed_in:  # an agent that does not hand in early hands in at its end
                await noted(step.output.private)
        except asyncio.CancelledError:
            if not self.settled:
                raise  # the run was cancelled, not this round settled
            step.skipped = self.settled
        except StepTimeout as exc:
            step.error, error = str(exc), exc
        except Exception as exc:  # a custom agent's bug must not kill the round
            step.error, error = f"{type(exc).__name__}: {exc}", exc
        step.usage, step.attempts, step.dropped = ctx.usage, ctx.attempts, ctx.dropped
        step.packing = ctx.packing
        step.wall_s = round(time.monotonic() - started, 3)
        step.queued_s = round(timer.queued_s, 3)
        live("done" if step.ok or step.skipped else "failed", step.error or step.skipped)
        if not step.ok and not step.skipped:
            if error is not None:
                self.errors[agent.id] = error
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
