"""Per mode: pass@1 and what it cost (tokens, rounds and wall time per problem, failed runs)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence

from pydantic import BaseModel
from rich import box
from rich.table import Table

from dytopo.batch import RunRecord, latest


class ModeSummary(BaseModel):
    """One mode's row of the table. Means are per problem (per run of that mode)."""

    mode: str
    problems: int
    passed: int
    pass_at_1: float
    """passed / problems (one sample per problem)."""
    prompt_tokens: float
    cached_tokens: float
    """Prompt tokens served from the server's prompt cache (part of prompt_tokens)."""
    completion_tokens: float
    rounds: float
    wall_s: float
    failures: int
    """Runs that stopped with an error (they count as not passed)."""
    no_code: int
    """Answers in which no code was found."""


def _mean(values: Iterable[float]) -> float:
    found = list(values)
    return round(statistics.fmean(found), 2) if found else 0.0


def summarize(records: Iterable[RunRecord], modes: Sequence[str]) -> list[ModeSummary]:
    """A row per mode in `modes` order, from the latest record of each (item, mode)."""
    kept = list(latest(list(records)).values())
    rows = []
    for mode in modes:
        runs = [r for r in kept if r.mode == mode]
        passed = sum(1 for r in runs if r.grade.get("passed") is True)
        rows.append(
            ModeSummary(
                mode=mode,
                problems=len(runs),
                passed=passed,
                pass_at_1=round(passed / len(runs), 4) if runs else 0.0,
                prompt_tokens=_mean(r.usage.prompt_tokens for r in runs),
                cached_tokens=_mean(r.usage.cached_tokens for r in runs),
                completion_tokens=_mean(r.usage.completion_tokens for r in runs),
                rounds=_mean(r.rounds for r in runs),
                wall_s=_mean(r.wall_s for r in runs),
                failures=sum(1 for r in runs if not r.ok),
                no_code=sum(1 for r in runs if r.grade.get("kind") == "none"),
            )
        )
    return rows


def table(rows: Sequence[ModeSummary], title: str = "") -> Table:
    """The summary as a terminal table (tokens, rounds and seconds are per problem)."""
    view = Table(title=title or None, title_justify="left", box=box.SIMPLE_HEAD)
    view.add_column("mode")
    for name in ("passed", "pass@1", "prompt\ntokens", "cached\ntokens", "generated\ntokens"):
        view.add_column(name, justify="right")
    for name in ("rounds", "wall s", "failed\nruns", "no\ncode"):
        view.add_column(name, justify="right")
    for row in rows:
        view.add_row(
            row.mode,
            f"{row.passed}/{row.problems}",
            f"{row.pass_at_1:.1%}",
            f"{row.prompt_tokens:,.0f}",
            f"{row.cached_tokens:,.0f}",
            f"{row.completion_tokens:,.0f}",
            f"{row.rounds:.1f}",
            f"{row.wall_s:.1f}",
            str(row.failures),
            str(row.no_code),
        )
    return view


def markdown(rows: Sequence[ModeSummary]) -> str:
    """The summary as a Markdown table (for BENCHMARKS files)."""
    lines = [
        "| mode | passed | pass@1 | prompt tok | cached tok | generated tok | rounds | wall s "
        "| failed runs | no code |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.mode} | {r.passed}/{r.problems} | {r.pass_at_1:.1%} | {r.prompt_tokens:,.0f} "
            f"| {r.cached_tokens:,.0f} | {r.completion_tokens:,.0f} | {r.rounds:.1f} "
            f"| {r.wall_s:.1f} | {r.failures} | {r.no_code} |"
        )
    return "\n".join(lines) + "\n"
