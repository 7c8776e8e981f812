"""The live per-agent table of a run in a terminal: what each agent is doing, and its tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from dytopo.backends.types import Usage

_STYLE = {
    "starting": "dim",
    "waiting": "yellow",
    "generating": "cyan",
    "tool": "magenta",
    "done": "green",
    "failed": "red",
    "idle": "dim",
}


@dataclass
class Row:
    state: str = "idle"
    detail: str = ""
    usage: Usage = field(default_factory=Usage)


class Board:
    """Rows per agent (and the manager) kept up to date from trace and live events."""

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        self.budget: int | None = None
        self.round = 0
        self.headline = ""

    def set_agents(self, agents: list[str]) -> None:
        for agent in [*agents, "manager"]:
            self.rows.setdefault(agent, Row())

    def update(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        agent = event.get("agent")
        if kind == "run_start":
            self.set_agents(list(event["agents"]))
            self.budget = (event.get("config") or {}).get("run_token_budget")
        elif kind == "round_start":
            self.round = event["round"]
            for name, row in self.rows.items():
                if name != "manager":
                    row.state, row.detail = "starting", ""
        elif kind == "agent_state" and agent:
            row = self.rows.setdefault(agent, Row())
            row.state, row.detail = event["state"], event.get("detail", "")
        elif kind == "ladder" and agent:
            usage = Usage.model_validate(event.get("usage") or {})
            self.rows.setdefault(agent, Row()).usage += usage
        elif kind == "agent_output" and agent:
            # Traced after the round; the live `done` note came as the step ended.
            row = self.rows.setdefault(agent, Row())
            row.state = "done" if event.get("ok") else "failed"
            row.detail = "" if event.get("ok") else str(event.get("error", ""))
        elif kind == "manager_fallback":
            row = self.rows.setdefault("manager", Row())
            row.state, row.detail = "failed", f"{event.get('duty', '')}: fallback used"

    @property
    def total(self) -> Usage:
        total = Usage()
        for row in self.rows.values():
            total += row.usage
        return total

    def __rich__(self) -> Table:
        total = self.total
        used = total.prompt_tokens + total.completion_tokens
        cap = f" of {self.budget:,} (run budget)" if self.budget else ""
        table = Table(
            title=self.headline or None,
            caption=f"{used:,} tokens{cap}, {total.cached_share:.0%} of prompt tokens cached",
            title_justify="left",
            caption_justify="left",
        )
        for column in ("agent", "doing", "tokens", "cached"):
            table.add_column(column, justify="left" if column in ("agent", "doing") else "right")
        for name, row in self.rows.items():
            doing = Text(row.state, style=_STYLE.get(row.state, ""))
            if row.state == "waiting":
                doing = Text("waiting for a slot", style=_STYLE["waiting"])
            if row.detail:
                doing.append(f": {row.detail[:60]}")
            tokens = row.usage.prompt_tokens + row.usage.completion_tokens
            cached = f"{row.usage.cached_share:.0%}" if row.usage.prompt_tokens else "-"
            table.add_row(escape(name), doing, f"{tokens:,}", cached)
        return table
