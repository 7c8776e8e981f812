"""Checkpoints: a run's state after its last complete round, on disk next to its trace.

`runs/20261123-062800-research.jsonl` -> `runs/20261123-062800-research.checkpoint.json`,
written atomically (temp file, fsync, rename, fsync folder) after the opening, after every
complete round, and once more with the run's status when it ends. A crash at any moment
leaves either the previous checkpoint or the new one, never a torn file.

The writes run on a thread of their own, in order, one at a time, while the next round goes
on: a round is on disk a few milliseconds after it ends, and a crash in between loses that one
round (the checkpoint holds the one before, and resume runs the lost round again).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import os
import re
import shlex
import tempfile
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path, PurePath
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ValidationError

from dytopo.errors import ConfigError
from dytopo.swarm._checkpoint_json import StateEncoder
from dytopo.swarm.state import Ledger, RunState
from dytopo.topology import Topology
from dytopo.versions import versions

log = structlog.get_logger("dytopo.checkpoint")

SUFFIX = ".checkpoint.json"
Status = Literal["running", "complete", "interrupted", "failed"]
MAX_BYTES = 1 << 30
"""Largest checkpoint read; a run's state is a few MB at most."""


class TopologyOrigin(BaseModel):
    """The file a swarm was built from, as its checkpoints record it."""

    path: str
    """Absolute path of the topology file."""
    sha256: str
    """Hash of the file's bytes when the swarm was built."""
    topology: dict[str, Any]
    """The topology as run (command-line overrides included), in JSON form."""


def origin_of(path: str | Path, topology: Topology) -> TopologyOrigin:
    file = Path(path).resolve()
    return TopologyOrigin(
        path=str(file), sha256=file_sha256(file), topology=topology.model_dump(mode="json")
    )


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Checkpoint(BaseModel):
    """Everything to continue a run: where it came from, and its state."""

    format: Literal[1] = 1
    run_id: str
    status: Status
    task: str
    topology_path: str | None
    """Absolute path of the topology file (None for swarms built in Python)."""
    topology_sha256: str | None
    """Hash of the file's bytes when the run started."""
    topology: dict[str, Any] | None
    """The topology as loaded (model_dump(mode="json")), to name differences."""
    trace_path: str | None
    """Where the run's trace was when this was written (absolute). Never trusted on reading:
    `read_checkpoint` replaces it with the trace beside the checkpoint file (`trace_beside`)."""
    versions: dict[str, str]
    started_at: float
    """Unix time the run started."""
    updated_at: float
    state: RunState
    """Everything needed to continue after the last complete round."""


def check_resumable(cp: Checkpoint, agents: list[str] | None = None) -> None:
    """Refuse, in one line, a run that is complete or that ran other agents than `agents`."""
    if cp.status == "complete":
        raise ConfigError(
            f"run {cp.run_id} is complete: nothing to resume (its trace: {cp.trace_path})"
        )
    if agents is not None and cp.state.agents != agents:
        raise ConfigError(
            f"run {cp.run_id} ran agents {cp.state.agents}, this swarm has {agents}: resume "
            "it on the swarm it ran on"
        )


def checkpoint_path(trace_path: Path) -> Path:
    """The checkpoint beside a trace: same folder, same stem."""
    return trace_path.with_name(trace_path.stem + SUFFIX)


def trace_beside(checkpoint: Path, recorded: str | None = None) -> Path:
    """The trace a checkpoint file belongs to, as an absolute path: in the checkpoint's folder,
    with its stem. `recorded` (the checkpoint's own `trace_path`) only lends its suffix, and
    only when its name maps back to this checkpoint; otherwise `.jsonl`. A checkpoint is data
    anyone may edit: what it says cannot send a run's writes anywhere else."""
    folder = Path(os.path.abspath(checkpoint)).parent
    name = PurePath(recorded).name if recorded else ""
    if name not in ("", ".", "..") and checkpoint_path(Path(name)).name == checkpoint.name:
        return folder / name
    return folder / (checkpoint.name.removesuffix(SUFFIX) + ".jsonl")


