"""A live view of a run, fed by trace events: a line per round, and in a terminal a table of
what each agent is doing (off a terminal, only the lines)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.status import Status
from rich.table import Table

from dytopo.backends.types import Usage
from dytopo.cli.board import Board
from dytopo.swarm.result import RunResult


class RoundProgress:
    """Observer: a line per finished round, and what is happening now: in a terminal a live table
    of the agents (waiting for a slot, generating, running a tool, done, failed; tokens so far
    and the cached share), elsewhere a status line."""

    def __init__(self, console: Console, agents: list[str] | None = None) -> None:
        self.console = console
        self.status: Status | None = None
        self.live: Live | None = None
        self.agents: list[str] = agents or []
        """Known up front when resuming (a resumed run has no run_start)."""
        self.board = Board()
        self.board.set_agents(self.agents)
        self.done = 0
        self.round = 0
        self._drawn = 0.0

    def __call__(self, event: dict[str, Any]) -> None:
        self.board.update(event)
        kind = event["event"]
        if kind == "run_start":
            self.agents = event["agents"]
            name = escape(event["name"])
            self.console.print(
                f"[bold]{name}[/]: {len(self.agents)} agents, mode {event['mode']}, "
                f"tau {event['tau']}, up to {event['max_rounds']} rounds "
                f"(run {event['run_id']})"
            )
            self._set("manager is setting the first goal")
        elif kind == "run_resumed":
            forced = " with the changed topology file (--force)" if event.get("forced") else ""
            self.console.print(
                f"[bold]resuming run {event['run_id']}[/] from round {event['from_round']} "
                f"({event['completed_rounds']} complete round(s) kept){forced}"
            )
            self._set(f"round {event['from_round']} starting")
        elif kind == "round_start":
            self.round, self.done = event["round"], 0
            # Model text is data: "[/x]" in a goal must not be read as markup (or crash the run).
            self.console.print(
                f"[cyan]round {self.round}[/] goal: {escape(event['goal'][:160])}",
                highlight=False,
            )
            self._set(f"round {self.round}: 0/{len(self.agents)} agents done")
        elif kind == "agent_output":
            self.done += 1
            mark = "" if event["ok"] else f" ([red]{event['agent']} failed[/])"
            self._set(f"round {self.round}: {self.done}/{len(self.agents)} agents done{mark}")
        elif kind == "routing":
            edges = event["edges"]
            shown = ", ".join(f"{e['source']}->{e['target']} ({e['score']:.2f})" for e in edges[:8])
            more = f" +{len(edges) - 8} more" if len(edges) > 8 else ""
            self.console.print(f"  graph: {shown or 'no edges'}{more}", highlight=False)
            self._set(f"round {self.round}: {len(edges)} edges; manager deciding")
        elif kind == "round_end":
            failed = f", failed: {', '.join(event['failed'])}" if event["failed"] else ""
            usage = Usage.model_validate(event["usage"])
            self.console.print(
                f"  round {event['round']}: {event['edges']} edges, {usage.completion_tokens} "
                f"tokens generated, {_cached(usage)} prompt tokens cached, "
                f"{event['wall_s']:.1f}s{failed}"
            )
        elif kind == "manager_decision" and event["halt"]:
            verdict = (
                "accepted"
                if event["accepted"]
                else f"not accepted ({escape(event['rejected_because'])})"
            )
            self.console.print(
                f"  manager: halt {verdict}: {escape(event['reason'][:120])}",
                highlight=False,
            )
        elif kind == "run_end":
            self.stop()
        self._refresh()

    def _set(self, text: str) -> None:
        if self.console.is_terminal:
            self.board.headline = text
            if self.live is None:
                # Refreshed from the run's own thread on events: a refresh thread would read
                # the board while the run changes it.
                self.live = Live(
                    self.board, console=self.console, transient=True, auto_refresh=False
                )
                self.live.start()
            self._refresh(force=True)
            return
        if self.status is None:
            self.status = self.console.status(text)
            self.status.start()
        else:
            self.status.update(text)

    def _refresh(self, force: bool = False) -> None:
        # At most a few redraws a second: a big swarm sends several notes per request.
        now = time.monotonic()
        if self.live is not None and (force or now - self._drawn >= 0.2):
            self._drawn = now
            self.live.refresh()

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        if self.status is not None:
            self.status.stop()
            self.status = None


def _cached(usage: Usage) -> str:
    return f"{usage.cached_share:.0%} of {usage.prompt_tokens}"


def summary(result: RunResult, console: Console) -> None:
    console.rule("final answer")
    console.print(result.final_answer or "(empty)", markup=False, highlight=False)
    console.rule()
    table = Table(
        title=f"usage (halt: {result.halt_reason}, {len(result.rounds)} rounds, "
        f"{result.wall_s:.1f}s)"
    )
    for column in ("who", "requests", "prompt", "cached", "cached %", "generated"):
        table.add_column(column, justify="left" if column == "who" else "right")
    rows = [*result.usage_by_agent.items(), ("total", result.usage)]
    rows += [(f"round {r.round}", r.usage) for r in result.rounds]
    for who, u in rows:
        table.add_row(
            who,
            str(u.requests),
            str(u.prompt_tokens),
            str(u.cached_tokens),
            f"{u.cached_share:.0%}",
            str(u.completion_tokens),
            end_section=who == "total",
        )
    console.print(table)
    if result.trace_path:
        console.print(f"trace: {result.trace_path}")
