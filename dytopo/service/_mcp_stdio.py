"""The MCP server on stdin/stdout (`dytopo mcp`) with a cap on the size of one message.

Why: the SDK's stdio transport reads stdin line by line with no limit, so one 200 MB JSON-RPC
line held 1.4 GB of memory. Here stdin is read in chunks; a line longer than the cap is skipped
as it arrives (never held whole) and stands in the stream as one line that is not JSON, which
the SDK drops like any malformed message. Everything else is the SDK's own transport.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from typing import Any, cast

import anyio
import structlog
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server

__all__ = ["MAX_MESSAGE_BYTES", "BoundedLines", "run_stdio"]

log = structlog.get_logger("dytopo.mcp")

MAX_MESSAGE_BYTES = 1024 * 1024
"""Longest JSON-RPC message accepted, on stdio and over HTTP (a run_swarm call is at most a
20,000-character task)."""
CHUNK = 64 * 1024
DROPPED = "<dropped: a message over the size limit>\n"
"""What stands for a skipped line: not JSON, so the SDK reports it as malformed."""


class BoundedLines:
    """The lines read from `fd` as text, each at most `limit` bytes (see the module docstring).
    Memory held: at most `limit` plus one chunk."""

    def __init__(self, fd: int, limit: int = MAX_MESSAGE_BYTES) -> None:
        self.fd, self.limit = fd, limit
        self._buffer = bytearray()
        self._skipping = False
        self._eof = False

    def __aiter__(self) -> BoundedLines:
        return self

    async def __anext__(self) -> str:
        while True:
            line = self._next_line()
            if line is not None:
                return line
            if self._eof:
                raise StopAsyncIteration
            chunk = await anyio.to_thread.run_sync(os.read, self.fd, CHUNK, abandon_on_cancel=True)
            self._eof = not chunk
            self._buffer += chunk

    def _next_line(self) -> str | None:
        end = self._buffer.find(b"\n")
        if end < 0:
            if len(self._buffer) > self.limit:
                if not self._skipping:
                    log.warning("mcp.message_dropped", limit_bytes=self.limit)
                self._skipping = True
                self._buffer.clear()
            if self._eof and self._buffer and not self._skipping:
                line = bytes(self._buffer)
                self._buffer.clear()
                return line.decode("utf-8", "replace")
            return None
        line = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        if self._skipping or len(line) > self.limit:
            if not self._skipping:
                log.warning("mcp.message_dropped", limit_bytes=self.limit)
            self._skipping = False
            return DROPPED
        return line.decode("utf-8", "replace")


@contextlib.contextmanager
def _claimed_stdin() -> Iterator[int]:
    """A private copy of fd 0 for the wire; fd 0 itself reads the null device meanwhile, so a
    child process cannot eat the client's messages (what the SDK does when it owns stdin).
    The copy stays open: a worker thread may still be blocked reading it."""
    wire = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
    finally:
        os.close(null)
    try:
        yield wire
    finally:
        os.dup2(wire, 0)


async def run_stdio(server: MCPServer, *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
    """Serve `server` on stdin/stdout until stdin ends."""
    with _claimed_stdin() as wire:
        stdin = cast(Any, BoundedLines(wire, max_message_bytes))  # the SDK iterates its lines
        async with stdio_server(stdin=stdin) as (read, write):
            # The SDK's run_stdio_async has no size option; its low-level server runs the same.
            lowlevel = server._lowlevel_server
            await lowlevel.run(read, write, lowlevel.create_initialization_options())
