"""The swarm as an MCP server: tools `run_swarm`, `list_topologies` and `get_run` over a RunService.

`dytopo mcp` serves `build_mcp(service)` over stdio; `dytopo serve` mounts `mcp_http_app(service)`
(streamable HTTP). The HTTP app answers at its own path "/mcp", so the host adds it as a route
(a Mount at "/mcp" would answer only "/mcp/" and redirect "/mcp"), and runs its session manager
for the host's lifetime (Starlette does not run a routed app's lifespan):

    mcp_app = mcp_http_app(service, token=settings.token)
    app.add_route("/mcp", mcp_app, methods=["GET", "POST", "DELETE"])
    # in the FastAPI lifespan, around the `yield`:
    async with mcp_app.router.lifespan_context(mcp_app):
        yield

Waiting: MCP clients give a tool call a deadline (AnythingLLM calls tools with the TypeScript
SDK's default of 60 s and asks for no progress), while a swarm run takes minutes. So `run_swarm`
answers within `reply_within_s`: the final answer if the run ended by then, else a line naming the
run, which goes on; `get_run` on an unfinished run waits the same time before it answers. A
`run_swarm` call the client cancels cancels its run: runs share one backend, and nobody would read
the answer. A cancelled `get_run` never does: it only reads, and a client polling a long run
cancels each call at its own deadline.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field, ValidationError
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from dytopo.errors import DyTopoError
from dytopo.service._mcp_stdio import MAX_MESSAGE_BYTES
from dytopo.service.models import RunInfo, RunRequest
from dytopo.service.runs import RunService
from dytopo.versions import __version__

__all__ = ["REPLY_WITHIN_S", "build_mcp", "mcp_http_app"]

T = TypeVar("T")

REPLY_WITHIN_S = 50.0
"""Under the 60 s a TypeScript-SDK client (AnythingLLM) waits for a tool call by default."""
MAX_SESSIONS = 100
"""Open HTTP sessions at once; one more is refused (503) until one ends or expires."""
SESSION_IDLE_S = 15 * 60.0
"""An HTTP session with no request for this long is closed (a client then opens a new one)."""

_TERMINAL = frozenset({"succeeded", "failed", "cancelled", "interrupted"})
_LOOPBACK = ("127.0.0.1", "localhost", "::1")

INSTRUCTIONS = (
    "DyTopo runs a swarm of LLM agents (researcher, analyst, critic, writer, ...) that talk over "
    "a graph rebuilt every round, on a local model. Hand it a hard, self-contained task with "
    "run_swarm; it answers with the swarm's final answer. A long run may answer first with its "
    "run id: then call get_run with that id for the answer."
)


async def _service_call(call: Awaitable[T]) -> T:
    """A refusal the caller can act on (bad topology, full queue) is a tool error, one line."""
    try:
        return await call
    except DyTopoError as exc:
        raise ToolError(" ".join(str(exc).split()) or type(exc).__name__) from exc


def _request(**fields: Any) -> RunRequest:
    """The service request, or a one-line tool error naming each bad field (a bare
    ValidationError reached the client as "Error executing tool" and a traceback in the log)."""
    try:
        return RunRequest(**fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        raise ToolError(f"bad request: {problems}") from None


def _edges(event: dict[str, Any]) -> str:
    edges = event.get("edges") or []
    shown = ", ".join(f"{e['source']} -> {e['target']}" for e in edges[:8])
    more = f" (+{len(edges) - 8} more)" if len(edges) > 8 else ""
    return (shown + more) or "no messages"


async def _follow(service: RunService, info: RunInfo, ctx: Context[Any, Any]) -> RunInfo:
    """Report each finished round as progress (round of max_rounds), until the run ends."""
    goal, talk = "", "no messages"
    async for _, event in service.events(info.id):
        kind = event.get("event")
        if kind == "round_start":
            goal, talk = str(event.get("goal", "")), "no messages"
        elif kind == "routing":
            talk = _edges(event)
        elif kind == "round_end":
            number = int(event["round"])
            message = f"round {number}/{info.max_rounds} done - goal: {goal[:160]}; {talk}"
            await ctx.report_progress(number, info.max_rounds, message)
    return await service.wait(info.id)


async def _wait_reporting(
    service: RunService,
    info: RunInfo,
    ctx: Context[Any, Any],
    within_s: float | None,
    *,
    owner: bool,
) -> RunInfo:
    """The run once it ended, or as it stands after `within_s`. A cancelled call cancels the
    run only when the call is its `owner` (the run_swarm that started it), never a reader."""
    try:
        with anyio.move_on_after(within_s):
            return await _follow(service, info, ctx)
        return service.get(info.id)
    except BaseException:
        if owner and service.get(info.id).status not in _TERMINAL:
            with anyio.CancelScope(shield=True):
                await service.cancel(info.id)
        raise


def _answer(info: RunInfo) -> str:
    if info.status not in _TERMINAL:
        return (
            f"The swarm is still working on it (run {info.id}: {info.progress}). The answer is "
            f'not ready yet: call get_run with id "{info.id}" to wait for it.'
        )
    if info.status != "succeeded":
        why = f": {info.error}" if info.error else ""
        hint = f" Resume it: POST /v1/runs/{info.id}/resume." if info.resumable else ""
        raise ToolError(f"run {info.id} {info.status}{why}.{hint}")
    if info.final_answer:
        return info.final_answer
    return f"The swarm ended without a final answer ({info.halt_reason or 'no reason given'})."


def build_mcp(service: RunService, *, reply_within_s: float | None = REPLY_WITHIN_S) -> MCPServer:
    """The MCP server for `service`; `reply_within_s=None` waits for every run to end."""
    server: MCPServer = MCPServer(
        "dytopo", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING"
    )

    run_tool = server.tool(
        description=(
            "Hand a hard task to a swarm of LLM agents and get its final answer. Progress is "
            "reported once per round. If the run takes longer than the call may wait, the "
            "answer names the run: call get_run with its id."
        ),
        annotations=ToolAnnotations(read_only_hint=False, open_world_hint=False),
        structured_output=False,
    )

    async def run_swarm(
        task: Annotated[
            str,
            Field(
                min_length=1,
                max_length=20_000,
                description="The task, self-contained: the agents see nothing else.",
            ),
        ],
        ctx: Context[Any, Any],
        topology: Annotated[
            str | None,
            Field(
                max_length=64,
                description="A topology name from list_topologies (default: research).",
            ),
        ] = None,
        max_rounds: int | None = None,  # its schema: below
    ) -> str:
        overrides: dict[str, Any] = {} if max_rounds is None else {"max_rounds": max_rounds}
        request = _request(task=task, topology=topology, overrides=overrides)
        info = await _service_call(service.submit(request))
        return _answer(await _wait_reporting(service, info, ctx, reply_within_s, owner=True))

    # The bound is the service's own cap (known only now), so a client is never offered a
    # number of rounds the service then refuses.
    cap = service.settings.max_rounds
    run_swarm.__annotations__["max_rounds"] = Annotated[
        int | None, Field(ge=1, le=cap, description=f"At most this many rounds (1-{cap}).")
    ]
    run_tool(run_swarm)

    @server.tool(
        description="The swarm topologies run_swarm can use: name, description, agents, rounds.",
        annotations=ToolAnnotations(read_only_hint=True),
    )
    async def list_topologies() -> list[dict[str, Any]]:
        return await _service_call(anyio.to_thread.run_sync(service.topologies))

    @server.tool(
        description=(
            "A run's status, progress, rounds (goal and who talked to whom) and final answer. "
            "If the run is still going, waits a while for it to end first."
        ),
        annotations=ToolAnnotations(read_only_hint=True),
    )
    async def get_run(
        id: Annotated[str, Field(description="The run id run_swarm named.")],
        ctx: Context[Any, Any],
    ) -> Annotated[CallToolResult, RunInfo]:
        try:
            info = service.get(id)
        except KeyError:
            raise ToolError(f"no run with id {id!r}: run ids come from run_swarm") from None
        if info.status not in _TERMINAL:
            info = await _wait_reporting(service, info, ctx, reply_within_s, owner=False)
        text = info.final_answer if info.status == "succeeded" and info.final_answer else None
        summary = text or f"run {info.id}: {info.status}; {info.progress}" + (
            f"; error: {info.error}" if info.error else ""
        )
        return CallToolResult(
            content=[TextContent(type="text", text=summary)],
            structured_content=info.model_dump(mode="json"),
        )

    return server


class _Bearer:
    """401 unless the request carries `Authorization: Bearer <token>` (constant-time compare)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                body = b'{"detail": "missing or wrong bearer token"}'
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def mcp_http_app(
    service: RunService,
    *,
    token: str | None = None,
    reply_within_s: float | None = REPLY_WITHIN_S,
    path: str = "/mcp",
    max_sessions: int = MAX_SESSIONS,
    session_idle_s: float = SESSION_IDLE_S,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> Starlette:
    """Streamable HTTP at `path`, for `dytopo serve` (with its token, if it has one).

    Without a token (loopback only), Host and Origin must name the loopback: a web page that
    rebinds its DNS name to 127.0.0.1 cannot drive the swarm. With a token, the token is the
    check, and any Host may reach it (AnythingLLM in Docker calls host.docker.internal).
    A body over `max_message_bytes` is refused (413) before it is parsed; at most
    `max_sessions` sessions are open, each closed after `session_idle_s` without a request.
    """
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    if token is None:
        security = TransportSecuritySettings(
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        )
    server = build_mcp(service, reply_within_s=reply_within_s)
    app = server.streamable_http_app(
        streamable_http_path=path,
        transport_security=security,
        max_request_body_size=max_message_bytes,
        session_idle_timeout=session_idle_s,
        max_sessions=max_sessions,
    )
    if token is not None:
        app.add_middleware(_Bearer, token=token)
    return app
