"""A batch's record file: one JSON line per finished run, appended and synced as each run ends.

A crash or a kill can only tear the last line: reading skips it (and the next writer cuts it
off), so the records on disk are exactly the runs that finished. The set of their (item, mode)
keys is what a resumed batch skips. One process writes a record file at a time (an advisory
lock the kernel drops when that process ends, however it ends).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from pydantic import ValidationError

from dytopo.batch.models import Key, RunRecord
from dytopo.errors import ConfigError, RunInUse
from dytopo.swarm.checkpoint import changed_fields

SETTINGS = "settings.json"
"""Beside the records: the settings their runs were made with (a resume must match them)."""


def read_records(path: Path) -> list[RunRecord]:
    """The finished runs in `path` (none when it does not exist), in the order they ended; a
    later record of the same key wins in `latest`. A torn last line is skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the run records ({exc.strerror})") from None
    lines = data.split(b"\n")[:-1]  # what follows the last newline is torn (or empty)
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(RunRecord.model_validate_json(line))
        except ValidationError as exc:
            reason = exc.errors(include_url=False)[0]["msg"]
            raise ConfigError(
                f"{path}:{number}: not a run record ({reason}); delete that line to run that "
                "item again, or choose another output folder"
            ) from None
    return records


def latest(records: list[RunRecord]) -> dict[Key, RunRecord]:
    """One record per (item, mode): the last one written."""
    return {r.key: r for r in records}


def _known(new: Any, old: Any) -> Any:
    """`new` without the keys `old` lacks (at any depth): a field that a newer DyTopo added to
    the settings must not stop an older batch from resuming."""
    if isinstance(new, dict) and isinstance(old, dict):
        return {key: _known(value, old[key]) for key, value in new.items() if key in old}
    return new


class RecordStore:
    """The record file of one batch, held for appending by this process.

    with RecordStore(out / "records.jsonl") as store:
        skip = store.done()
        store.append(record)
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = self.path.open("ab")
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            raise RunInUse(
                f"{self.path} is being written by another dytopo process (a batch on the same "
                "output folder): wait for it to end or stop it, or choose another folder"
            ) from None
        self._file = file
        self._cut_torn_tail()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._file is not None:
            self._file.close()  # drops the lock
            self._file = None

    def _cut_torn_tail(self) -> None:
        """A line cut short by a crash would glue itself to the next record: drop it."""
        assert self._file is not None
        size = os.fstat(self._file.fileno()).st_size
        if size == 0:
            return
        with self.path.open("rb") as reader:
            data = reader.read()
        if not data.endswith(b"\n"):
            os.ftruncate(self._file.fileno(), data.rfind(b"\n") + 1)

    def records(self) -> list[RunRecord]:
        return read_records(self.path)

    def done(self) -> set[Key]:
        """The (item, mode) pairs that have a record: a resumed batch skips them."""
        return {r.key for r in self.records()}

    def append(self, record: RunRecord) -> None:
        """Write one record durably: it is on disk when this returns."""
        if self._file is None:
            raise RuntimeError("RecordStore.append outside `with RecordStore(...)`")
        self._file.write(record.model_dump_json().encode() + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def pin(self, settings: dict[str, Any], *, what: str = "batch") -> None:
        """Record the settings of this batch's runs beside them on the first run; later runs
        on the same folder must have the same ones (else their records would mix)."""
        path = self.path.with_name(SETTINGS)
        plain = json.loads(json.dumps(settings, default=str))
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            temporary = path.with_name(path.name + ".tmp")
            temporary.write_text(json.dumps(plain, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(temporary, path)
            return
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{path}: unreadable ({exc}); delete it or choose another folder"
            ) from None
        changed = changed_fields(saved, _known(plain, saved))
        if changed:
            shown = ", ".join(changed[:6]) + (
                f" and {len(changed) - 6} more" if len(changed) > 6 else ""
            )
            raise ConfigError(
                f"{self.path.parent} holds {what} runs made with other settings ({shown}): "
                "choose another output folder, or rerun with the same settings to resume them"
            )
