"""The oracle of a run: did ANY work product of the run pass the tests, not only its final answer?

Every `agent_output` event of the run's trace is read; from its `private` and `public` texts
code is extracted the way a final answer's is, and each distinct candidate is graded in the
sandbox, until one passes. A run whose oracle passes while its final answer fails lost a
right answer on the way: a defect of the framework (the manager's choice, the routing), not of
the model. A plain run's only product is its answer: its oracle is its pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from dytopo.eval.extract import extract
from dytopo.eval.grade import Grade

FIELDS = ("private", "public")

GradeCompletion = Callable[[str], Grade]
"""Grades one completion (text after the problem's prompt) against the problem's tests."""


class Oracle(BaseModel):
    """The oracle verdict of one run (kept in its record's grade as `oracle`)."""

    passed: bool
    source: str = ""
    """What passed: `final`, or `AGENT round N private|public`; empty when nothing did."""
    candidates: int = 0
    """Distinct pieces of code graded beyond the final answer."""


def products(trace: Path) -> Iterator[tuple[str, str]]:
    """(where, text) of each agent's private and public message in `trace`, in trace order; a
    missing trace or a torn line is skipped."""
    try:
        lines = trace.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return
    for line in lines:
        try:
            event: Any = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict) or event.get("event") != "agent_output":
            continue
        for field in FIELDS:
            text = event.get(field)
            if isinstance(text, str) and text.strip():
                yield f"{event.get('agent', '?')} round {event.get('round', '?')} {field}", text


def oracle(final: Grade, trace: Path | None, entry_point: str, grade: GradeCompletion) -> Oracle:
    """The run's oracle: its final answer's grade, else the first agent product that passes."""
    if final.passed:
        return Oracle(passed=True, source="final")
    seen = {final.completion}
    for where, text in products(trace) if trace is not None else ():
        found = extract(text, entry_point)
        if found.kind == "none" or found.completion in seen:
            continue
        seen.add(found.completion)
        if grade(found.completion).passed:
            return Oracle(passed=True, source=where, candidates=len(seen) - 1)
    return Oracle(passed=False, candidates=len(seen) - 1)
