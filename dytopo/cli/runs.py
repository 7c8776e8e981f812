"""`dytopo runs`: the runs in a folder, newest first, read from their traces and checkpoints.

Status rules (documented in `dytopo runs --help`):
- the trace's last segment (from its last `run_start` or `run_resumed`) ends with `run_end`:
  complete, or interrupted (Ctrl-C/SIGTERM), or failed (any other error);
- no `run_end`: running while a process holds the trace's lock (`dytopo.swarm.runlock`: the kernel
  drops it when the process dies); else the checkpoint's status when it says the run ended; else
  interrupted (the process died).

Traces are hostile input like any file: a file that yields no DyTopo event (garbage, not UTF-8,
too large, not a regular file) is one `unreadable` row, never a traceback.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, cast

import typer
from pydantic import BaseModel
from rich.table import Table
from rich.text import Text

from dytopo.cli._common import fail, out
from dytopo.cli._terminal import json_text
from dytopo.swarm import runlock
from dytopo.swarm.checkpoint import SUFFIX, checkpoint_path

MAX_FILE_BYTES = 256 * 2**20
"""Bigger files are listed as unreadable instead of being read: a listing must stay quick."""
MAX_LINE_BYTES = 16 * 2**20
TASK_CHARS = 60

Status = Literal["complete", "interrupted", "failed", "running", "unreadable"]


class RunRow(BaseModel):
    """One run as `dytopo runs --json` prints it."""

    run_id: str | None
    topology: str | None
    """The topology's name (run_start `name`)."""
    task: str
    status: Status
    rounds: int
    """Complete rounds (distinct `round_end` events)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens: int = 0
    wall_s: float = 0.0
    """Time spent running, summed over the original run and its resumes."""
    started_at: float | None = None
    """Unix time of the run's first event."""
    trace: str | None = None
    checkpoint: str | None = None
    problem: str | None = None
    """Why the row is unreadable, or what was skipped while reading it."""


