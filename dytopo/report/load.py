"""A trace's events folded into a `RunView`: one round view per round number, the later copy of
a round a resumed run repeated winning (as in the run's result), run totals from `run_end` or,
when the run did not end, added up from what the rounds recorded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from dytopo import runlock
from dytopo.backends.types import Usage
from dytopo.report.read import read_events
from dytopo.report.views import (
    AgentView,
    AttemptView,
    DecisionView,
    DeliveryView,
    FallbackView,
    ResumeView,
    RoundView,
    RoutingView,
    RunView,
    ToolCallView,
)

M = TypeVar("M", bound=BaseModel)
MANAGER = "manager"


def load_run(path: str | Path) -> RunView:
    """The run a trace file records; ConfigError when the file is not a trace."""
    path = Path(path)
    lines = read_events(path)
    fold = _Fold(RunView(source=path.name))
    for event in lines.events:
        fold.feed(event)
    run = fold.finish(running=lambda: runlock.in_use(path))
    if lines.torn:
        run.torn = True
        run.notices.append("The last line of the trace is cut short; it was left out.")
    if lines.skipped:
        run.notices.append(f"{lines.skipped} unreadable line(s) in the trace were left out.")
    return run


class _Fold:
    def __init__(self, run: RunView) -> None:
        self.run = run
        self.rounds: dict[int, RoundView] = {}
        self.open = False
        """A run_start or run_resumed came after the last run_end."""
        self.run_ids: set[str] = set()
        self.not_understood = 0
        self.last_ts: float | None = None
        self.manager_usage = Usage()
        self.handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "run_start": self.run_start,
            "run_resumed": self.run_resumed,
            "manager_goal": self.manager_goal,
            "round_start": self.round_start,
            "ladder": self.ladder,
            "tool_call": self.tool_call,
            "agent_output": self.agent_output,
            "routing": self.routing,
            "delivery": self.delivery,
            "manager_decision": self.manager_decision,
            "manager_fallback": self.manager_fallback,
            "round_end": self.round_end,
            "budget_stop": self.budget_stop,
            "final_answer": self.final_answer,
            "run_end": self.run_end,
        }

    def feed(self, event: dict[str, Any]) -> None:
        handler = self.handlers.get(event["event"])
        if isinstance(event.get("run_id"), str):
            self.run_ids.add(event["run_id"])
        if isinstance(event.get("ts"), int | float):
            self.last_ts = float(event["ts"])
        if handler is None:
            return  # an event a newer writer added: the report shows what it knows
        try:
            handler(event)
        except (ValidationError, TypeError, ValueError, KeyError):
            self.not_understood += 1

    # -- run ------------------------------------------------------------------------------

    def run_start(self, e: dict[str, Any]) -> None:
        run = self.run
        if run.run_id:
            return  # a second start in the same file: the first one names the run
        self.open = True
        run.run_id = _text(e.get("run_id"))
        run.name = _text(e.get("name"))
        run.task = _text(e.get("task"))
        run.mode = _text(e.get("mode"))
        run.execution = _text(e.get("execution"))
        run.embedder = _text(e.get("embedder"))
        run.tau = _number(e.get("tau"))
        run.seed = _integer(e.get("seed"))
        run.max_rounds = _integer(e.get("max_rounds"))
        run.min_rounds = _integer(e.get("min_rounds"))
        run.started_ts = _number(e.get("ts"))
        agents = e.get("agents")
        if isinstance(agents, list):
            self.see(*(str(a) for a in agents))

    def run_resumed(self, e: dict[str, Any]) -> None:
        self.open = True
        self.run.resumes.append(ResumeView.model_validate(e))

    def run_end(self, e: dict[str, Any]) -> None:
        self.open = False
        run = self.run
        run.halt_reason = _text(e.get("halt_reason"))
        run.final_answer = _text(e.get("final_answer")) or run.final_answer
        run.error = _text(e.get("error"))
        run.unfinished_round = _integer(e.get("unfinished_round"))
        run.failures = _integer(e.get("failures"))
        run.wall_s = _number(e.get("wall_s"))
        if isinstance(e.get("usage"), dict):
            run.usage = Usage.model_validate(e["usage"])
        by_agent = e.get("usage_by_agent")
        if isinstance(by_agent, dict):
            run.usage_by_agent = {
                str(k): Usage.model_validate(v) for k, v in by_agent.items() if isinstance(v, dict)
            }

    def budget_stop(self, e: dict[str, Any]) -> None:
        self.run.budget_stops.append({k: v for k, v in e.items() if k not in ("event", "run_id")})

    def final_answer(self, e: dict[str, Any]) -> None:
        self.run.final_answer = _text(e.get("final_answer"))
        self.manager_usage += _usage(e)

    # -- manager --------------------------------------------------------------------------

    def manager_goal(self, e: dict[str, Any]) -> None:
        self.run.opening_goal = _text(e.get("goal"))
        self.manager_usage += _usage(e)

    def manager_decision(self, e: dict[str, Any]) -> None:
        self.round(e).decision = DecisionView.model_validate(e)

    def manager_fallback(self, e: dict[str, Any]) -> None:
        fallback = FallbackView.model_validate(e)
        if e.get("round") is None or e.get("duty") in ("open", "final"):
            self.run.fallbacks.append(fallback)
        else:
            self.round(e).fallbacks.append(fallback)

    # -- rounds ---------------------------------------------------------------------------

    def round_start(self, e: dict[str, Any]) -> None:
        number = _integer(e.get("round"))
        if number is None:
            raise ValueError("round_start without a round")
        earlier = number in self.rounds
        self.rounds[number] = RoundView(number=number, goal=_text(e.get("goal")))
        self.rounds[number].repeated = earlier

    def round(self, e: dict[str, Any]) -> RoundView:
        """The round an event belongs to (made up when its round_start is missing)."""
        number = _integer(e.get("round"))
        if number is None:
            raise ValueError("event without a round")
        if number not in self.rounds:
            self.rounds[number] = RoundView(number=number)
        return self.rounds[number]

    def agent(self, e: dict[str, Any]) -> AgentView:
        rnd, who = self.round(e), str(e.get("agent", "?"))
        view = rnd.agent(who)
        if view is None:
            view = AgentView(agent=who)
            rnd.agents.append(view)
            self.see(who)
        return view

    def ladder(self, e: dict[str, Any]) -> None:
        attempt = AttemptView.model_validate(e)
        if e.get("agent") != MANAGER:
            self.agent(e).attempts.append(attempt)
        elif _integer(e.get("round")) in self.rounds and not self.round(e).complete:
            self.round(e).manager_attempts.append(attempt)  # the round's decision
        else:
            self.run.manager_attempts.append(attempt)  # opening goal or final answer

    def tool_call(self, e: dict[str, Any]) -> None:
        self.agent(e).tool_calls.append(ToolCallView.model_validate(e))

    def agent_output(self, e: dict[str, Any]) -> None:
        view = self.agent(e)
        fields = {k: v for k, v in e.items() if k not in ("tool_calls", "attempts", "agent")}
        update = AgentView.model_validate({"agent": view.agent, **fields})
        keep = {"tool_calls": view.tool_calls, "attempts": view.attempts, "finished": True}
        rnd = self.round(e)
        rnd.agents[rnd.agents.index(view)] = update.model_copy(update=keep)

    def routing(self, e: dict[str, Any]) -> None:
        routing = RoutingView.model_validate(e)
        self.round(e).routing = routing
        self.see(*routing.agents)

    def delivery(self, e: dict[str, Any]) -> None:
        self.round(e).deliveries.append(DeliveryView.model_validate(e))

    def round_end(self, e: dict[str, Any]) -> None:
        rnd = self.round(e)
        rnd.complete = True
        rnd.usage = _usage(e) if isinstance(e.get("usage"), dict) else _round_usage(rnd)
        rnd.wall_s = _number(e.get("wall_s"))
        failed = e.get("failed")
        rnd.failed = [str(a) for a in failed] if isinstance(failed, list) else []

    # -- end ------------------------------------------------------------------------------

    def see(self, *agents: str) -> None:
        for agent in agents:
            if agent not in self.run.agents and agent != MANAGER:
                self.run.agents.append(agent)

    def finish(self, running: Callable[[], bool]) -> RunView:
        run = self.run
        run.rounds = [self.rounds[n] for n in sorted(self.rounds)]
        place = {a: k for k, a in enumerate(run.agents)}
        for rnd in run.rounds:
            # Steps reach the trace as they finish; the report lists them in the run's order.
            rnd.agents.sort(key=lambda a: place.get(a.agent, len(place)))
            if not rnd.complete:
                rnd.usage = _round_usage(rnd)
        run.ended = not self.open and bool(run.run_id or run.resumes)
        if not run.ended:
            self.totals_so_far()
        elif not run.usage_by_agent:  # an older run_end: add them up from the steps
            run.usage_by_agent = self.usage_by_agent()
        run.notices[:0] = self.partial_notices(running)
        return run

    def totals_so_far(self) -> None:
        """Totals a run without run_end never wrote: what its rounds and manager recorded."""
        run = self.run
        run.usage_by_agent = self.usage_by_agent()
        run.usage = sum(run.usage_by_agent.values(), Usage())
        if run.started_ts is not None and self.last_ts is not None:
            run.wall_s = round(self.last_ts - run.started_ts, 3)

    def usage_by_agent(self) -> dict[str, Usage]:
        by_agent: dict[str, Usage] = {}
        manager = self.manager_usage
        for rnd in self.run.rounds:
            for agent in rnd.agents:
                by_agent[agent.agent] = by_agent.get(agent.agent, Usage()) + agent.usage
            if rnd.decision is not None:
                manager += rnd.decision.usage
        if manager.requests:
            by_agent[MANAGER] = manager
        return by_agent

    def partial_notices(self, running: Callable[[], bool]) -> list[str]:
        run, notes = self.run, []
        if not run.ended:
            last = f" after round {run.rounds[-1].number}" if run.rounds else ""
            why = (
                "a process is still writing it: this is the run so far"
                if running()
                else "no process writes it any more: the run crashed or was killed"
            )
            notes.append(
                f"Partial trace: it stops{last} without a run_end; {why}. "
                "The totals are what the trace holds."
            )
        if not run.run_id and not run.resumes:
            notes.append("The trace has no run_start: the run's settings are unknown.")
        if len(self.run_ids) > 1:
            notes.append(f"The file holds events of {len(self.run_ids)} run ids.")
        if self.not_understood:
            notes.append(f"{self.not_understood} event(s) with unexpected fields were left out.")
        return notes


def _round_usage(rnd: RoundView) -> Usage:
    usage = sum((a.usage for a in rnd.agents), Usage())
    return usage + rnd.decision.usage if rnd.decision else usage


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _usage(e: dict[str, Any]) -> Usage:
    value = e.get("usage")
    return Usage.model_validate(value) if isinstance(value, dict) else Usage()


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
