"""A trace's events folded into a `RunView`: one round view per round number, the later copy of
a round a resumed run repeated winning (as in the run's result), run totals from `run_end` or,
when the run did not end, added up from what the rounds recorded."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from dytopo.backends.types import Usage
from dytopo.report import limits
from dytopo.report.limits import MAX_AGENTS, MAX_DELIVERIES, MAX_EDGES, MAX_ITEMS, MAX_ROUNDS
from dytopo.report.read import read_events
from dytopo.report.views import (
    AgentView,
    AttemptView,
    DecisionView,
    DeliveryView,
    FallbackView,
    MoreRounds,
    ResumeView,
    RoundView,
    RoutingView,
    RunView,
    ToolCallView,
)
from dytopo.swarm import runlock

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
MANAGER = "manager"
MAX_RUN_IDS = 100


def load_run(path: str | Path) -> RunView:
    """The run a trace file records; ConfigError when the file is not a trace.

    The file is read a line at a time and what is kept is bounded (`dytopo.report.limits`):
    texts are cut with a note, rounds and agents past the limits count in the totals only.
    """
    path = Path(path)
    lines = read_events(path)
    clip = limits.Clipper(path.name)
    fold = _Fold(RunView(source=path.name))
    for event in lines:
        fold.feed(clip.event(event))
    run = fold.finish(running=lambda: runlock.in_use(path))
    if lines.torn:
        run.torn = True
        run.notices.append("The last line of the trace is cut short; it was left out.")
    if lines.skipped:
        run.notices.append(f"{lines.skipped} unreadable line(s) in the trace were left out.")
    if lines.too_long:
        run.notices.append(
            f"{lines.too_long} line(s) longer than {lines.limit >> 20} MB were left "
            "out unread; the trace holds them."
        )
    if clip.cut:
        run.notices.append(
            f"{clip.cut} long text(s) are cut; each says how much, and the trace holds them whole."
        )
    return run


class _Fold:
    def __init__(self, run: RunView) -> None:
        self.run = run
        self.rounds: dict[int, RoundView] = {}
        self.open = False
        """A run_start or run_resumed came after the last run_end."""
        self.run_ids: set[str] = set()
        self.not_understood = 0
        self.left_out = 0
        """List items past the limits (tool calls, attempts, deliveries, edges, ...)."""
        self.agents_left_out: set[str] = set()
        self.more = MoreRounds()
        self.more_by_agent: dict[str, Usage] = {}
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
        if isinstance(event.get("run_id"), str) and len(self.run_ids) < MAX_RUN_IDS:
            self.run_ids.add(event["run_id"])
        if isinstance(event.get("ts"), int | float):
            self.last_ts = float(event["ts"])
        if handler is None:
            return  # an event a newer writer added: the report shows what it knows
        try:
            handler(event)
        except _Beyond:
            self.beyond(event)
        except (ValidationError, TypeError, ValueError, KeyError):
            self.not_understood += 1

    def keep(self, items: list[T], item: T, limit: int = MAX_ITEMS) -> None:
        """Append `item` unless `items` is full (then it is counted as left out)."""
        if len(items) < limit:
            items.append(item)
        else:
            self.left_out += 1

    def beyond(self, e: dict[str, Any]) -> None:
        """An event of a round or an agent past the limits: only its tokens are kept."""
        usage, later = _usage(e), _integer(e.get("round")) not in self.rounds
        if e["event"] == "agent_output":
            who = str(e.get("agent", "?"))
            key = who if who in self.run.agents else "others"
            self.more_by_agent[key] = self.more_by_agent.get(key, Usage()) + usage
        elif e["event"] == "manager_decision":
            self.manager_usage += usage
        else:
            return
        if later:
            self.more.usage += usage

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
        self.keep(self.run.resumes, ResumeView.model_validate(e))

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
            rows = [
                (str(k), Usage.model_validate(v))
                for k, v in by_agent.items()
                if isinstance(v, dict)
            ]
            run.usage_by_agent = dict(rows[:MAX_AGENTS])
            if len(rows) > MAX_AGENTS:
                others = sum((u for _, u in rows[MAX_AGENTS:]), Usage())
                run.usage_by_agent[f"{len(rows) - MAX_AGENTS} more agents"] = others

    def budget_stop(self, e: dict[str, Any]) -> None:
        stop = {k: v for k, v in e.items() if k not in ("event", "run_id")}
        self.keep(self.run.budget_stops, stop)

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
            self.keep(self.run.fallbacks, fallback)
        else:
            self.keep(self.round(e).fallbacks, fallback)

    # -- rounds ---------------------------------------------------------------------------

    def round_start(self, e: dict[str, Any]) -> None:
        number = _integer(e.get("round"))
        if number is None:
            raise ValueError("round_start without a round")
        self.check_room(number)
        earlier = number in self.rounds
        self.rounds[number] = RoundView(number=number, goal=_text(e.get("goal")))
        self.rounds[number].repeated = earlier

    def round(self, e: dict[str, Any]) -> RoundView:
        """The round an event belongs to (made up when its round_start is missing)."""
        number = _integer(e.get("round"))
        if number is None:
            raise ValueError("event without a round")
        if number not in self.rounds:
            self.check_room(number)
            self.rounds[number] = RoundView(number=number)
        return self.rounds[number]

    def check_room(self, number: int) -> None:
        """_Beyond when round `number` is new and MAX_ROUNDS rounds are kept already."""
        if number in self.rounds or len(self.rounds) < MAX_ROUNDS:
            return
        more = self.more
        if more.first is None or number < more.first:
            more.first = number
        if more.last is None or number > more.last:
            more.last = number
        raise _Beyond

    def agent(self, e: dict[str, Any]) -> AgentView:
        rnd, who = self.round(e), str(e.get("agent", "?"))
        view = rnd.agent(who)
        if view is None:
            if who not in self.run.agents and len(self.run.agents) >= MAX_AGENTS:
                if len(self.agents_left_out) < 10 * MAX_AGENTS:
                    self.agents_left_out.add(who)
                raise _Beyond
            view = AgentView(agent=who)
            rnd.agents.append(view)
            self.see(who)
        return view

    def ladder(self, e: dict[str, Any]) -> None:
        attempt = AttemptView.model_validate(e)
        if e.get("agent") != MANAGER:
            self.keep(self.agent(e).attempts, attempt)
        elif _integer(e.get("round")) in self.rounds and not self.round(e).complete:
            self.keep(self.round(e).manager_attempts, attempt)  # the round's decision
        else:
            self.keep(self.run.manager_attempts, attempt)  # opening goal or final answer

    def tool_call(self, e: dict[str, Any]) -> None:
        self.keep(self.agent(e).tool_calls, ToolCallView.model_validate(e))

    def agent_output(self, e: dict[str, Any]) -> None:
        view = self.agent(e)
        fields = {k: v for k, v in e.items() if k not in ("tool_calls", "attempts", "agent")}
        if isinstance(fields.get("dropped"), list) and len(fields["dropped"]) > MAX_ITEMS:
            self.left_out += len(fields["dropped"]) - MAX_ITEMS
            fields["dropped"] = fields["dropped"][:MAX_ITEMS]
        update = AgentView.model_validate({"agent": view.agent, **fields})
        keep = {"tool_calls": view.tool_calls, "attempts": view.attempts, "finished": True}
        rnd = self.round(e)
        rnd.agents[rnd.agents.index(view)] = update.model_copy(update=keep)

    def routing(self, e: dict[str, Any]) -> None:
        rnd = self.round(e)
        routing = RoutingView.model_validate(_bounded_routing(e))
        self.left_out += routing.edges_left_out
        rnd.routing = routing
        self.see(*routing.agents)

    def delivery(self, e: dict[str, Any]) -> None:
        self.keep(self.round(e).deliveries, DeliveryView.model_validate(e), MAX_DELIVERIES)

    def round_end(self, e: dict[str, Any]) -> None:
        rnd = self.round(e)
        rnd.complete = True
        rnd.usage = _usage(e) if isinstance(e.get("usage"), dict) else _round_usage(rnd)
        rnd.wall_s = _number(e.get("wall_s"))
        failed = e.get("failed")
        rnd.failed = [str(a) for a in failed[:MAX_AGENTS]] if isinstance(failed, list) else []

    # -- end ------------------------------------------------------------------------------

    def see(self, *agents: str) -> None:
        for agent in agents:
            if agent not in self.run.agents and agent != MANAGER:
                if len(self.run.agents) >= MAX_AGENTS:
                    return
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
        if self.more.first is not None:
            run.more_rounds = self.more
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
        by_agent: dict[str, Usage] = dict(self.more_by_agent)
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
            many = len(self.run_ids)
            notes.append(
                f"The file holds events of {'more than ' if many >= MAX_RUN_IDS else ''}"
                f"{many} run ids."
            )
        if self.not_understood:
            notes.append(f"{self.not_understood} event(s) with unexpected fields were left out.")
        notes.extend(self.limit_notices())
        return notes

    def limit_notices(self) -> list[str]:
        more, notes = self.more, []
        if more.first is not None:
            notes.append(
                f"The report keeps {MAX_ROUNDS} rounds: rounds {more.first} to {more.last} are "
                "left out but for their tokens, which count in the totals; the trace holds them."
            )
        if self.agents_left_out:
            count = len(self.agents_left_out)
            many = f"more than {count}" if count >= 10 * MAX_AGENTS else str(count)
            notes.append(
                f"The report keeps {MAX_AGENTS} agents: the steps of {many} more are left out "
                "but for their tokens (as 'others'); the trace holds them."
            )
        if self.left_out:
            notes.append(
                f"{self.left_out} list item(s) past the report's limits (tool calls, attempts, "
                "deliveries, edges, dropped items, ...) are left out; the trace holds them."
            )
        return notes


class _Beyond(Exception):
    """The event belongs to a round or an agent past the limits."""


def _bounded_routing(e: dict[str, Any]) -> dict[str, Any]:
    """A routing event cut to MAX_AGENTS agents (and its matrix to match) before validation."""
    agents, similarity = e.get("agents"), e.get("similarity")
    bounded = dict(e)
    if isinstance(agents, list):
        bounded["agents"] = agents[:MAX_AGENTS]
    if isinstance(similarity, list):
        bounded["similarity"] = [
            row[:MAX_AGENTS] if isinstance(row, list) else row for row in similarity[:MAX_AGENTS]
        ]
    if isinstance(e.get("order"), list):
        bounded["order"] = e["order"][:MAX_AGENTS]
    edges = e.get("edges")
    if isinstance(edges, list) and len(edges) > MAX_EDGES:
        bounded["edges"] = sorted(edges, key=_strength)[:MAX_EDGES]  # the strongest
        bounded["edges_left_out"] = len(edges) - MAX_EDGES
    return bounded


def _strength(edge: object) -> float:
    score = edge.get("score") if isinstance(edge, dict) else None
    return -score if isinstance(score, int | float) and math.isfinite(score) else math.inf


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