def write_checkpoint(cp: Checkpoint, path: Path, encoder: StateEncoder | None = None) -> None:
    """Replace `path` with `cp` atomically and durably. `encoder`: the one that encoded this
    run's earlier checkpoints (it reuses what they had), else a fresh one.

    A run's last status (complete, failed, interrupted) skips the folder's sync, which the run
    waits for: if a power loss undoes that rename, the checkpoint before it is back, with the
    same complete rounds and status `running`, and resume finishes the run from there."""
    head = cp.model_dump(mode="json", exclude={"state"})
    data = (encoder or StateEncoder()).encode_with(head, cp.state)
    write_bytes_atomically(data, path, sync_folder=cp.status == "running")


def write_bytes_atomically(data: bytes, path: Path, *, sync_folder: bool = True) -> None:
    """Replace `path` with `data`: a crash at any moment leaves the old file or the new one
    (and, with `sync_folder`, the new one once this returns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if not sync_folder:
        return
    # The rename itself is durable once the folder is synced.
    folder = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def read_checkpoint(path: Path) -> Checkpoint:
    """Load a checkpoint, or raise ConfigError saying in one line why it cannot be used."""
    try:
        if not path.is_file():
            raise ConfigError(f"checkpoint {path}: no such file (see `dytopo runs`)")
        if path.stat().st_size > MAX_BYTES:
            raise ConfigError(f"checkpoint {path}: larger than {MAX_BYTES:,} bytes, not one")
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"checkpoint {path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON
        raise ConfigError(f"checkpoint {path}: not a DyTopo checkpoint (not JSON: {exc})") from None
    try:
        cp = Checkpoint.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        raise ConfigError(
            f"checkpoint {path}: not a DyTopo checkpoint this version can read "
            f"({where}: {first['msg']}; {exc.error_count()} problem(s))"
        ) from None
    # Where the checkpoint is, not what it says: resumed from any folder, the run goes on in
    # its own trace (a relative path would fork it under ./runs), and an edited path cannot
    # make a resume append to, or write a checkpoint beside, an arbitrary file.
    return cp.model_copy(update={"trace_path": str(trace_beside(path, cp.trace_path))})


_RUN_ID = re.compile(rb'"run_id"\s*:\s*"([^"\\]*)"')


def find_checkpoint(source: str | Path, runs_dir: Path = Path("runs")) -> Path:
    """The checkpoint of `source`: a checkpoint path, a trace path, or a run id (looked up in
    `runs_dir`). Raises ConfigError naming what was tried."""
    path = Path(source)
    if path.name.endswith(SUFFIX):
        return path
    if path.is_file():
        beside = checkpoint_path(path)
        if beside.is_file():
            return beside
        raise ConfigError(
            f"{path}: no checkpoint beside this trace ({beside.name}); runs without a trace "
            "file, and runs from before checkpoints existed, cannot be resumed"
        )
    for candidate in sorted(runs_dir.glob(f"*{SUFFIX}")) if runs_dir.is_dir() else []:
        if _run_id_of(candidate) == str(source):
            return candidate
    raise ConfigError(
        f"no run {str(source)!r} in {runs_dir}/ and no such file: give a run id from "
        "`dytopo runs`, a trace path or a checkpoint path"
    )


def _run_id_of(path: Path) -> str | None:
    # Checkpoints are written with run_id near the start: no need to parse whole files.
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
    except OSError:
        return None
    match = _RUN_ID.search(head)
    return match.group(1).decode("utf-8", "replace") if match else None


def resume_command(run_id: str, trace_path: Path, runs_dir: Path = Path("runs")) -> str:
    """The exact `dytopo resume` command for a run, from the current folder."""
    by_id = trace_path.parent.resolve() == runs_dir.resolve()
    return f"dytopo resume {run_id if by_id else shlex.quote(str(trace_path))}"


def changed_fields(old: Any, new: Any, where: str = "") -> list[str]:
    """Dotted names of the fields that differ between two JSON values, with short values."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            change
            for key in sorted(set(old) | set(new), key=str)
            for change in changed_fields(old.get(key), new.get(key), f"{where}.{key}".lstrip("."))
        ]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            c
            for k, (a, b) in enumerate(zip(old, new, strict=True))
            for c in changed_fields(a, b, f"{where}[{k}]")
        ]
    if old == new:
        return []
    short = all(len(repr(v)) <= 40 for v in (old, new))
    return [f"{where or 'topology'} ({old!r} -> {new!r})" if short else (where or "topology")]


