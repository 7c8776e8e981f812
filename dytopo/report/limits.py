"""How much of a trace the report keeps and shows, whatever the trace holds.

A trace is model text and counts nobody bounded (a hostile or runaway run, a hand-made file):
the report reads it line by line, cuts each text to a size a page can carry, keeps a bounded
number of rounds, agents and list items in memory, and stops drawing rounds once the page is
large. Everything cut says so, how much, and that the whole text is in the trace.
"""

from __future__ import annotations

from typing import Any

MAX_LINE_BYTES = 16 * 1024 * 1024
"""A longer trace line is left out (noted), never read whole: a 256-agent routing event is ~2 MB."""
FIELD_CHARS = 8_000
"""Each text (message, answer, goal, error, tool result) is cut after this many characters."""
TEXT_BUDGET = 3_000_000
"""Characters of text the report keeps in all; after that each text keeps SPENT_CHARS."""
SPENT_CHARS = 200
NAME_CHARS = 200
"""Names (agents, tools) are cut here, always the same way, so a cut name still matches."""
MAX_ROUNDS = 100
"""Rounds kept in detail; later rounds count in the totals only."""
MAX_AGENTS = 256
"""Agents kept (the service's own cap); the steps of any further agent count in the totals."""
MAX_ITEMS = 50
"""Kept per list: an agent's tool calls and attempts, a run's resumes, fallbacks and stops."""
MAX_EDGES = 5_000
"""Edges kept per round (the strongest); the graph draws at most graph.MAX_EDGES of them."""
MAX_DELIVERIES = 1_000
"""Deliveries kept per round."""
PAGE_BYTES = 12 * 1024 * 1024
"""Rounds are drawn until the page passes this size; the rest are named in a notice."""

NAME_KEYS = frozenset(
    {"agent", "agents", "source", "target", "from", "to", "order", "hub", "tool", "failed"}
)
"""Fields that hold names: cut as names, never with a note (graphs and tables key on them)."""


def name(text: str) -> str:
    """`text` cut to NAME_CHARS, with an ellipsis when cut."""
    return text if len(text) <= NAME_CHARS else text[: NAME_CHARS - 1] + "\N{HORIZONTAL ELLIPSIS}"


class Clipper:
    """Cuts every text of the events it is given, against one budget for the whole trace.

    A cut text ends with a note of how many characters were cut and that the whole text is in
    the trace: the page shows what it holds, and says where the rest is.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.budget = TEXT_BUDGET
        self.cut = 0
        """Texts cut so far."""

    def event(self, value: Any, key: str = "") -> Any:
        """`value` (an event, or any JSON value in one) with its texts cut."""
        if isinstance(value, str):
            return name(value) if key in NAME_KEYS else self.text(value)
        if isinstance(value, dict):
            return {name(str(k)): self.event(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.event(v, key) for v in value]
        return value

    def text(self, text: str) -> str:
        if len(text) <= SPENT_CHARS:
            return text
        keep = min(len(text), FIELD_CHARS, max(SPENT_CHARS, self.budget))
        self.budget -= keep
        if keep == len(text):
            return text
        self.cut += 1
        return text[:keep] + (
            f" \N{HORIZONTAL ELLIPSIS} [{len(text) - keep:,} more characters cut here; "
            f"the whole text is in the trace {self.source}]"
        )
