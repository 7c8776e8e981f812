"""The HTTP API of a RunService (FastAPI): submit, poll, follow, cancel and resume runs.

    app = create_app(ServiceSettings(...))     # the app starts and stops the service
    app = create_app(service)                  # a service the caller runs (`dytopo serve`)

Every route but /healthz and the docs needs `Authorization: Bearer <token>` when the service
has a token; bodies larger than `max_body_bytes` are refused while they arrive (413). The MCP
server (streamable HTTP) answers at /mcp behind the same checks.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from dytopo.errors import (
    DyTopoError,
    NotResumable,
    OverLimit,
    QueueFull,
    ServiceClosed,
    UnknownTopology,
)
from dytopo.service.guard import Guard, authorized
from dytopo.service.models import RunInfo, RunRequest
from dytopo.service.runs import RunService
from dytopo.service.settings import ServiceSettings
from dytopo.versions import __version__

log = structlog.get_logger("dytopo.service")

EVENT_ID = re.compile(r"[0-9]{1,18}")
PAGE, MAX_PAGE = 50, 500
"""Runs GET /v1/runs lists by default, and at most: each record can be a few hundred KB."""

__all__ = ["create_app"]


def _mcp_app(service: RunService) -> Any:
    """The MCP server's streamable HTTP app, when the MCP part is installed."""
    try:
        from dytopo.service.mcp import mcp_http_app
    except ImportError as exc:
        log.warning("service.mcp_unavailable", error=str(exc))
        return None
    return mcp_http_app(service, token=service.settings.token)


def create_app(service_or_settings: RunService | ServiceSettings) -> FastAPI:
    """The API over `service_or_settings` (given settings, the app's lifespan runs the service)."""
    owned = isinstance(service_or_settings, ServiceSettings)
    service = (
        RunService(service_or_settings)
        if isinstance(service_or_settings, ServiceSettings)
        else service_or_settings
    )
    mcp = _mcp_app(service)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if owned:
                await stack.enter_async_context(service)
            if mcp is not None:  # Starlette runs no lifespan of a routed app: its sessions here
                await stack.enter_async_context(mcp.router.lifespan_context(mcp))
            yield

    app = FastAPI(
        title="DyTopo",
        version=__version__,
        summary="Run DyTopo swarms over HTTP: submit a task, follow its rounds, read the answer.",
        lifespan=lifespan,
    )
    settings = service.settings
    app.add_middleware(
        Guard,
        token=settings.token,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
    )
    _errors(app)
    _routes(app, service)
    if mcp is not None:
        app.add_route("/mcp", mcp, methods=["GET", "POST", "DELETE"])
    return app


