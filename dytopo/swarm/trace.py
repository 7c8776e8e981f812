"""The run trace: one JSON object per line, flushed per event, so a crash keeps everything so far.

Every event has `event`, `run_id`, `ts` and, where it applies, `round`. Event names and their
documented fields are a public interface (reports, resume and outside tools read them): add
fields freely, never rename.

A resumed run appends to the same file: `run_resumed` (from_round, completed_rounds, checkpoint,
status, forced, versions), then the remaining rounds and a second `run_end`. Rounds before
`from_round` are never repeated; a round the stopped attempt left unfinished appears twice, and
the later one (after `run_resumed`) is the one the result holds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import pydantic_core

from dytopo.errors import RunInUse
from dytopo.swarm import runlock

Observer = Callable[[dict[str, Any]], None]


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    """The record with every model in it dumped (JSON mode, aliases), in pydantic's core: a
    Python walk over a routing event's matrix took a millisecond per round. A NaN stays a NaN."""
    plain: dict[str, Any] = pydantic_core.to_jsonable_python(
        record, by_alias=True, inf_nan_mode="constants"
    )
    return plain


def _line(record: dict[str, Any]) -> str:
    try:
        return pydantic_core.to_json(record, inf_nan_mode="constants").decode() + "\n"
    except ValueError:  # a lone surrogate has no UTF-8 form: the file writes its escape
        return json.dumps(record, ensure_ascii=False) + "\n"


class Trace:
    """Writes events to a JSONL file (optional) and hands them to observers (progress views)."""

    def __init__(self, run_id: str, path: Path | None = None) -> None:
        self.run_id = run_id
        self.path = path
        self.observers: list[Observer] = []
        self._file: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            torn = _torn(path)
            # A lone surrogate in a model's reply is written as its JSON escape (\udXXX), not
            # an error that would end the run.
            self._file = path.open("a", encoding="utf-8", errors="backslashreplace")
            try:
                runlock.hold(self._file, path)
            except RunInUse:
                self._file.close()
                raise
            if torn:
                # A resumed run appends: keep its first event off a line a crash cut short.
                self._file.write("\n")

    def emit(self, event: str, round: int | None = None, **fields: Any) -> dict[str, Any]:
        record: dict[str, Any] = {
            "event": event,
            "run_id": self.run_id,
            "ts": round_ts(time.time()),
        }
        if round is not None:
            record["round"] = round
        record.update(fields)
        if not self.has_readers:
            return record  # nobody reads it: spare converting every model in it
        record = _plain(record)
        if self._file is not None:
            self._file.write(_line(record))
            self._file.flush()
        for observer in self.observers:
            observer(record)
        return record

    def live(self, event: str, round: int | None = None, **fields: Any) -> None:
        """An event for the observers only (a live view), not the file: see `dytopo.activity`."""
        if not self.observers:
            return
        record: dict[str, Any] = {"event": event, "run_id": self.run_id, "ts": time.time()}
        if round is not None:
            record["round"] = round
        record.update(fields)
        for observer in self.observers:
            observer(record)

    @property
    def has_readers(self) -> bool:
        """Whether anything reads the events (a file or an observer): callers can spare
        building fields nobody sees."""
        return self._file is not None or bool(self.observers)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _torn(path: Path) -> bool:
    """Does the file end in the middle of a line?"""
    try:
        with path.open("rb") as handle:
            if handle.seek(0, 2) == 0:
                return False
            handle.seek(-1, 2)
            return handle.read(1) != b"\n"
    except FileNotFoundError:
        return False


def round_ts(ts: float) -> float:
    return float(f"{ts:.3f}")


def read_trace(path: Path) -> list[dict[str, Any]]:
    """Load a trace; a torn last line (crash mid-write) is skipped, not fatal."""
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
