"""The swarm and its round loop, as ALGORITHM.md tells it.

Each job of a run lives in its own module: the state a run continues from (state.py), the
agent steps (steps.py), the manager's duties (manager_calls.py), delivery (delivery.py),
routing (dytopo/routing/router.py), costs and events (recorder.py).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import structlog

from dytopo.agents.answer import AnswerSpec, Work, has_code, latest_work
from dytopo.agents.base import Agent, AgentOutput
from dytopo.agents.manager import Manager, TeamMember
from dytopo.agents.memory import MemoryItem
from dytopo.backends.meter import TokenMeter, run_meter
from dytopo.budget.guard import budget_stop
from dytopo.embedders.base import Embedder
from dytopo.errors import AgentAborted, DyTopoError, RoundFailed, RunError
from dytopo.routing.config import RoutingConfig
from dytopo.routing.router import Routing, route
from dytopo.swarm.check import TASK, Check, run_check
from dytopo.swarm.checkpoint import (
    Checkpoint,
    Checkpointer,
    Status,
    TopologyOrigin,
    check_resumable,
    checkpoint_path,
    find_checkpoint,
    read_checkpoint,
    resume_command,
)
from dytopo.swarm.delivery import deliver
from dytopo.swarm.manager_calls import ManagerCalls, Verdict
from dytopo.swarm.recorder import Recorder
from dytopo.swarm.result import AgentStep, HaltReason, RoundRecord, RunResult, UnfinishedRound
from dytopo.swarm.state import MeterState, RunState, StatefulManager, dump_rng, load_rng
from dytopo.swarm.steps import Scheduler
from dytopo.swarm.trace import Observer, Trace
from dytopo.versions import versions

log = structlog.get_logger("dytopo.swarm")


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
        answer: AnswerSpec | None = None,
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
        self.answer = answer or AnswerSpec()
        """What the final answer is made of (an agent's latest work, or the manager's choice)."""
        for key, agent in (("from", self.answer.source), ("tests_from", self.answer.tests_from)):
            if agent is not None and agent not in [*ids, TASK]:
                raise ValueError(f"answer.{key} {agent!r} is not an agent id ({ids})")
        manager.join([TeamMember(id=a.id, does=a.does) for a in self.agents], self.answer)
        self.origin: TopologyOrigin | None = None
        """The topology file this swarm was built from (checkpoints name it, for resume)."""

    async def run(
        self,
        task: str,
        *,
        trace_path: str | Path | None = None,
        observers: Sequence[Observer] = (),
    ) -> RunResult:
        """Run the swarm on `task`. Raises RunError (with `.partial`) only when it cannot go on.

        With a `trace_path`, a checkpoint beside it after every round lets `resume` continue
        the run if it stops."""
        state = RunState.begin(uuid.uuid4().hex[:12], task, [a.id for a in self.agents], self.seed)
        trace = Trace(state.run_id, Path(trace_path) if trace_path else None)
        trace.observers.extend(observers)
        trace.emit(
            "run_start",
            name=self.name,
            task=task,
            seed=self.seed,
            config=self.config,
            versions=versions(),
            agents=state.agents,
            mode=self.routing.mode,
            execution=self.routing.execution,
            tau=self.routing.tau,
            max_rounds=self.max_rounds,
            min_rounds=self.min_rounds,
            embedder=self.embedder.name,
        )
        saver = self._checkpointer(state, trace.path)
        if saver is not None:
            saver.save(state)
        return await RoundLoop(self, state, trace, saver).execute()

    async def resume(
        self,
        checkpoint: Checkpoint | str | Path,
        *,
        trace_path: str | Path | None = None,
        observers: Sequence[Observer] = (),
        forced: bool = False,
    ) -> RunResult:
        """Continue a run from its checkpoint (or a run id, trace or checkpoint path): the
        rounds it completed are not run again, and its trace goes on in the same file.

        The swarm must be the one the run was built from (`dytopo.resume` rebuilds it from the
        topology file and checks that the file did not change)."""
        cp = checkpoint
        if not isinstance(cp, Checkpoint):
            cp = read_checkpoint(find_checkpoint(cp))
        check_resumable(cp, [a.id for a in self.agents])
        state = cp.state.model_copy(deep=True)
        path = trace_path or cp.trace_path
        trace = Trace(state.run_id, Path(path) if path else None)
        trace.observers.extend(observers)
        saver = self._checkpointer(state, trace.path, started_at=cp.started_at)
        trace.emit(
            "run_resumed",
            from_round=state.round + 1,
            completed_rounds=state.round,
            checkpoint=str(saver.path) if saver else None,
            status=cp.status,
            forced=forced,
            versions=versions(),
        )
        if isinstance(self.manager, StatefulManager):
            self.manager.load_state(state.manager)
        return await RoundLoop(self, state, trace, saver).execute()

    def _checkpointer(
        self, state: RunState, trace_path: Path | None, started_at: float | None = None
    ) -> Checkpointer | None:
        if trace_path is None:
            return None  # a checkpoint lives beside its trace
        return Checkpointer(
            checkpoint_path(trace_path),
            state,
            origin=self.origin,
            trace_path=trace_path,
            started_at=started_at,
        )

    def _meter(self, saved: MeterState | None) -> TokenMeter | None:
        cap = self.run_token_budget
        if cap is None:
            return None
        meter = TokenMeter(cap=cap, reserve=min(self.final_answer_reserve, cap // 2))
        if saved is not None:
            meter.used, meter.refused = saved.used, saved.refused
        return meter


class RoundLoop:
    """One run of a swarm from its state: open, rounds until a halt or max_rounds, final answer.

    Every job is delegated; what stays here is the order of ALGORITHM.md and what to keep when
    the run stops part-way."""

    def __init__(
        self, swarm: Swarm, state: RunState, trace: Trace, saver: Checkpointer | None = None
    ) -> None:
        self.swarm, self.state, self.trace, self.saver = swarm, state, trace, saver
        self.recorder = Recorder(trace, state.ledger, state.task)
        self.calls = ManagerCalls(
            swarm.manager, self.recorder, swarm.max_rounds, swarm.min_rounds, swarm.answer
        )
        self.scheduler = Scheduler(
            self.recorder,
            swarm.agent_timeout_s,
            swarm.queue_timeout_s,
            swarm.on_agent_error,
            on_step=self._keep_step,
            settle=self._settles,
        )
        self.rng = load_rng(state.rng)
        self.meter = swarm._meter(state.meter)
        self.started, self.earlier_s = time.monotonic(), state.wall_s
        self.halt: tuple[HaltReason, str] = ("error", "")
        self.unfinished: UnfinishedRound | None = None
        """The round in progress (kept in the result if the run stops during it)."""
        self.unfinished_traced = False
        """Whether its agent_output events are in the trace."""
        self.ended = False
        """Whether the run completed and its end was handed to the checkpoint writer."""
        self.early: Check | None = None
        """This round's check that passed on work handed in before the round was over."""

    async def execute(self) -> RunResult:
        meter_token = run_meter.set(self.meter)
        try:
            await self._rounds()
            result = self._end()
            self._checkpoint("complete")
            self.ended = True
            await self._written()
            return result
        except Exception as exc:
            error = _leaf(exc)
            partial = self._stopped(f"{type(error).__name__}: {error}")
            self._checkpoint("failed")
            await self._written()
            # A failed step's own error (the server went away) is the cause to act on.
            cause = error.__cause__ if isinstance(error, AgentAborted | RoundFailed) else error
            raise self._run_error(error, partial) from cause
        except BaseException:  # cancelled, Ctrl-C: stop at once, keep the last complete round
            if not self.ended:  # else only the wait for the last write was cut short
                self._stopped("interrupted")
                self._checkpoint("interrupted")
            if self.saver is not None:
                self.saver.wait()  # a cancelled task cannot count on its next await
            raise
        finally:
            run_meter.reset(meter_token)
            if self.saver is not None:
                self.saver.close()
            self.trace.close()

    async def _rounds(self) -> None:
        # self.state is replaced by each delivery: never hold on to an old one.
        swarm = self.swarm
        if self.state.goal is None:
            self.state.goal = await self.calls.open()
            self._checkpoint()
        if (halted := self.state.halted) is not None and halted.decision is not None:
            self.halt = ("manager", halted.decision.final_answer)
            return
        for t in range(self.state.round + 1, swarm.max_rounds + 1):
            if self._over_budget(t):
                self.halt = ("budget", await self._final_answer())
                return
            record = await self._round(t, self.state.goal)
            if record.check is not None and record.check.passed and self._halts_on(t):
                self.halt = ("checked", record.check.answer)
                self.trace.emit(
                    "final_answer", final_answer=record.check.answer, answer_source="check"
                )
                return
            if record.halt_accepted and record.decision is not None:
                self.halt = ("manager", record.decision.final_answer)
                return
        stopped = self._over_budget(swarm.max_rounds, ahead=False)
        self.halt = ("budget" if stopped else "max_rounds", await self._final_answer())

    async def _round(self, t: int, goal: str) -> RoundRecord:
        """Agent steps, matching and graph, delivery in sigma order, the manager's decision."""
        started, tokens_before = time.monotonic(), self.state.ledger.tokens
        self.trace.emit("round_start", round=t, goal=goal)
        self.unfinished, self.unfinished_traced = UnfinishedRound(round=t, goal=goal), False
        self.early = None
        steps, same_round = await self._steps(t, goal)
        self._trace_steps(t, steps)
        self.unfinished_traced = True
        self._none_failed_all(t, steps)
        outputs = {st.agent: st.output for st in steps if st.ok and st.output is not None}
        # A settled round ends the run: nothing is delivered, so nothing is embedded.
        routing = await self._route(t, {} if self.early is not None else outputs)
        self.state, deliveries = deliver(self.state, t, routing, outputs, same_round)
        for d in deliveries:
            fields = {"from": d.source, "to": d.target}
            self.trace.emit("delivery", round=t, score=d.score, phase=d.phase, **fields)
        self.unfinished.routing, self.unfinished.deliveries = routing, deliveries
        work = self._work((t, steps))
        check = await self._check(t, work, self.early)
        if check is not None and check.passed and self._halts_on(t):
            verdict = Verdict()  # verified: no decision to pay for
        else:
            shown = work if check is None else {**work, "check": _check_work(check, self.swarm)}
            verdict = await self._decide(t, shown, check is not None and not check.passed)
        record = RoundRecord(
            round=t,
            goal=goal,
            steps=steps,
            routing=routing,
            deliveries=deliveries,
            decision=verdict.decision,
            halt_accepted=verdict.accepted,
            check=check,
            usage=sum((st.usage for st in steps), verdict.usage),
            wall_s=round(time.monotonic() - started, 3),
        )
        self.trace.emit(
            "round_end",
            round=t,
            edges=len(routing.edges),
            usage=record.usage,
            failed=[st.agent for st in steps if not st.ok and not st.skipped],
            skipped=[st.agent for st in steps if st.skipped],
            wall_s=record.wall_s,
        )
        self._complete(record, self.state.ledger.tokens - tokens_before)
        return record

    async def _steps(
        self, t: int, goal: str
    ) -> tuple[list[AgentStep], dict[str, list[MemoryItem]]]:
        """Every active agent steps once: all at once, or in tiers of last round's graph."""
        swarm, memory = self.swarm, self.state.memory
        active = swarm.agents[:1] if swarm.routing.mode == "single" else swarm.agents
        history = self.state.routing_history
        self.scheduler.own_work = self._work()
        spec = swarm.answer
        last = self.state.rounds[-1].check if self.state.rounds else None
        self.scheduler.failed_checks = (
            {last.source: last.render(spec)}
            if last is not None and not last.passed and last.source
            else {}
        )
        self.scheduler.lead = spec.source if spec.tests_from and self._halts_on(t) else None
        if swarm.routing.execution == "tiered" and history:
            return await self.scheduler.tiered(t, goal, active, memory, history[-1].edges)
        return await self.scheduler.barrier(t, goal, active, memory), {}

    def _none_failed_all(self, t: int, steps: Sequence[AgentStep]) -> None:
        """A round in which every step failed is the run's failure, not a round to decide on
        (the manager would halt on nothing and the run would look like a success). The token
        cap refusing them is not: the run then halts on its budget."""
        if not steps or any(st.ok or st.skipped for st in steps):
            return
        if self.meter is not None and self.meter.refused:
            return
        first = steps[0]
        raise RoundFailed(
            f"round {t}: every agent step failed ({len(steps)} of {len(steps)}; first, "
            f"{first.agent}: {first.error})"
        ) from self.scheduler.errors.get(first.agent)

    async def _route(self, t: int, outputs: dict[str, AgentOutput]) -> Routing:
        """Embed needs and offers, induce the graph and sigma (ALGORITHM.md steps 3-4)."""
        swarm, ids = self.swarm, list(outputs)
        queries, keys = [outputs[i].query for i in ids], [outputs[i].key for i in ids]
        routing = await route(ids, queries, keys, swarm.embedder, swarm.routing, rng=self.rng)
        if self.trace.has_readers:
            self.trace.emit("routing", round=t, **routing.model_dump())
        if routing.hub is not None and swarm.routing.hub not in (None, routing.hub):
            log.warning(
                "star.hub_replaced", round=t, hub=swarm.routing.hub, replaced_by=routing.hub
            )
        return routing

    async def _decide(self, t: int, work: dict[str, Work], check_failed: bool = False) -> Verdict:
        if self.meter is not None and self.meter.refused:
            # The cap already refused a request: the run halts now, and the final answer is
            # what the remaining tokens are for.
            return Verdict()
        return await self.calls.decide(t, self.state.transcript, work, check_failed)

    async def _final_answer(self) -> str:
        passed = [r.check for r in self.state.rounds if r.check is not None and r.check.passed]
        if passed:  # the latest checked answer beats a later unchecked one
            self.trace.emit("final_answer", final_answer=passed[-1].answer, answer_source="check")
            return passed[-1].answer
        return await self.calls.final(self.state.transcript, self._work())

    def _halts_on(self, t: int) -> bool:
        return self.swarm.answer.halt_on_pass and t >= self.swarm.min_rounds

    async def _settles(self, t: int, agent: str, text: str) -> str:
        """Why round t is settled by `agent` handing in `text` ("" if it is not): the answer's
        check passed on it, and a pass ends the run. The teammates still working are then
        cancelled: whatever they would add cannot change a verified answer."""
        spec = self.swarm.answer
        if not self._halts_on(t) or spec.tests_from is None:
            return ""
        steps = self.unfinished.steps if self.unfinished is not None else []
        work = self._work((t, steps))
        if has_code(text) or (agent == spec.tests_from and agent not in work):
            work[agent] = Work(agent=agent, round=t, text=text)
        elif agent != spec.tests_from:
            return ""  # no code handed in: nothing new to check
        check = await run_check(spec, work, t, self.state.task)
        if check is None or not check.passed:
            return ""  # checked again with the whole round's work at its end
        self.early = check
        return f"{check.source}'s round {check.answer_round} code passed the answer's check"

    async def _check(self, t: int, work: dict[str, Work], early: Check | None) -> Check | None:
        """Run the answer's check (unless one passed during the round); a failure reaches the
        author and the tester as a message."""
        spec = self.swarm.answer
        check = early or await run_check(spec, work, t, self.state.task)
        if check is None:
            return None
        self.trace.emit("check", **check.model_dump(exclude={"answer"}))
        if not check.passed:
            note = MemoryItem(round=t, kind="private", source="check", text=check.render(spec))
            for agent in self.state.memory:
                if agent in (spec.source, spec.tests_from):
                    self.state.memory[agent].append(note)
        return check

    def _work(self, current: tuple[int, Sequence[AgentStep]] | None = None) -> dict[str, Work]:
        """Each agent's latest work product, over the complete rounds and `current` steps."""
        done = [(r.round, r.steps) for r in self.state.rounds]
        return latest_work([*done, current] if current is not None else done, self.swarm.answer)

    def _complete(self, record: RoundRecord, tokens: int) -> None:
        """Round t is done: it joins the state, which now holds everything to continue from."""
        state = self.state
        state.rounds.append(record)
        state.round = record.round
        if record.decision is not None and record.decision.goal_next.strip():
            state.goal = record.decision.goal_next
        state.last_round_tokens = tokens
        state.rng = dump_rng(self.rng)
        if self.meter is not None:
            state.meter = MeterState(used=self.meter.used, refused=self.meter.refused)
        if isinstance(self.swarm.manager, StatefulManager):
            state.manager = self.swarm.manager.dump_state()
        self.unfinished = None
        self._checkpoint()

    def _checkpoint(self, status: Status = "running") -> None:
        """Save the state a resume continues from; at the end, record how the run ended (a
        failed or interrupted run keeps its last complete round's state)."""
        if self.saver is None:
            return
        self.state.wall_s = self._wall_s()
        if status == "running":
            self.saver.save(self.state)
        elif status == "complete":
            self.saver.finish(status, self.state)
        else:
            self.saver.finish(status, spent=self.meter.used if self.meter is not None else None)

    async def _written(self) -> None:
        """The run's last status is on disk (the writer works while the rounds go on)."""
        if self.saver is not None:
            await self.saver.drain()

    def _over_budget(self, t: int, *, ahead: bool = True) -> bool:
        state = self.state
        stop = budget_stop(
            self.meter, state.ledger.tokens, state.last_round_tokens, round=t, ahead=ahead
        )
        if stop is not None:
            self.trace.emit("budget_stop", **stop)
        return stop is not None

    def _keep_step(self, step: AgentStep) -> None:
        if self.unfinished is not None:
            self.unfinished.steps.append(step)

    def _stopped(self, error: str) -> RunResult:
        """End a run that cannot go on: the round in progress, with its finished agent steps,
        goes into the result and the trace."""
        self.halt = ("error", self.halt[1])
        current = self.unfinished
        if current is not None:
            position = {a.id: k for k, a in enumerate(self.swarm.agents)}
            current.steps.sort(key=lambda st: position[st.agent])
            if not self.unfinished_traced:
                self._trace_steps(current.round, current.steps)
        return self._end(error)

    def _trace_steps(self, t: int, steps: Sequence[AgentStep]) -> None:
        if not self.trace.has_readers:
            return
        for step in steps:
            self.trace.emit(
                "agent_output",
                round=t,
                **step.model_dump(exclude={"output"}),
                **(step.output.model_dump() if step.output else {}),
            )

    def _result(self) -> RunResult:
        reason, answer = self.halt
        trace = str(self.trace.path) if self.trace.path else None
        unfinished, wall_s = self.unfinished, self._wall_s()
        return self.state.result(
            reason, answer, unfinished=unfinished, wall_s=wall_s, trace_path=trace
        )

    def _wall_s(self) -> float:
        return round(self.earlier_s + time.monotonic() - self.started, 3)

    def _end(self, error: str = "") -> RunResult:
        """The run's result, also written as the trace's run_end."""
        r = self._result()
        fields: dict[str, Any] = {"error": error} if error else {}
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
        return r

    def _run_error(self, error: BaseException, partial: RunResult) -> RunError:
        """One line: where the run stopped, why, what was kept, where the trace is."""
        what = str(error) if isinstance(error, DyTopoError) else f"{type(error).__name__}: {error}"
        kept = ""
        if (u := self.unfinished) is not None:
            kept = (
                f"; round {u.round} stopped with {len(u.steps)} agent step(s) finished "
                "(kept in .partial.unfinished)"
            )
        where = f" (trace: {self.trace.path})" if self.trace.path else ""
        again = ""
        if self.saver is not None and self.saver.written and self.trace.path is not None:
            again = f"; continue it with: {resume_command(self.state.run_id, self.trace.path)}"
        return RunError(
            f"run {self.state.run_id} stopped after {len(self.state.rounds)} complete round(s): "
            f"{what}{kept}{where}{again}",
            partial=partial,
        )


def _check_work(check: Check, swarm: Swarm) -> Work:
    """The check's result as the manager sees it, beside the agents' work."""
    return Work(agent="check", round=check.round, text=check.render(swarm.answer))


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
