"""Geometry of the totals' bar charts: tokens per agent and per round, each bar split into
cached prompt, uncached prompt and completion tokens (what the server reused, what it had to
read, what it wrote)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dytopo.backends.types import Usage

MAX_BARS = 30
"""More rows than this (a 256-agent run) fold the smallest into one "others" bar."""
WIDTH = 560.0
LABEL_CHARS = 20
ROW = 22.0

PARTS = (
    ("cached prompt", "#9ccfa7"),
    ("uncached prompt", "#4a7fc1"),
    ("completion", "#e8964a"),
)


@dataclass(frozen=True)
class Segment:
    x: float
    width: float
    color: str
    title: str


@dataclass(frozen=True)
class Bar:
    label: str
    y: float
    segments: list[Segment]
    note: str
    note_x: float


@dataclass
class BarChart:
    width: float
    height: float
    left: float
    bars: list[Bar]
    legend: Sequence[tuple[str, str]] = PARTS


def usage_chart(rows: Sequence[tuple[str, Usage]], *, biggest_first: bool = False) -> BarChart:
    rows = [(label, u) for label, u in rows if _total(u)]  # a function agent uses no tokens
    if biggest_first:
        rows.sort(key=lambda row: -_total(row[1]))
    if len(rows) > MAX_BARS:
        rest = rows[MAX_BARS - 1 :]
        others = sum((u for _, u in rest), Usage())
        rows = [*rows[: MAX_BARS - 1], (f"{len(rest)} others", others)]
    left = 10 + 7.0 * min(LABEL_CHARS, max((len(label) for label, _ in rows), default=0))
    span = WIDTH - left - 150
    top = max((_total(u) for _, u in rows), default=0) or 1
    bars = []
    for k, (label, usage) in enumerate(rows):
        parts = (
            usage.cached_tokens,
            max(0, usage.prompt_tokens - usage.cached_tokens),
            usage.completion_tokens,
        )
        x, segments = left, []
        for (name, color), value in zip(PARTS, parts, strict=True):
            width = span * value / top
            segments.append(Segment(x, width, color, f"{label}: {name} {value:,} tokens"))
            x += width
        share = f" · {usage.cached_share:.0%} cached" if usage.prompt_tokens else ""
        if len(label) > LABEL_CHARS:
            label = label[: LABEL_CHARS - 1] + "\N{HORIZONTAL ELLIPSIS}"
        bars.append(Bar(label, 8 + k * ROW, segments, f"{_total(usage):,}{share}", x + 6))
    return BarChart(WIDTH, 16 + len(rows) * ROW, left, bars)


def _total(usage: Usage) -> int:
    return usage.prompt_tokens + usage.completion_tokens