def runs(
    folder: Path = typer.Option(Path("runs"), "--dir", help="Folder holding traces (*.jsonl)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """List runs newest first: id, topology, task, status (complete / interrupted / failed /
    running), rounds, tokens and wall time. A run without `run_end` is running while a
    dytopo process writes it, else interrupted (resume it with `dytopo resume ID`)."""
    if folder.exists() and not folder.is_dir():
        fail(f"--dir {folder}: not a folder", 2)
    rows = list_runs(folder) if folder.is_dir() else []
    if as_json:
        print(json_text([r.model_dump(mode="json") for r in rows]))
    elif not rows:
        out.print(
            f"no runs in {folder}/ (`dytopo run TOPOLOGY` writes its trace there)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    else:
        out.print(_table(rows))
        if any(r.checkpoint and r.status in ("interrupted", "failed") for r in rows):
            where = "" if folder == Path("runs") else f" --dir {shlex.quote(str(folder))}"
            out.print(
                f"continue a stopped run with: dytopo resume ID{where}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )


def list_runs(folder: Path) -> list[RunRow]:
    """Every run in `folder`, newest first; a file that cannot be read is one unreadable row."""
    checkpoints = {p: _read_json(p) for p in _entries(folder, f"*{SUFFIX}")}
    rows: list[RunRow] = []
    used: set[Path] = set()
    for trace in _entries(folder, "*.jsonl"):
        rows.extend(_trace_rows(trace, checkpoints, used))
    for path, data in checkpoints.items():
        if path not in used:
            rows.append(_checkpoint_row(path, data))
    return sorted(rows, key=lambda r: r.started_at or _mtime(r), reverse=True)


def _entries(folder: Path, pattern: str) -> list[Path]:
    try:
        return sorted(folder.glob(pattern))
    except OSError as exc:
        fail(f"--dir {folder}: {exc.strerror or exc}", 2)


def _mtime(row: RunRow) -> float:
    try:
        return Path(row.trace or row.checkpoint or "").stat().st_mtime
    except OSError:
        return 0.0


# --- reading files -----------------------------------------------------------------------------


class Unreadable(Exception):
    """A file that is not something `runs` can list; the message says why, in a few words."""


def _open(path: Path) -> IO[bytes]:
    """Open a regular file of a sane size (a FIFO would block, /dev/zero never ends)."""
    try:
        if not path.is_file():
            raise Unreadable("not a regular file")
        handle = path.open("rb")
    except OSError as exc:
        raise Unreadable(exc.strerror or type(exc).__name__) from None
    size = os.fstat(handle.fileno()).st_size
    if size > MAX_FILE_BYTES:
        handle.close()
        raise Unreadable(f"too large to list ({size / 2**20:.1f} MB)")
    return handle


@dataclass
class _Lines:
    events: list[dict[str, Any]] = field(default_factory=list)
    bad: int = 0
    not_utf8: bool = False


def _read_events(path: Path) -> _Lines:
    """The file's events; lines that are not JSON objects (a torn last line, garbage) are
    counted and skipped, like `read_trace` does."""
    lines = _Lines()
    with _open(path) as handle:
        while raw := handle.readline(MAX_LINE_BYTES):
            if not raw.endswith(b"\n") and len(raw) == MAX_LINE_BYTES:
                while (rest := handle.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                    pass  # skip the rest of an overlong line without holding it
                lines.bad += 1
                continue
            if not raw.strip():
                continue
            try:
                event = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                lines.bad, lines.not_utf8 = lines.bad + 1, True
                continue
            except (ValueError, RecursionError):
                lines.bad += 1
                continue
            if isinstance(event, dict) and isinstance(event.get("event"), str):
                lines.events.append(event)
            else:
                lines.bad += 1
    return lines


def _read_json(path: Path) -> dict[str, Any] | str:
    """A checkpoint as a plain dict (listing needs only a few fields), or why it is unreadable."""
    try:
        with _open(path) as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except Unreadable as exc:
        return str(exc)
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except (ValueError, RecursionError):
        return "not JSON"
    return data if isinstance(data, dict) else "not a checkpoint"


# --- one run from its events -------------------------------------------------------------------


@dataclass
class _Run:
    run_id: str
    name: str | None = None
    task: str = ""
    first_ts: float | None = None
    segments: list[list[float]] = field(default_factory=list)
    """[first ts, last ts] of the original run and of each resume."""
    round_usage: dict[int, tuple[int, int]] = field(default_factory=dict)
    end: dict[str, Any] | None = None
    """The last segment's `run_end`, if it has one."""

    def add(self, event: dict[str, Any]) -> None:
        kind, ts = event["event"], _number(event.get("ts"))
        if kind in ("run_start", "run_resumed") or not self.segments:
            self.segments.append([ts, ts] if ts is not None else [])
            self.end = None
        if ts is not None:
            self.first_ts = ts if self.first_ts is None else self.first_ts
            segment = self.segments[-1]
            segment[:] = [segment[0], ts] if segment else [ts, ts]
        if kind == "run_start":
            self.name = _text(event.get("name")) or self.name
            self.task = _text(event.get("task")) or self.task
        elif kind == "round_end" and isinstance(event.get("round"), int):
            self.round_usage[event["round"]] = _usage(event.get("usage"))
        elif kind == "run_end":
            self.end = event

    def wall_s(self) -> float:
        return round(sum(s[1] - s[0] for s in self.segments if s), 3)

    def last_ts(self) -> float | None:
        return max((s[1] for s in self.segments if s), default=None)


def _trace_rows(
    trace: Path, checkpoints: dict[Path, dict[str, Any] | str], used: set[Path]
) -> list[RunRow]:
    try:
        lines = _read_events(trace)
    except Unreadable as exc:
        return [_unreadable(trace, str(exc))]
    found: dict[str, _Run] = {}
    for event in lines.events:
        run_id = _text(event.get("run_id"))
        if run_id:
            found.setdefault(run_id, _Run(run_id)).add(event)
    if not found:
        why = "not UTF-8 text" if lines.not_utf8 else "no DyTopo trace events"
        return [_unreadable(trace, why if lines.bad else "empty")]
    skipped = f"{lines.bad} unreadable line(s) skipped" if lines.bad else None
    rows = []
    for run in found.values():
        cp_path = _match_checkpoint(trace, run.run_id, checkpoints)
        cp = checkpoints.get(cp_path) if cp_path else None
        if cp_path is not None:
            used.add(cp_path)
        row = _row(run, cp if isinstance(cp, dict) else None, trace)
        row.trace, row.checkpoint, row.problem = str(trace), _str(cp_path), skipped
        if isinstance(cp, str):
            row.problem = f"checkpoint unreadable: {cp}"
        rows.append(row)
    return rows


def _match_checkpoint(
    trace: Path, run_id: str, checkpoints: dict[Path, dict[str, Any] | str]
) -> Path | None:
    """The checkpoint next to the trace (same stem), else one in the folder with this run id."""
    beside = checkpoint_path(trace)
    data = checkpoints.get(beside)
    if data is not None and (not isinstance(data, dict) or data.get("run_id") in (run_id, None)):
        return beside
    for path, data in checkpoints.items():
        if isinstance(data, dict) and data.get("run_id") == run_id:
            return path
    return None


def _row(run: _Run, cp: dict[str, Any] | None, trace: Path) -> RunRow:
    prompt = sum(u[0] for u in run.round_usage.values())
    completion = sum(u[1] for u in run.round_usage.values())
    if run.end is not None and isinstance(run.end.get("usage"), dict):
        # run_end counts the manager's opening and final answer too.
        prompt, completion = _usage(run.end["usage"])
    return RunRow(
        run_id=run.run_id,
        topology=run.name or (_topology_name(cp) if cp else None),
        task=run.task or (_text(cp.get("task")) if cp else ""),
        status=_status(run, cp, trace),
        rounds=len(run.round_usage),
        prompt_tokens=prompt,
        completion_tokens=completion,
        tokens=prompt + completion,
        wall_s=run.wall_s(),
        started_at=run.first_ts,
    )


def _status(run: _Run, cp: dict[str, Any] | None, trace: Path) -> Status:
    if run.end is not None:
        error = _text(run.end.get("error"))
        if error == "interrupted":
            return "interrupted"
        return "failed" if error or run.end.get("halt_reason") == "error" else "complete"
    if runlock.in_use(trace):
        return "running"
    said = cp.get("status") if cp else None
    if said in ("complete", "failed", "interrupted"):
        return cast(Status, said)  # the run ended; its run_end line was lost
    return "interrupted"


def _checkpoint_row(path: Path, data: dict[str, Any] | str) -> RunRow:
    """A checkpoint whose trace is elsewhere (or gone)."""
    if isinstance(data, str):
        return _unreadable(path, data, checkpoint=True)
    said = data.get("status")
    status: Status = said if said in ("complete", "interrupted", "failed", "running") else "failed"
    trace = _text(data.get("trace_path"))
    if status == "running" and not (trace and runlock.in_use(Path(trace))):
        status = "interrupted"
    state = data.get("state")
    rounds = state.get("round") if isinstance(state, dict) else None
    return RunRow(
        run_id=_text(data.get("run_id")) or None,
        topology=_topology_name(data),
        task=_text(data.get("task")),
        status=status,
        rounds=rounds if isinstance(rounds, int) and rounds >= 0 else 0,
        started_at=_number(data.get("started_at")),
        trace=_text(data.get("trace_path")) or None,
        checkpoint=str(path),
        problem="trace not in this folder",
    )


def _unreadable(path: Path, why: str, *, checkpoint: bool = False) -> RunRow:
    return RunRow(
        run_id=None,
        topology=None,
        task="",
        status="unreadable",
        rounds=0,
        trace=None if checkpoint else str(path),
        checkpoint=str(path) if checkpoint else None,
        problem=why,
    )


# --- defensive field access (a trace may say anything) -----------------------------------------


def _text(value: Any) -> str:
    """A string field, made printable: no control or format characters, no lone surrogates."""
    if not isinstance(value, str):
        return ""
    value = value.encode("utf-8", "replace").decode("utf-8")
    return "".join(
        " " if unicodedata.category(c) in ("Cc", "Cf", "Cs") else c for c in value
    ).strip()


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) and 0 <= value < 1e11 else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _usage(value: Any) -> tuple[int, int]:
    if not isinstance(value, dict):
        return 0, 0
    return _count(value.get("prompt_tokens")), _count(value.get("completion_tokens"))


def _topology_name(cp: dict[str, Any]) -> str | None:
    topology = cp.get("topology")
    name = _text(topology.get("name")) if isinstance(topology, dict) else ""
    return name or (Path(_text(cp.get("topology_path"))).stem or None)


def _str(path: Path | None) -> str | None:
    return str(path) if path is not None else None


# --- the table ---------------------------------------------------------------------------------


def _table(rows: list[RunRow]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("id", "topology", "task", "status", "rounds", "tokens", "wall", "started"):
        right = column in ("rounds", "tokens", "wall")
        # Only the task wraps (in a narrow terminal); every other cell stays whole.
        table.add_column(
            column,
            justify="right" if right else "left",
            no_wrap=column != "task",
            min_width=20 if column == "task" else None,
        )
    for r in rows:
        if r.status == "unreadable":
            where = r.trace or r.checkpoint or ""
            cells = ["?", "", f"{Path(where).name}: {r.problem}", "unreadable", "", "", "", ""]
        else:
            task = r.task if len(r.task) <= TASK_CHARS else r.task[: TASK_CHARS - 1] + "…"
            cells = [
                r.run_id or "?",
                r.topology or "",
                task,
                r.status,
                str(r.rounds),
                str(r.tokens),
                f"{r.wall_s:.0f}s",
                time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started_at))
                if r.started_at
                else "",
            ]
        # Text cells: a task is data, never rich markup.
        table.add_row(*(Text(_text(c)) for c in cells))
    return table
