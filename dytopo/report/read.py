"""Reading a trace file for the report: its events, and what was wrong with its lines.

A report must show what a crashed run left, so a torn last line or an unreadable line in the
middle is noted, not fatal; a file that holds no run events at all is one `ConfigError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dytopo.errors import ConfigError

RUN_EVENTS = frozenset(
    {"run_start", "run_resumed", "round_start", "agent_output", "routing", "round_end", "run_end"}
)
"""Events only a DyTopo trace has: a file without any of them is something else."""

WHAT = "a trace is the JSONL file `dytopo run` writes: --trace, default runs/*.jsonl"


@dataclass
class TraceLines:
    events: list[dict[str, Any]] = field(default_factory=list)
    torn: bool = False
    """The last line is cut short (the writer crashed mid-line, or is writing it now)."""
    skipped: int = 0
    """Lines before the last that are not events (not JSON, or JSON of another kind)."""


def read_events(path: Path) -> TraceLines:
    """The events of the trace at `path`; ConfigError when it is not a trace."""
    data = _bytes(path)
    if not data.strip():
        raise ConfigError(f"{path}: the file is empty, not a trace; {WHAT}")
    if b"\x00" in data:
        raise ConfigError(f"{path}: a binary file, not a trace; {WHAT}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason}), not a trace; {WHAT}") from exc
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    read, json_lines = TraceLines(), 0
    for number, line in enumerate(lines, start=1):
        value = _json(line)
        json_lines += value is not None
        if isinstance(value, dict) and isinstance(value.get("event"), str):
            read.events.append(value)
        elif value is None and number == len(lines) and not text.endswith("\n"):
            read.torn = True
        elif line.strip():
            read.skipped += 1
    if not any(e.get("event") in RUN_EVENTS for e in read.events):
        found = (
            "JSON lines, but no DyTopo run event (run_start, round_start, ...)"
            if json_lines
            else "not JSON Lines (one JSON event per line)"
        )
        raise ConfigError(f"{path}: {found}, so not a trace; {WHAT}")
    return read


def _bytes(path: Path) -> bytes:
    if path.exists() and not path.is_dir() and not path.is_file():
        # A FIFO or a device (/dev/zero) would block or never end.
        raise ConfigError(f"{path}: not a regular file; {WHAT}")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; {WHAT}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a directory, not a trace file; {WHAT}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None


def _json(line: str) -> object | None:
    """The line's JSON value; None when it is not JSON (JSON's own null counts as JSON)."""
    try:
        value: object = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        return None
    return value if value is not None else {}
