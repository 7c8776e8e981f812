"""The manager's three duties (open, decide, final), each through one helper with one fallback
path and one accounting path.

A duty that fails the way a retry or a smaller request could not fix (a malformed reply after
the whole ladder, the token cap, an HTTP error, a context overflow) gets a fallback and counts
as a failure; a server that stays down ends the run, since every later call would fail too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from dytopo.activity import reporting
from dytopo.agents.answer import AnswerSpec, Work, resolve
from dytopo.agents.base import StepContext
from dytopo.agents.manager import FinalAnswer, Manager, ManagerDecision, PublicMessage
from dytopo.backends.meter import run_meter
from dytopo.backends.types import Usage
from dytopo.errors import AgentFailed, BackendError, BackendUnavailable, BudgetExceeded
from dytopo.swarm.recorder import Recorder

T = TypeVar("T")
Duty = Literal["open", "decide", "final"]
_DOING: dict[Duty, str] = {"open": "first goal", "decide": "deciding", "final": "final answer"}


def fallback_goal(task: str) -> str:
    return f"Make concrete progress on the task: {task[:300]}"


def can_fall_back(exc: Exception) -> bool:
    """A manager duty that failed this way gets a fallback; a dead server ends the run."""
    if isinstance(exc, BackendUnavailable):
        return False
    return isinstance(exc, AgentFailed | BudgetExceeded | BackendError)


@dataclass
class Verdict:
    """The manager's decision after a round (None: it failed and the fallback applied)."""

    decision: ManagerDecision | None = None
    accepted: bool = False
    """Whether its halt ends the run (min_rounds reached, a final answer given)."""
    usage: Usage = field(default_factory=Usage)


@dataclass
class ManagerCalls:
    """One run's calls to its manager."""

    manager: Manager
    recorder: Recorder
    max_rounds: int
    min_rounds: int
    answer: AnswerSpec = field(default_factory=AnswerSpec)

    async def open(self) -> str:
        """The first round's goal (fallback: work on the task)."""
        task = self.recorder.task
        goal, acct, _ = await self._call(
            "open", 1, 1, lambda acct: self.manager.open(task, acct), lambda: fallback_goal(task)
        )
        self.recorder.trace.emit(
            "manager_goal", round=1, agent="manager", goal=goal, **acct.accounting()
        )
        return goal

    async def decide(
        self,
        round: int,
        transcript: Sequence[PublicMessage],
        work: dict[str, Work],
        check_failed: bool = False,
    ) -> Verdict:
        """Next goal and halt (fallback: no decision, the run goes on with the same goal). A
        halt's answer is resolved here: the named agent's latest work, verbatim."""
        task, t, shown = self.recorder.task, round, list(work.values())
        decision, acct, failed = await self._call(
            "decide",
            t,
            t,
            lambda acct: self.manager.decide(task, t, self.max_rounds, transcript, shown, acct),
            lambda: None,
        )
        if failed or decision is None:
            return Verdict(usage=acct.usage)
        source = ""
        if decision.halt:
            text, source = resolve(self.answer, decision.answer_from, decision.final_answer, work)
            decision = decision.model_copy(update={"final_answer": text})
        answered = bool(decision.final_answer.strip())
        accepted = decision.halt and t >= self.min_rounds and answered and not check_failed
        why_not = ""
        if decision.halt and not accepted:
            if t < self.min_rounds:
                why_not = f"halt before min_rounds={self.min_rounds}"
            elif not answered:
                why_not = "halt without a final answer"
            else:  # the answer was checked, and it failed: nothing is verifiably done
                why_not = "the answer's check failed"
        self.recorder.trace.emit(
            "manager_decision",
            round=t,
            agent="manager",
            halt=decision.halt,
            accepted=accepted,
            rejected_because=why_not,
            reason=decision.reason,
            goal_next=decision.goal_next,
            answer_from=decision.answer_from,
            answer_source=source,
            final_answer=decision.final_answer,
            **acct.accounting(),
        )
        return Verdict(decision, accepted, acct.usage)

    async def final(self, transcript: Sequence[PublicMessage], work: dict[str, Work]) -> str:
        """The final answer when the run stops without a halt: the topology's agent's latest
        work when it has one (no manager request), else the manager's choice (fallback: the
        agents' latest work)."""
        task, shown = self.recorder.task, list(work.values())
        rounds = max((w.round for w in shown), default=0)
        if self.answer.source is not None and self.answer.source in work:
            answer, source = resolve(self.answer, "", "", work)
            self.recorder.trace.emit(
                "final_answer", agent="manager", final_answer=answer, answer_source=source
            )
            return answer
        meter = run_meter.get()
        if meter is not None:
            meter.final = True  # the reserve was kept for this request
        fallback = "\n\n".join(w.render() for w in shown)
        reply, acct, failed = await self._call(
            "final",
            rounds,
            None,
            lambda acct: self.manager.final(task, transcript, shown, acct),
            # Not validated: the agents' work together may pass the manager's length cap.
            lambda: FinalAnswer.model_construct(
                answer_from="",
                final_answer=fallback or "(no answer: every agent and the manager failed)",
            ),
        )
        answer, source = resolve(self.answer, reply.answer_from, reply.final_answer, work)
        if failed:
            source = "fallback"
        if not answer:
            answer, source = fallback or "(no answer: the manager gave none)", "fallback"
        self.recorder.trace.emit(
            "final_answer",
            agent="manager",
            final_answer=answer,
            answer_source=source,
            **acct.accounting(),
        )
        return answer

    async def _call(
        self,
        duty: Duty,
        round: int,
        trace_round: int | None,
        call: Callable[[StepContext], Awaitable[T]],
        fallback: Callable[[], T],
    ) -> tuple[T, StepContext, bool]:
        """Run one duty: its value, its accounting, and whether the fallback replaced it."""
        acct = self.recorder.context(round, "manager")
        live = self.recorder.activity(round, "manager", _DOING[duty])
        try:
            with reporting(live), acct.counting():
                value = await call(acct)
            live("done", "")
            return value, acct, False
        except Exception as exc:
            if not can_fall_back(exc):
                raise
            value = fallback()
            self.recorder.failed()
            shown: dict[str, Any] = {"goal": value} if duty == "open" else {}
            self.recorder.trace.emit(
                "manager_fallback",
                round=trace_round,
                agent="manager",
                duty=duty,
                error=str(exc),
                error_type=type(exc).__name__,
                **shown,
            )
            return value, acct, True
        finally:
            self.recorder.charge("manager", acct)
