"""A run's RunInfo kept current from its trace events (an observer of the swarm's trace)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dytopo.service.models import RoundSummary, RunInfo

MAX_EDGES = 256
"""Edges a round's summary keeps (16 agents have at most 240)."""


class Progress:
    """Updates `info` from each trace event; `changed(durable)` after each one (durable: a
    round finished, so the record should reach the disk now)."""

    def __init__(self, info: RunInfo, agents: int, changed: Callable[[bool], None]) -> None:
        self.info, self.agents, self.changed = info, agents, changed
        self.done = 0

    def __call__(self, event: dict[str, Any]) -> None:
        kind, info = event.get("event"), self.info
        t = event.get("round")
        durable = False
        if kind == "run_start":
            info.max_rounds = int(event.get("max_rounds") or info.max_rounds)
            info.progress = "opening: the manager sets the first goal"
        elif kind == "run_resumed":
            completed = int(event.get("completed_rounds") or 0)
            info.rounds = [r for r in info.rounds if r.round <= completed]
            info.round = completed
            info.progress = f"resumed after round {completed}/{info.max_rounds}"
        elif kind == "round_start" and isinstance(t, int):
            self.done = 0
            info.round = t
            info.rounds = [r for r in info.rounds if r.round < t]
            info.rounds.append(RoundSummary(round=t, goal=str(event.get("goal", ""))))
            info.progress = f"round {t}/{info.max_rounds}: {self.agents} agents working"
        elif kind == "agent_output" and isinstance(t, int):
            self.done += 1
            info.progress = f"round {t}/{info.max_rounds}: {self.done} of {self.agents} agents done"
        elif kind == "routing" and isinstance(t, int):
            edges = event.get("edges") or []
            summary = self._round(t)
            # The record is rewritten on every change and served whole: it keeps a bounded
            # sample of the edges and their count (the trace keeps them all).
            summary.edges = [(str(e["source"]), str(e["target"])) for e in edges[:MAX_EDGES]]
            summary.messages = len(edges)
            info.progress = (
                f"round {t}/{info.max_rounds}: {self.done} of {self.agents} agents done, "
                f"{len(edges)} messages, the manager decides"
            )
        elif kind == "round_end" and isinstance(t, int):
            self._round(t).finished = True
            info.progress = f"round {t}/{info.max_rounds} done"
            durable = True
        else:
            return
        self.changed(durable)

    def _round(self, t: int) -> RoundSummary:
        for summary in self.info.rounds:
            if summary.round == t:
                return summary
        summary = RoundSummary(round=t)
        self.info.rounds.append(summary)
        return summary
