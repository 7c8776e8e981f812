"""One writer per run: a process holds an advisory lock on the trace while it writes the run.

The kernel drops the lock when the process ends, however it ends (SIGKILL, OOM), so a lock held
means "a process is writing this run right now", and nothing is ever left stale.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

from dytopo.errors import RunInUse


def hold(file: IO[str], path: Path) -> None:
    """Lock `file` (the trace, open for appending) for this process, or raise RunInUse."""
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _in_use(path) from None


def check_free(path: Path) -> None:
    """Raise RunInUse when a process is writing the run whose trace is `path`."""
    if in_use(path):
        raise _in_use(path)


def _in_use(path: Path) -> RunInUse:
    return RunInUse(
        f"{path} is being written by another dytopo process (its run is still going): "
        "wait for it to end or stop it, then resume"
    )


def in_use(path: Path) -> bool:
    """Is some process writing the run whose trace is `path`?"""
    try:
        with path.open("rb") as file:
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False
    except OSError:
        return False
