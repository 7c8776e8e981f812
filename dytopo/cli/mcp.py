"""`dytopo mcp`: the swarm as an MCP server on stdin/stdout, for MCP clients that start it."""

from __future__ import annotations

from pathlib import Path

import typer

from dytopo.cli import options
from dytopo.cli._common import check_seconds, check_urls, run_async
from dytopo.errors import ConfigError

EXTRA = "dytopo mcp needs the serve extra: pip install 'dytopo[serve]'"
_EXTRA_MODULES = {"mcp", "mcp_types", "fastapi", "starlette", "uvicorn", "anyio", "httpx2"}


def mcp(
    topologies: Path = typer.Option(
        Path("topologies"),
        "--topologies",
        help="Folder of topology files run_swarm may name (an MCP client may start this command "
        "in any folder: give an absolute path).",
    ),
    runs: Path = typer.Option(
        Path("runs/service"), "--runs", help="Folder for the runs' records and traces."
    ),
    max_running: int = typer.Option(1, "--max-running", min=1, help="Runs at once."),
    max_queued: int = typer.Option(16, "--max-queued", min=0, help="Runs waiting, at most."),
    backend_url: str | None = typer.Option(
        None, "--backend-url", help="LLM server root (default: $DYTOPO_BASE_URL, else embedded)."
    ),
    embed_url: str | None = typer.Option(
        None,
        "--embed-url",
        help="Embedding server root (default: $DYTOPO_EMBED_URL, else embedded).",
    ),
    model: str | None = options.SERVER_MODEL,
    reply_within: float = typer.Option(
        50.0,
        "--reply-within",
        help="Seconds a tool call waits for its run before it answers with the run id (the run "
        "goes on; get_run fetches the answer). 0: wait until the run ends.",
    ),
) -> None:
    """Serve run_swarm, list_topologies and get_run over MCP (stdio)."""
    check_urls(backend_url, embed_url)
    if reply_within != 0:
        check_seconds("--reply-within", reply_within)
    try:
        from dytopo.service._mcp_stdio import run_stdio
        from dytopo.service.mcp import build_mcp
        from dytopo.service.runs import RunService
        from dytopo.service.settings import ServiceSettings
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] in _EXTRA_MODULES:
            raise ConfigError(EXTRA) from None
        raise
    settings = ServiceSettings(
        topologies_dir=topologies,
        runs_dir=runs,
        max_running=max_running,
        max_queued=max_queued,
        backend_url=backend_url,
        embed_url=embed_url,
        model=model,
    )

    async def serve() -> None:
        async with RunService(settings) as service:
            server = build_mcp(service, reply_within_s=reply_within or None)
            await run_stdio(server)  # the SDK stdio transport, with a cap on one message

    run_async(serve())
