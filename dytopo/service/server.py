"""uvicorn for the service, with limits a client cannot wedge it past.

uvicorn by itself waits forever for a connection's first request and accepts connections until
the process runs out of file descriptors; 300 idle connections did that, and the accept loop
then spun on EMFILE. Here: at most `max_connections` in service (uvicorn answers 503 beyond),
twice that open at all (more are closed as they arrive), a request head within
`header_timeout_s` (else the connection closes), headers of at most 16 KiB, idle keep-alive
connections closed after 5 s, and the open-file limit raised so the cap fits under it. The
body's own deadline (408) is the Guard's.
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from dytopo.errors import ConfigError
from dytopo.service.settings import ServiceSettings

__all__ = ["open_files_needed", "raise_open_file_limit", "server_config"]

MAX_HEADER_BYTES = 16 * 1024
KEEP_ALIVE_S = 5
SPARE_FILES = 256
"""Descriptors beside the connections: runs' traces and checkpoints, the backend's sockets."""


def open_files_needed(settings: ServiceSettings) -> int:
    """Descriptors the service may hold: every connection it keeps open, plus the spare."""
    return 2 * settings.max_connections + SPARE_FILES


def raise_open_file_limit(needed: int) -> int:
    """The soft open-file limit, raised to the hard one when it is below `needed`; ConfigError
    when even the hard one is (the accept loop would meet EMFILE before the connection cap)."""
    infinity = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != infinity and soft < needed and (hard == infinity or soft < hard):
        soft = needed if hard == infinity else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft != infinity and soft < needed:
        raise ConfigError(
            f"the open-file limit is {soft} and the service needs {needed} for its connections: "
            "raise it (ulimit -n) or lower --max-connections"
        )
    return soft


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol, with a head deadline and a hard connection cap."""

    header_timeout_s = 10.0
    max_open = 128

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_open:
            transport.close()  # at once: an fd per idle connection is how the loop was wedged
            return
        self._arm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_timer()  # the next request's head has the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timeout)

    def _head_timeout(self) -> None:
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def _protocol(settings: ServiceSettings) -> type[_Protocol]:
    return type(
        "ServiceH11Protocol",
        (_Protocol,),
        {
            "header_timeout_s": settings.header_timeout_s,
            "max_open": 2 * settings.max_connections,
        },
    )


def server_config(app: Any, settings: ServiceSettings, **options: Any) -> uvicorn.Config:
    """uvicorn's Config for `app` with the service's connection limits (`options`: the rest,
    e.g. log_level)."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=_protocol(settings),
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=KEEP_ALIVE_S,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        **options,
    )
