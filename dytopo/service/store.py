"""Runs on disk: <id>.json (the RunInfo, replaced atomically), <id>.jsonl (the trace) and its
checkpoint, <id>.topology.json (the topology as submitted). A restart reads them back."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import structlog
from pydantic import ValidationError

from dytopo.errors import ConfigError
from dytopo.service.models import RunInfo
from dytopo.swarm.checkpoint import checkpoint_path, read_checkpoint, write_bytes_atomically
from dytopo.swarm.trace import read_trace
from dytopo.topology import Topology

log = structlog.get_logger("dytopo.service")

RUN_ID = re.compile(r"[0-9a-f]{12}")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RunFiles:
    """Where one service keeps its runs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def info(self, run_id: str) -> Path:
        return self.folder / f"{run_id}.json"

    def trace(self, run_id: str) -> Path:
        return self.folder / f"{run_id}.jsonl"

    def checkpoint(self, run_id: str) -> Path:
        return checkpoint_path(self.trace(run_id))

    def topology(self, run_id: str) -> Path:
        return self.folder / f"{run_id}.topology.json"

    def private_trace(self, run_id: str) -> Path:
        """The trace, created (or kept) readable by the owner only, like the record and the
        checkpoint: it holds the task and every message. The run appends to it."""
        path = self.trace(run_id)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        os.chmod(path, 0o600)  # a trace written before this rule was world-readable
        return path

    def delete(self, run_id: str) -> None:
        """Every file of the run (record, trace, checkpoint, topology); a missing one is fine."""
        if not RUN_ID.fullmatch(run_id):
            raise ValueError(f"not a run id: {run_id[:40]!r}")
        for path in self.folder.glob(f"{run_id}.*"):
            path.unlink(missing_ok=True)

    def save(self, info: RunInfo) -> None:
        """Replace the record whole: a crash leaves the old one or the new one, never half."""
        data = info.model_dump_json(indent=1).encode()
        write_bytes_atomically(data, self.info(info.id), sync_folder=False)

    def save_topology(self, run_id: str, topology: Topology) -> None:
        data = json.dumps(topology.model_dump(mode="json"), indent=1).encode()
        write_bytes_atomically(data, self.topology(run_id), sync_folder=False)

    def load_topology(self, run_id: str) -> Topology:
        return Topology.model_validate_json(self.topology(run_id).read_bytes())

    def load_all(self) -> list[RunInfo]:
        """Every readable record, oldest first; an unreadable one is logged and left alone."""
        infos = []
        for path in sorted(self.folder.glob("*.json")):
            if not RUN_ID.fullmatch(path.stem):
                continue
            try:
                info = RunInfo.model_validate_json(path.read_bytes())
            except (OSError, ValidationError) as exc:
                log.warning("service.record_unreadable", file=str(path), error=str(exc)[:200])
                continue
            if info.id == path.stem:
                infos.append(info)
        return sorted(infos, key=lambda i: i.created_at)

    def recovered(self, info: RunInfo) -> RunInfo:
        """A record the last service left queued or running: that service stopped under it.
        A run whose end reached its trace keeps its result; the rest are interrupted."""
        if info.status not in ("queued", "running"):
            return info
        end = self._run_end(info.id)
        if end is not None and not end.get("error"):
            return info.model_copy(
                update={
                    "status": "succeeded",
                    "final_answer": end.get("final_answer"),
                    "halt_reason": end.get("halt_reason"),
                    "usage": end.get("usage"),
                    "finished_at": info.finished_at or now(),
                    "progress": f"done after {end.get('rounds', 0)} round(s)",
                    "resumable": False,
                }
            )
        return info.model_copy(
            update={
                "status": "interrupted",
                "error": "the service stopped during this run",
                "progress": f"interrupted in round {info.round}" if info.round else "interrupted",
                "finished_at": now(),
                "resumable": self.can_resume(info),
            }
        )

    def can_resume(self, info: RunInfo) -> bool:
        """A run continues from its checkpoint, or starts afresh if it stopped before its first
        checkpoint (nothing of it was kept, so nothing is repeated)."""
        if not self.checkpoint(info.id).is_file():
            return self.topology(info.id).is_file()
        try:
            return read_checkpoint(self.checkpoint(info.id)).status != "complete"
        except ConfigError:
            return False

    def _run_end(self, run_id: str) -> dict[str, object] | None:
        try:
            events = read_trace(self.trace(run_id))
        except OSError:
            return None
        last = events[-1] if events else None
        return last if last is not None and last.get("event") == "run_end" else None