def _snapshot(state: RunState) -> RunState:
    """A copy later changes to `state` cannot reach, in microseconds rather than the
    milliseconds a dump takes (a dump of the whole state grows every round). The round loop
    only appends to the state's lists, replaces their records whole (delivery builds new memory
    and transcript lists) and edits the ledger's dicts in place: so the lists and dicts are
    copied, their records shared; the manager's own state is copied deep."""
    return state.model_copy(
        update={
            "agents": list(state.agents),
            "memory": {agent: list(items) for agent, items in state.memory.items()},
            "transcript": list(state.transcript),
            "rounds": list(state.rounds),
            "ledger": _ledger_copy(state.ledger),
            "rng": [list(x) if isinstance(x, list) else x for x in state.rng],
            "manager": copy.deepcopy(state.manager),
            "meter": state.meter.model_copy() if state.meter else None,
        }
    )


def _ledger_copy(ledger: Ledger) -> Ledger:
    # Charging replaces Usage values (Usage + Usage is a new one): copying the dicts is enough.
    return ledger.model_copy(
        update={
            "by_agent": dict(ledger.by_agent),
            "by_round": dict(ledger.by_round),
            "stats": Counter(ledger.stats),
        }
    )


class Checkpointer:
    """Writes one run's checkpoints, in order, on a thread of its own, so the run goes on while
    the disk works: `save` and `finish` take a snapshot and return at once (after the previous
    write, if it is still going); `drain` (or `wait`, which blocks) returns once every write
    handed over so far is on disk. One writer thread takes the writes first come, first served:
    a write never overtakes an earlier one, so the last status written is the last one asked
    for.

    A write that fails is logged and the next one tried: a full disk must not end a run that
    can still finish."""

    def __init__(
        self,
        path: Path,
        state: RunState,
        *,
        origin: TopologyOrigin | None,
        trace_path: Path,
        started_at: float | None = None,
    ) -> None:
        self.path = path
        now = time.time()
        self.checkpoint = Checkpoint(
            run_id=state.run_id,
            status="running",
            task=state.task,
            topology_path=origin.path if origin else None,
            topology_sha256=origin.sha256 if origin else None,
            topology=origin.topology if origin else None,
            trace_path=os.path.abspath(trace_path),
            versions=versions(),
            started_at=started_at or now,
            updated_at=now,
            state=_snapshot(state),
        )
        """The last checkpoint handed to the writer."""
        self.written = False
        """Whether a checkpoint of this run is on disk (so it can be resumed)."""
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dytopo-checkpoint")
        self._last: Future[None] | None = None
        self._encoder = StateEncoder()
        """Used on the writer thread only."""

    def save(self, state: RunState) -> None:
        """The run completed a step it must never redo: keep a copy of its state."""
        self._submit("running", _snapshot(state))

    def finish(
        self, status: Status, state: RunState | None = None, *, spent: int | None = None
    ) -> None:
        """The run ended: record how, with `state` or the last saved one. `spent`: the token
        meter's count when a run stopped part-way, kept with the last saved state so that a
        resume does not spend again what the unfinished round spent."""
        kept = _snapshot(state) if state else self.checkpoint.state
        if spent is not None and kept.meter is not None:
            kept = kept.model_copy(update={"meter": kept.meter.model_copy(update={"used": spent})})
        self._submit(status, kept)

    async def drain(self) -> None:
        """Wait, without blocking the event loop, until every write handed over is done."""
        if self._last is not None:
            await asyncio.shield(asyncio.wrap_future(self._last))

    def wait(self) -> None:
        """Block until every write handed over is done (for a run that is being cancelled)."""
        if self._last is not None:
            self._last.result()

    def close(self) -> None:
        """Finish the writes handed over and stop the writer thread."""
        self._writer.shutdown(wait=True)

    def _submit(self, status: Status, state: RunState) -> None:
        if self._last is not None:
            # One write in flight at most, so a crash loses at most the last step handed over.
            # Only a disk slower than a whole round makes the run wait here.
            self._last.result()
        self.checkpoint = self.checkpoint.model_copy(
            update={"status": status, "state": state, "updated_at": time.time()}
        )
        self._last = self._writer.submit(self._write, self.checkpoint)

    def _write(self, cp: Checkpoint) -> None:
        try:
            write_checkpoint(cp, self.path, self._encoder)
        except Exception as exc:  # logged: a lost write must not end the run
            log.warning(
                "checkpoint.failed", path=str(self.path), error=f"{type(exc).__name__}: {exc}"
            )
        else:
            self.written = True