def _detail(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    line = " ".join(message.split()) or "error"
    return JSONResponse({"detail": line}, status_code=status, headers=headers)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        return _detail(429, str(exc), {"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(UnknownTopology)
    async def unknown(request: Request, exc: UnknownTopology) -> JSONResponse:
        return _detail(404, str(exc))

    @app.exception_handler(OverLimit)
    async def over_limit(request: Request, exc: OverLimit) -> JSONResponse:
        return _detail(422, str(exc))

    @app.exception_handler(NotResumable)
    async def conflict(request: Request, exc: NotResumable) -> JSONResponse:
        return _detail(409, str(exc))

    @app.exception_handler(ServiceClosed)
    async def closed(request: Request, exc: ServiceClosed) -> JSONResponse:
        return _detail(503, str(exc), {"Retry-After": "10"})

    @app.exception_handler(DyTopoError)
    async def refused(request: Request, exc: DyTopoError) -> JSONResponse:
        # A ConfigError may list several problems, one per line: the reply is one line.
        return _detail(400, "; ".join(str(exc).splitlines()))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        return _detail(400, f"{where}: {first.get('msg', 'invalid')}{more}")


def _run(service: RunService, run_id: str) -> RunInfo:
    try:
        return service.get(run_id)
    except KeyError:
        raise HTTPException(404, f"no run {run_id[:40]!r}: GET /v1/runs lists the runs") from None


def _routes(app: FastAPI, service: RunService) -> None:
    @app.post(
        "/v1/runs",
        status_code=202,
        responses={200: {"model": RunInfo, "description": "?wait=true: the run once it ended"}},
    )
    async def submit(
        request: RunRequest,
        wait: bool = Query(False, description="Answer once the run ended, with its RunInfo."),
    ) -> JSONResponse:
        """Start a run: 202 with its id at once (429 with Retry-After when the queue is full)."""
        info = await service.submit(request)
        if wait:
            info = await service.wait(info.id)
            return JSONResponse(info.model_dump(mode="json"))
        return JSONResponse({"id": info.id, "status": info.status}, status_code=202)

    @app.get("/v1/runs")
    async def runs(
        response: Response,
        limit: int = Query(PAGE, ge=1, le=MAX_PAGE, description="Runs on this page."),
        cursor: str | None = Query(
            None, max_length=64, description="The next page's cursor, from the Link header."
        ),
    ) -> list[RunInfo]:
        """The runs the service keeps, newest first, `limit` at a time; when there are more, a
        `Link: <...>; rel="next"` header names the next page."""
        page, following = service.page(limit, cursor)
        if following is not None:
            response.headers["Link"] = f'</v1/runs?limit={limit}&cursor={following}>; rel="next"'
        return page

    @app.get("/v1/runs/{run_id}")
    async def get(run_id: str) -> RunInfo:
        """A run's status, round, progress line, rounds, final answer, usage and halt reason."""
        return _run(service, run_id)

    @app.delete("/v1/runs/{run_id}")
    async def cancel(run_id: str) -> RunInfo:
        """Cancel a run: its in-flight requests stop at once; it can be resumed later."""
        _run(service, run_id)
        return await service.cancel(run_id)

    @app.post("/v1/runs/{run_id}/resume", status_code=202)
    async def resume(run_id: str) -> RunInfo:
        """Continue an interrupted, failed or cancelled run from its last complete round."""
        _run(service, run_id)
        return await service.resume(run_id)

    @app.get(
        "/v1/runs/{run_id}/events",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def events(
        run_id: str,
        last_event_id: str | None = Header(None, alias="Last-Event-ID"),
        after: int | None = Query(None, ge=-1, le=10**18, description="Events after this index."),
    ) -> StreamingResponse:
        """The run's trace events as Server-Sent Events (`id` = the event's line in the trace),
        live until the run ends, then `event: end` with its status. Last-Event-ID resumes."""
        _run(service, run_id)
        start = after if after is not None else -1
        if last_event_id is not None:
            # ASCII digits only: str.isdigit() takes "²", which int() refuses, and int() refuses
            # more than 4,300 digits; no event id has more than 18.
            if not EVENT_ID.fullmatch(last_event_id.strip()):
                raise HTTPException(400, "Last-Event-ID must be an event id (a number) we sent")
            start = int(last_event_id)
        return StreamingResponse(
            _sse(service, run_id, start),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/v1/topologies")
    async def topologies() -> list[dict[str, Any]]:
        """The topologies a run may name: name, description, agents, mode, max_rounds."""
        return await asyncio.to_thread(service.topologies)

    @app.get("/healthz")
    async def healthz(
        authorization: str | None = Header(None, include_in_schema=False),
    ) -> dict[str, Any]:
        """Liveness (no token needed): the runs running and queued, and to a caller with the
        token the backend in use (its URL is the operator's to share)."""
        shown: dict[str, Any] = {"status": "ok", **service.counts()}
        given = (authorization or "").encode("latin-1", "replace")
        if authorized(service.settings.token, given):
            shown["backend"] = service.backend_source
        return shown


async def _sse(service: RunService, run_id: str, after: int) -> AsyncIterator[str]:
    async for index, event in service.events(run_id, after):
        name = "".join(c for c in str(event.get("event", "message")) if c.isprintable())
        data = json.dumps(event, ensure_ascii=False)
        yield f"id: {index}\nevent: {name}\ndata: {data}\n\n"
    final = service.get(run_id)
    yield f"event: end\ndata: {json.dumps({'status': final.status})}\n\n"
