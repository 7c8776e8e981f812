"""The round loop: goal, concurrent agent steps, routing, delivery in sigma order, decision."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import structlog

from dytopo.agent import Agent, StepContext, checked_output
from dytopo.backends.base import Backend
from dytopo.backends.types import Usage
from dytopo.budget import BudgetPlan
from dytopo.cards import load_card
from dytopo.embedders.base import Embedder
from dytopo.errors import (
    AgentFailed,
    BackendError,
    BackendUnavailable,
    BudgetExceeded,
    DyTopoError,
    RunError,
)
from dytopo.llm_agent import LLMAgent
from dytopo.loader import load_topology
from dytopo.manager import LLMManager, Manager, ManagerDecision, PublicMessage
from dytopo.memory import MemoryItem
from dytopo.meter import TokenCapReached, TokenMeter, run_meter
from dytopo.result import AgentStep, Delivery, RoundRecord, RunResult, UnfinishedRound
from dytopo.router import Routing, route, tiers
from dytopo.routing import RoutingConfig
from dytopo.step_timer import StepTimeout, StepTimer
from dytopo.tools.context import ToolContext
from dytopo.tools.loop import ToolPolicy
from dytopo.tools.registry import ToolRegistry
from dytopo.topology import Topology
from dytopo.trace import Observer, Trace
from dytopo.versions import versions

log = structlog.get_logger("dytopo.swarm")


def _tokens(usage: Usage) -> int:
    return usage.prompt_tokens + usage.completion_tokens


def fallback_goal(task: str) -> str:
    return f"Make concrete progress on the task: {task[:300]}"


class AgentAborted(AgentFailed):
    """An agent step failed and `on_agent_error` is `abort`; the cause is the agent's error."""

    def __init__(self, agent: str, message: str) -> None:
        super().__init__(message)
        self.agent = agent


def _manager_can_fall_back(exc: Exception) -> bool:
    """A manager duty that failed this way gets a fallback; a dead server ends the run."""
    if isinstance(exc, BackendUnavailable):
        return False
    return isinstance(exc, AgentFailed | BudgetExceeded | BackendError)


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class Swarm:
    """Agents + manager + embedder + routing rule. `await swarm.run(task)` runs it once."""

    def __init__(
        self,
        agents: Sequence[Agent],
        manager: Manager,
        embedder: Embedder,
        *,
        routing: RoutingConfig | None = None,
        max_rounds: int = 5,
        min_rounds: int = 2,
        seed: int = 0,
        agent_timeout_s: float = 600.0,
        queue_timeout_s: float | None = 1800.0,
        on_agent_error: Literal["continue", "abort"] = "continue",
        name: str = "swarm",
        config: dict[str, Any] | None = None,
        run_token_budget: int | None = None,
        final_answer_reserve: int = 2000,
    ) -> None:
        ids = [a.id for a in agents]
        if not agents or len(set(ids)) != len(ids):
            raise ValueError(f"a swarm needs at least one agent and unique ids, got {ids}")
        self.agents = list(agents)
        self.manager = manager
        self.embedder = embedder
        self.routing = routing or RoutingConfig()
        self.max_rounds = max_rounds
        self.min_rounds = min(min_rounds, max_rounds)
        self.seed = seed
        self.agent_timeout_s = agent_timeout_s
        """Each agent step's own work (time waiting for a server slot not included)."""
        self.queue_timeout_s = queue_timeout_s
        """Each wait of an agent step for a free server slot; None: no limit."""
        self.on_agent_error = on_agent_error
        """continue: a failed step is recorded and the round goes on; abort: RunError."""
        self.name = name
        self.config = config or {}
        self.run_token_budget = run_token_budget
        """Cap on prompt + generated tokens of the whole run; None: no cap."""
        self.final_answer_reserve = final_answer_reserve
        """Tokens kept for the manager's final answer (at most half the cap): agent and decision
        requests are admitted only up to run_token_budget minus this."""

    @classmethod
    def from_yaml(
        cls,
        path: str | Path,
        *,
        backend: Backend,
        embedder: Embedder,
        trust_topology: bool = False,
    ) -> Swarm:
        """A swarm from a topology file, on the given backend and embedder. Its tool modules
        (code) and role cards must lie in its folder tree unless `trust_topology`."""
        topology = load_topology(path, trust_topology=trust_topology)
        return build_swarm(
            topology,
            backend,
            embedder,
            base_dir=Path(path).parent,
            trust_topology=trust_topology,
        )

    async def run(
        self,
        task: str,
        *,
        trace_path: str | Path | None = None,
        observers: Sequence[Observer] = (),
    ) -> RunResult:
        """Run the swarm on `task`. Raises RunError (with `.partial`) only when it cannot go on."""
        run = _Run(self, task, Path(trace_path) if trace_path else None, observers)
        return await run.execute()


