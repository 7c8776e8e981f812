"""A batch's task file: one task per line, as JSON.

    "Explain LRU vs LFU"                                   # a bare string: the task
    {"task": "Explain LRU vs LFU"}                         # id: line-2
    {"id": "cache-7", "task": "...", "overrides": {"rounds": 2, "seed": 3}}

Blank lines are skipped. Every bad line is reported as `FILE:LINE: what is wrong` before
anything runs (ConfigError, one line each).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dytopo.batch.models import BatchItem
from dytopo.errors import ConfigError

FIELDS = ("task", "id", "overrides")
MAX_SHOWN = 20
"""Bad lines listed at most (a wrong file would list all of them)."""

Check = Callable[[Mapping[str, Any]], None]
"""Refuses a line's overrides with ConfigError (e.g. `with_overrides` on the topology)."""


def read_tasks(path: Path, check: Check | None = None) -> list[BatchItem]:
    """The tasks of `path`, in order, each with its line number in `meta["line"]`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such task file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the task file ({exc})") from None
    items: list[BatchItem] = []
    problems: list[str] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = _item(line, number, check)
        except ValueError as exc:
            problems.append(f"{path}:{number}: {exc}")
            continue
        if item.id in first_line:
            problems.append(f"{path}:{number}: id {item.id!r} repeats line {first_line[item.id]}")
            continue
        first_line[item.id] = number
        items.append(item)
    if not problems and not items:
        problems.append(f"{path}: no tasks (give one JSON task per line)")
    if problems:
        more = len(problems) - MAX_SHOWN
        shown = problems[:MAX_SHOWN] + ([f"{path}: and {more} more bad lines"] if more > 0 else [])
        raise ConfigError("\n".join(shown))
    return items


def _item(line: str, number: int, check: Check | None) -> BatchItem:
    """One line as a task; ValueError says what is wrong with it."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:  # the parser recurses per level: a few thousand brackets stop it
        raise ValueError(
            "nested too deeply to read; give a task text or a flat object "
            '{"task": "...", "id": "...", "overrides": {...}}'
        ) from None
    if isinstance(data, str):
        data = {"task": data}
    if not isinstance(data, dict):
        raise ValueError(
            'give a task text ("...") or an object {"task": "...", "id": "...", '
            f'"overrides": {{...}}}}, not {type(data).__name__}'
        )
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown field {', '.join(unknown)}; a line may have {', '.join(FIELDS)}")
    task, name = data.get("task"), data.get("id", f"line-{number}")
    if not isinstance(task, str) or not task.strip():
        raise ValueError('"task" must be a non-empty text')
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise ValueError('"id" must be a non-empty text of at most 200 characters')
    overrides = data.get("overrides", {})
    if not isinstance(overrides, dict):
        raise ValueError('"overrides" must be an object, e.g. {"rounds": 2}')
    if check is not None:
        try:
            check(overrides)
        except ConfigError as exc:
            raise ValueError("overrides: " + "; ".join(str(exc).splitlines())) from None
    try:
        return BatchItem(id=name, task=task, overrides=overrides, meta={"line": number})
    except ValidationError as exc:  # pragma: no cover - every field was checked above
        raise ValueError(exc.errors(include_url=False)[0]["msg"]) from None
