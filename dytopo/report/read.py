"""Reading a trace file for the report: its events one line at a time, and what was wrong with
its lines.

A report must show what a crashed run left, so a torn last line or an unreadable line in the
middle is noted, not fatal; a file that holds no run events at all is one `ConfigError`. The
file is never read whole: a line longer than `limits.MAX_LINE_BYTES` is skipped unread.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from io import BufferedReader
from pathlib import Path
from typing import Any

from dytopo.errors import ConfigError
from dytopo.report.limits import MAX_LINE_BYTES

RUN_EVENTS = frozenset(
    {"run_start", "run_resumed", "round_start", "agent_output", "routing", "round_end", "run_end"}
)
"""Events only a DyTopo trace has: a file without any of them is something else."""

WHAT = "a trace is the JSONL file `dytopo run` writes: --trace, default runs/*.jsonl"


class TraceLines:
    """The events of the trace at `path`, read as they are iterated; ConfigError when the file
    is not a trace (raised at the end of the iteration when no line was a run event)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.limit = MAX_LINE_BYTES
        self.torn = False
        """The last line is cut short (the writer crashed mid-line, or is writing it now)."""
        self.skipped = 0
        """Lines before the last that are not events (not JSON, or JSON of another kind)."""
        self.too_long = 0
        """Lines longer than MAX_LINE_BYTES, left out unread."""

    def __iter__(self) -> Iterator[dict[str, Any]]:
        path, found, json_lines, blank = self.path, False, 0, True
        with _open(path) as f:
            if b"\x00" in f.peek(4096)[:4096]:
                raise ConfigError(f"{path}: a binary file, not a trace; {WHAT}")
            while line := f.readline(self.limit + 1):
                if len(line) > self.limit and not line.endswith(b"\n"):
                    self.too_long += 1
                    blank = False
                    _skip_rest(f, self.limit)
                    continue
                if not line.strip():
                    continue
                text = self._decode(line, first=blank)
                blank = False
                value = _json(text)
                json_lines += value is not None
                if isinstance(value, dict) and isinstance(value.get("event"), str):
                    found = found or value["event"] in RUN_EVENTS
                    yield value
                elif value is None and not line.endswith(b"\n"):
                    self.torn = True
                else:
                    self.skipped += 1
        if blank:
            raise ConfigError(f"{path}: the file is empty, not a trace; {WHAT}")
        if not found:
            what = (
                "JSON lines, but no DyTopo run event (run_start, round_start, ...)"
                if json_lines
                else f"lines over {self.limit >> 20} MB"
                if self.too_long
                else "not JSON Lines (one JSON event per line)"
            )
            raise ConfigError(f"{path}: {what}, so not a trace; {WHAT}")

    def _decode(self, line: bytes, first: bool) -> str:
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError as exc:
            if first:
                raise ConfigError(
                    f"{self.path}: not UTF-8 text ({exc.reason}), not a trace; {WHAT}"
                ) from exc
            return ""  # not JSON: counted as a skipped line


def read_events(path: Path) -> TraceLines:
    """The events of the trace at `path`, to iterate once."""
    return TraceLines(path)


def _open(path: Path) -> BufferedReader:
    if path.exists() and not path.is_dir() and not path.is_file():
        # A FIFO or a device (/dev/zero) would block or never end.
        raise ConfigError(f"{path}: not a regular file; {WHAT}")
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; {WHAT}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a directory, not a trace file; {WHAT}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None


def _skip_rest(f: BufferedReader, limit: int) -> None:
    """Read past the rest of the current line, a bounded piece at a time."""
    while (piece := f.readline(limit)) and not piece.endswith(b"\n"):
        pass


def _json(line: str) -> object | None:
    """The line's JSON value; None when it is not JSON (JSON's own null counts as JSON)."""
    try:
        value: object = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        return None
    return value if value is not None else {}