class _Run:
    """State of one run; kept apart from Swarm so a swarm can run many tasks."""

    def __init__(
        self, swarm: Swarm, task: str, trace_path: Path | None, observers: Sequence[Observer]
    ) -> None:
        self.s = swarm
        self.task = task
        self.run_id = uuid.uuid4().hex[:12]
        self.trace = Trace(self.run_id, trace_path)
        self.trace.observers.extend(observers)
        self.memory: dict[str, list[MemoryItem]] = {a.id: [] for a in swarm.agents}
        self.transcript: list[PublicMessage] = []
        self.rng = random.Random(swarm.seed)
        self.result = RunResult(
            run_id=self.run_id,
            task=task,
            final_answer="",
            halt_reason="error",
            trace_path=str(trace_path) if trace_path else None,
        )
        self.started = time.monotonic()
        self.prev_routing: Routing | None = None
        self.last_round_tokens = 0
        cap = swarm.run_token_budget
        self.meter = (
            TokenMeter(cap=cap, reserve=min(swarm.final_answer_reserve, cap // 2))
            if cap is not None
            else None
        )
        self.current: UnfinishedRound | None = None
        """The round in progress (kept in the result if the run stops during it)."""
        self.current_traced = False
        """Whether the current round's agent_output events were written."""

    def _account(self, who: str, acct: StepContext) -> None:
        self.result.usage = self.result.usage + acct.usage
        by = self.result.usage_by_agent
        by[who] = by.get(who, Usage()) + acct.usage
        # Tool-call attempts are not re-asks of the structured reply.
        if sum(1 for a in acct.attempts if a.kind == "structured") > 1:
            self.result.reasks += 1
        if self.meter is not None:
            self.meter.release()

    def _count(self, event: str, fields: dict[str, Any]) -> None:
        stats = self.result.stats
        if event == "tool_call":
            stats["tool_calls"] += 1
            stats["tool_errors"] += 0 if fields.get("ok") else 1
        elif event == "ladder":
            kind = fields.get("kind", "structured")
            stats[f"{kind}_attempts"] += 1
            if not fields.get("ok"):
                stats[f"{kind}_malformed"] += 1

    def _acct(self, round: int) -> StepContext:
        return StepContext(
            task=self.task, goal="", round=round, memory=[], emit=self._emitter(round, "manager")
        )

    def _emitter(self, round: int, who: str) -> Callable[..., None]:
        def emit(event: str, **fields: Any) -> None:
            self._count(event, fields)
            self.trace.emit(event, round=round, agent=who, **fields)

        return emit

    async def execute(self) -> RunResult:
        s = self.s
        self.trace.emit(
            "run_start",
            name=s.name,
            task=self.task,
            seed=s.seed,
            config=s.config,
            versions=versions(),
            agents=[a.id for a in s.agents],
            mode=s.routing.mode,
            execution=s.routing.execution,
            tau=s.routing.tau,
            max_rounds=s.max_rounds,
            min_rounds=s.min_rounds,
            embedder=s.embedder.name,
        )
        meter_token = run_meter.set(self.meter)
        try:
            await self._rounds()
        except Exception as exc:
            self.result.halt_reason = "error"
            self._keep_unfinished()
            error = _leaf(exc)
            self._finish(error=f"{type(error).__name__}: {error}")
            raise self._run_error(error) from (
                error.__cause__ if isinstance(error, AgentAborted) else error
            )
        except BaseException:  # cancelled, Ctrl-C: stop at once, keep what the trace has
            self.result.halt_reason = "error"
            self._keep_unfinished()
            self._finish(error="interrupted")
            raise
        finally:
            run_meter.reset(meter_token)
            self.trace.close()
        return self.result

    def _run_error(self, error: BaseException) -> RunError:
        """One line: where the run stopped, why, what was kept, where the trace is."""
        what = str(error) if isinstance(error, DyTopoError) else f"{type(error).__name__}: {error}"
        kept = ""
        if self.result.unfinished is not None:
            u = self.result.unfinished
            kept = (
                f"; round {u.round} stopped with {len(u.steps)} agent step(s) finished "
                "(kept in .partial.unfinished)"
            )
        where = f" (trace: {self.trace.path})" if self.trace.path else ""
        return RunError(
            f"run {self.run_id} stopped after {len(self.result.rounds)} complete round(s): "
            f"{what}{kept}{where}",
            partial=self.result,
        )

    def _keep_unfinished(self) -> None:
        """Put the round in progress, with its finished agent steps, into the result and trace."""
        current, self.current = self.current, None
        if current is None:
            return
        position = {a.id: k for k, a in enumerate(self.s.agents)}
        current.steps.sort(key=lambda st: position[st.agent])
        self.result.unfinished = current
        if not self.current_traced:
            self._trace_steps(current.round, current.steps)

    async def _rounds(self) -> None:
        s = self.s
        acct = self._acct(1)
        try:
            goal = await s.manager.open(self.task, acct)
        except Exception as exc:
            if not _manager_can_fall_back(exc):
                raise
            goal = fallback_goal(self.task)
            self.result.failures += 1
            self.trace.emit(
                "manager_fallback",
                round=1,
                agent="manager",
                duty="open",
                error=str(exc),
                error_type=type(exc).__name__,
                goal=goal,
            )
        self._account("manager", acct)
        self.trace.emit(
            "manager_goal",
            round=1,
            agent="manager",
            goal=goal,
            **acct.accounting(),
        )
        for t in range(1, s.max_rounds + 1):
            if self._over_budget(t):
                self.result.halt_reason = "budget"
                self.result.final_answer = await self._final_answer()
                break
            used_before = _tokens(self.result.usage)
            record = await self._round(t, goal)
            self.result.rounds.append(record)
            self.last_round_tokens = _tokens(self.result.usage) - used_before
            if record.halt_accepted and record.decision is not None:
                self.result.final_answer = record.decision.final_answer
                self.result.halt_reason = "manager"
                break
            if record.decision is not None and record.decision.goal_next.strip():
                goal = record.decision.goal_next
        else:
            stopped = self._over_budget(s.max_rounds, ahead=False)
            self.result.halt_reason = "budget" if stopped else "max_rounds"
            self.result.final_answer = await self._final_answer()
        self._finish()

    def _over_budget(self, t: int, *, ahead: bool = True) -> bool:
        """Did the token cap refuse a request, or (`ahead`) would round t not fit before the
        final answer's reserve? (The meter enforces the cap; this only avoids a cut-off round.)"""
        meter = self.meter
        if meter is None:
            return False
        used = _tokens(self.result.usage)
        # The last round is the best forecast of the next.
        forecast = ahead and t > 1 and used + self.last_round_tokens + meter.reserve > meter.cap
        if not meter.refused and not forecast:
            return False
        self.trace.emit(
            "budget_stop",
            round=t,
            run_token_budget=meter.cap,
            used=used,
            next_round_estimate=self.last_round_tokens,
            final_answer_reserve=meter.reserve,
            refused=meter.refused,
        )
        return True

    async def _round(self, t: int, goal: str) -> RoundRecord:
        s = self.s
        started = time.monotonic()
        self.trace.emit("round_start", round=t, goal=goal)
        self.current, self.current_traced = UnfinishedRound(round=t, goal=goal), False
        active = s.agents[:1] if s.routing.mode == "single" else s.agents
        same_round: dict[str, list[MemoryItem]] = {a.id: [] for a in active}
        if s.routing.execution == "tiered" and self.prev_routing is not None:
            steps = await self._tiered(t, goal, active, same_round)
        else:
            steps = await self._steps(t, goal, active, same_round)
        self._trace_steps(t, steps)
        self.current_traced = True
        ok = [st for st in steps if st.ok and st.output is not None]
        outputs = {st.agent: st.output for st in ok if st.output is not None}
        ids = [st.agent for st in ok]
        routing = await route(
            ids,
            [outputs[i].query for i in ids],
            [outputs[i].key for i in ids],
            s.embedder,
            s.routing,
            rng=self.rng,
        )
        self.trace.emit("routing", round=t, **routing.model_dump())
        if routing.hub is not None and s.routing.hub not in (None, routing.hub):
            log.warning("star.hub_replaced", round=t, hub=s.routing.hub, replaced_by=routing.hub)
        deliveries = self._deliver(t, routing, outputs, same_round)
        for d in deliveries:
            self.trace.emit(
                "delivery",
                round=t,
                score=d.score,
                phase=d.phase,
                **{"from": d.source, "to": d.target},
            )
        self.prev_routing = routing
        assert self.current is not None
        self.current.routing, self.current.deliveries = routing, deliveries
        if self.meter is not None and self.meter.refused:
            # The cap already refused a request: the run halts now, and the final answer is
            # what the remaining tokens are for.
            decision, accepted, manager_usage = None, False, Usage()
        else:
            decision, accepted, manager_usage = await self._decide(t)
        usage = sum((st.usage for st in steps), manager_usage)
        record = RoundRecord(
            round=t,
            goal=goal,
            steps=steps,
            routing=routing,
            deliveries=deliveries,
            decision=decision,
            halt_accepted=accepted,
            usage=usage,
            wall_s=round(time.monotonic() - started, 3),
        )
        self.trace.emit(
            "round_end",
            round=t,
            edges=len(routing.edges),
            usage=usage,
            failed=[st.agent for st in steps if not st.ok],
            wall_s=record.wall_s,
        )
        self.current = None
        return record

    def _trace_steps(self, t: int, steps: Sequence[AgentStep]) -> None:
        for step in steps:
            self.trace.emit(
                "agent_output",
                round=t,
                **step.model_dump(exclude={"output"}),
                **(step.output.model_dump() if step.output else {}),
            )

    async def _steps(
        self, t: int, goal: str, agents: Sequence[Agent], same_round: dict[str, list[MemoryItem]]
    ) -> list[AgentStep]:
        """Run agents concurrently; each times out on its own and keeps its result."""
        results: dict[str, AgentStep] = {}
        try:
            async with asyncio.TaskGroup() as group:
                for agent in agents:
                    ctx = StepContext(
                        task=self.task,
                        goal=goal,
                        round=t,
                        memory=list(self.memory[agent.id]),
                        same_round=list(same_round.get(agent.id, [])),
                        emit=self._emitter(t, agent.id),
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
        timer = StepTimer(self.s.agent_timeout_s, self.s.queue_timeout_s)
        error: Exception | None = None
        try:
            step.output = checked_output(agent.id, await timer.run(lambda: agent.step(ctx)))
            step.ok = True
        except StepTimeout as exc:
            step.error, error = str(exc), exc
        except Exception as exc:  # a custom agent's bug must not kill the round
            step.error, error = f"{type(exc).__name__}: {exc}", exc
        step.usage, step.attempts, step.dropped = ctx.usage, ctx.attempts, ctx.dropped
        step.packing = ctx.packing
        step.wall_s = round(time.monotonic() - started, 3)
        step.queued_s = round(timer.queued_s, 3)
        if not step.ok:
            self.result.failures += 1
            log.warning("agent.failed", agent=agent.id, round=ctx.round, error=step.error)
        self._account(agent.id, ctx)
        results[agent.id] = step
        if self.current is not None:
            self.current.steps.append(step)
        # A step the token cap refused is the run's limit, not the agent's fault: no abort.
        abort = self.s.on_agent_error == "abort" and not isinstance(error, TokenCapReached)
        if error is not None and abort:
            raise AgentAborted(
                agent.id,
                f"agent {agent.id} failed in round {ctx.round} and on_agent_error is abort: "
                f"{step.error}",
            ) from error

    async def _tiered(
        self, t: int, goal: str, agents: Sequence[Agent], same_round: dict[str, list[MemoryItem]]
    ) -> list[AgentStep]:
        """Tiers of last round's graph; a tier reads this round's messages of earlier tiers."""
        assert self.prev_routing is not None
        by_id = {a.id: a for a in agents}
        order = [a.id for a in agents]
        edges = [e for e in self.prev_routing.edges if e.source in by_id and e.target in by_id]
        steps: dict[str, AgentStep] = {}
        for tier in tiers(order, edges):
            for step in await self._steps(t, goal, [by_id[i] for i in tier], same_round):
                steps[step.agent] = step
                if step.output is None:
                    continue
                for e in edges:
                    if e.source == step.agent:
                        same_round[e.target].append(
                            MemoryItem(
                                round=t,
                                kind="private",
                                source=step.agent,
                                text=step.output.private,
                                score=e.score,
                            )
                        )
        return [steps[i] for i in order]

    def _deliver(
        self,
        t: int,
        routing: Routing,
        outputs: dict[str, Any],
        same_round: dict[str, list[MemoryItem]],
    ) -> list[Delivery]:
        """H_i += own public, then incoming private messages in sigma order."""
        position = {a: k for k, a in enumerate(routing.order)}
        incoming: dict[str, list[Delivery]] = {a: [] for a in routing.order}
        for e in routing.edges:
            incoming[e.target].append(Delivery(source=e.source, target=e.target, score=e.score))
        deliveries: list[Delivery] = []
        for agent in routing.order:
            out = outputs[agent]
            self.memory[agent].append(
                MemoryItem(round=t, kind="own", source=agent, text=out.public)
            )
            self.transcript.append(PublicMessage(round=t, agent=agent, text=out.public))
            already = {m.source for m in same_round.get(agent, [])}
            for m in same_round.get(agent, []):
                self.memory[agent].append(m)
                deliveries.append(
                    Delivery(
                        source=m.source, target=agent, score=m.score or 0.0, phase="same_round"
                    )
                )
            for d in sorted(incoming[agent], key=lambda d: position[d.source]):
                if d.source in already:
                    continue
                self.memory[agent].append(
                    MemoryItem(
                        round=t,
                        kind="private",
                        source=d.source,
                        text=outputs[d.source].private,
                        score=d.score,
                    )
                )
                deliveries.append(d)
        return deliveries

    async def _decide(self, t: int) -> tuple[ManagerDecision | None, bool, Usage]:
        """The manager's decision, whether its halt is accepted, and what the call cost."""
        s = self.s
        acct = self._acct(t)
        try:
            decision = await s.manager.decide(self.task, t, s.max_rounds, self.transcript, acct)
        except Exception as exc:
            if not _manager_can_fall_back(exc):
                raise
            self.result.failures += 1
            self._account("manager", acct)
            self.trace.emit(
                "manager_fallback",
                round=t,
                agent="manager",
                duty="decide",
                error=str(exc),
                error_type=type(exc).__name__,
            )
            return None, False, acct.usage
        self._account("manager", acct)
        accepted = decision.halt and t >= s.min_rounds and bool(decision.final_answer.strip())
        why_not = ""
        if decision.halt and not accepted:
            why_not = (
                f"halt before min_rounds={s.min_rounds}"
                if t < s.min_rounds
                else "halt without a final answer"
            )
        self.trace.emit(
            "manager_decision",
            round=t,
            agent="manager",
            halt=decision.halt,
            accepted=accepted,
            rejected_because=why_not,
            reason=decision.reason,
            goal_next=decision.goal_next,
            final_answer=decision.final_answer,
            **acct.accounting(),
        )
        return decision, accepted, acct.usage

    async def _final_answer(self) -> str:
        acct = self._acct(len(self.result.rounds))
        latest = self.result.rounds[-1] if self.result.rounds else None
        work = [
            f"{st.agent}: {st.output.private}"
            for st in (latest.steps if latest else [])
            if st.output is not None
        ]
        if self.meter is not None:
            self.meter.final = True  # the reserve was kept for this request
        try:
            answer = await self.s.manager.final(self.task, self.transcript, work, acct)
        except Exception as exc:
            if not _manager_can_fall_back(exc):
                raise
            self.result.failures += 1
            answer = "\n".join(work) or "(no answer: every agent and the manager failed)"
            self.trace.emit(
                "manager_fallback",
                agent="manager",
                duty="final",
                error=str(exc),
                error_type=type(exc).__name__,
            )
        self._account("manager", acct)
        self.trace.emit("final_answer", agent="manager", final_answer=answer, **acct.accounting())
        return answer

    def _finish(self, error: str = "") -> None:
        r = self.result
        r.wall_s = round(time.monotonic() - self.started, 3)
        fields: dict[str, Any] = {}
        if error:
            fields["error"] = error
        self.trace.emit(
            "run_end",
            stats=dict(r.stats),
            final_answer=r.final_answer,
            halt_reason=r.halt_reason,
            rounds=len(r.rounds),
            unfinished_round=r.unfinished.round if r.unfinished else None,
            usage=r.usage,
            usage_by_agent=r.usage_by_agent,
            reasks=r.reasks,
            failures=r.failures,
            wall_s=r.wall_s,
            **fields,
        )


def build_swarm(
    topology: Topology,
    backend: Backend,
    embedder: Embedder,
    *,
    base_dir: Path | None = None,
    plan: BudgetPlan | None = None,
    trust_topology: bool = False,
) -> Swarm:
    """Instantiate a topology's agents and manager on one backend, within `plan`'s budgets."""

    def context(agent: str, explicit: int | None) -> int | None:
        return plan.budget(agent).context_budget if plan is not None else explicit

    # Tool modules are code: only from base_dir's tree or entry points unless trusted.
    registry = ToolRegistry.discover(topology.tool_modules, base_dir, trust_topology=trust_topology)
    tool_context = resolve_paths(topology.tool_settings, base_dir or Path.cwd())
    agents: list[Agent] = []
    for spec in topology.agents:
        card = load_card(spec.card or spec.id, base_dir, trust_topology=trust_topology)
        policy = ToolPolicy(
            choice=spec.tool_choice,
            max_rounds=spec.max_tool_rounds,
            reasks=topology.structured_reasks,
        )
        agents.append(
            LLMAgent(
                spec.id,
                card,
                backend,
                instructions=spec.instructions,
                max_output_tokens=spec.budget.max_output_tokens,
                context_budget=context(spec.id, spec.budget.context),
                sampling=spec.sampling,
                reasks=topology.structured_reasks,
                tools=registry.subset(spec.tools),
                tool_context=tool_context,
                tool_policy=policy,
            )
        )
    m = topology.manager
    manager = LLMManager(
        load_card(m.card, base_dir, trust_topology=trust_topology),
        backend,
        instructions=m.instructions,
        max_output_tokens=m.budget.max_output_tokens,
        context_budget=context("manager", m.budget.context),
        sampling=m.sampling,
        reasks=topology.structured_reasks,
    )
    return Swarm(
        agents,
        manager,
        embedder,
        routing=topology.routing,
        max_rounds=topology.max_rounds,
        min_rounds=topology.min_rounds,
        seed=topology.seed,
        agent_timeout_s=topology.agent_timeout_s,
        queue_timeout_s=topology.queue_timeout_s,
        on_agent_error=topology.on_agent_error,
        name=topology.name,
        run_token_budget=topology.run_token_budget,
        config={
            **topology.model_dump(mode="json"),
            "budget_plan": plan.model_dump() if plan is not None else None,
        },
    )


def resolve_paths(settings: ToolContext, base: Path) -> ToolContext:
    """Tool folders in a topology are relative to the topology file."""
    docs = settings.docs_dir
    return settings.model_copy(
        update={
            "workspace": (base / settings.workspace).resolve(),
            "docs_dir": (base / docs).resolve() if docs is not None else None,
        }
    )
