"""`dytopo serve`: the HTTP service (runs, events, topologies, MCP at /mcp) on uvicorn."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from types import FrameType

import typer
from pydantic import ValidationError

from dytopo.cli import options
from dytopo.cli._common import check_urls, err, run_async
from dytopo.errors import ConfigError
from dytopo.service.settings import EXTRA, ServiceSettings

_EXTRA_MODULES = {"mcp", "mcp_types", "fastapi", "starlette", "uvicorn", "h11", "anyio", "httpx2"}
GRACE_S = 5
"""Seconds open connections (event streams) get to end once every run has stopped."""


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to bind; beyond loopback needs a token."),
    port: int = typer.Option(8765, min=0, max=65535, help="Port (0: any free port)."),
    token: str | None = typer.Option(
        None, envvar="DYTOPO_TOKEN", help="Bearer token callers must send (default: $DYTOPO_TOKEN)."
    ),
    topologies: Path = typer.Option(
        Path("topologies"), "--topologies", help="The only folder topology names resolve in."
    ),
    runs: Path = typer.Option(
        Path("runs/service"), "--runs", help="Folder for the runs' records, traces, checkpoints."
    ),
    max_running: int = typer.Option(1, "--max-running", min=1, help="Runs at once."),
    max_queued: int = typer.Option(16, "--max-queued", min=0, help="Runs waiting, at most."),
    max_agents: int = typer.Option(
        16, "--max-agents", min=1, help="Most agents of a caller's inline topology."
    ),
    max_rounds: int = typer.Option(
        10, "--max-rounds", min=1, help="Most rounds a caller may ask for."
    ),
    keep_runs: int = typer.Option(
        500, "--keep-runs", min=1, help="Finished runs kept; older ones are deleted."
    ),
    max_connections: int = typer.Option(
        64, "--max-connections", min=1, help="Open HTTP connections served at once."
    ),
    backend_url: str | None = typer.Option(
        None, "--backend-url", help="LLM server root (default: $DYTOPO_BASE_URL, else embedded)."
    ),
    embed_url: str | None = typer.Option(
        None,
        "--embed-url",
        help="Embedding server root (default: $DYTOPO_EMBED_URL, else embedded).",
    ),
    model: str | None = options.SERVER_MODEL,
) -> None:
    """Serve swarm runs over HTTP (OpenAPI docs at /docs) and MCP (at /mcp). Ctrl-C stops the
    runs (they become interrupted and can be resumed) and the servers it started."""
    try:
        settings = ServiceSettings(
            host=host,
            port=port,
            token=token,
            topologies_dir=topologies,
            runs_dir=runs,
            max_running=max_running,
            max_queued=max_queued,
            max_agents=max_agents,
            max_rounds=max_rounds,
            keep_runs=keep_runs,
            max_connections=max_connections,
            backend_url=backend_url,
            embed_url=embed_url,
            model=model,
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise ConfigError(f"--{first['loc'][0]}: {first['msg']}") from None
    settings.check()  # before any server starts
    check_urls(backend_url, embed_url)
    if not topologies.is_dir():
        raise ConfigError(f"--topologies {topologies}: no such folder (give the topologies folder)")
    try:
        import uvicorn

        from dytopo.service.app import create_app
        from dytopo.service.runs import RunService
        from dytopo.service.server import open_files_needed, raise_open_file_limit, server_config
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] in _EXTRA_MODULES:
            raise ConfigError(EXTRA) from None
        raise

    class Server(uvicorn.Server):
        """Ctrl-C or SIGTERM stops the runs first: event streams and ?wait=true requests then
        end, instead of holding the shutdown until their runs finish."""

        def __init__(self, config: uvicorn.Config, service: RunService) -> None:
            super().__init__(config)
            self.service, self.loop = service, asyncio.get_running_loop()

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:  # the port it got (--port 0 picks one)
                bound = self.servers[0].sockets[0].getsockname()
                url = f"http://{_shown(bound[0])}:{bound[1]}"
                err.print(
                    f"dytopo serve: listening on {url} (API docs at {url}/docs, MCP at {url}/mcp)",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            self.loop.call_soon_threadsafe(self.service.stop_runs)

    raise_open_file_limit(open_files_needed(settings))
    # Bound before any server starts: a port in use is one line, not a started embedded stack.
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host.strip("[]"), port), family=family)
    except OSError as exc:
        why = os.strerror(exc.errno or 0)
        raise ConfigError(
            f"cannot listen on {_shown(host)}:{port}: {why} (another dytopo serve? pick another "
            "--port)"
        ) from None

    async def main() -> None:
        async with RunService(settings) as service:
            config = server_config(
                create_app(service),
                settings,
                log_level="warning",
                timeout_graceful_shutdown=GRACE_S,
            )
            await Server(config, service).serve(sockets=[sock])

    with sock:
        run_async(main())


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host else host
