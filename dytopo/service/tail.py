"""Following a trace file as it grows: each complete line once, with its 0-based index."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

CHUNK = 1 << 20
IDLE_S = 1.0
"""Look at the file again after this long without news (a writer we were not told about)."""


def _read(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(CHUNK)
    except FileNotFoundError:
        return b""


async def tail(
    path: Path,
    after: int,
    pulse: Callable[[], asyncio.Event],
    ended: Callable[[], bool],
) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """Events of `path` after line `after`, as they are written, until `ended()` and the file
    holds nothing more. `pulse()` is set when the writer wrote something. A line that is not
    JSON (a crash cut it short) keeps its index and is skipped."""
    offset, index, rest = 0, -1, b""
    while True:
        news, finished = pulse(), ended()
        chunk = await asyncio.to_thread(_read, path, offset)
        if chunk:
            offset += len(chunk)
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                index += 1
                if index <= after:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    yield index, event
            continue
        if finished:
            return
        try:
            async with asyncio.timeout(IDLE_S):
                await news.wait()
        except TimeoutError:
            pass
