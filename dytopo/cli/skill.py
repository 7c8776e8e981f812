"""`dytopo skill export`: install the AnythingLLM agent skill."""

from __future__ import annotations

from pathlib import Path

import typer

from dytopo.cli._common import out
from dytopo.skill import export_skill

app = typer.Typer(help="The AnythingLLM agent skill (dytopo-swarm).", no_args_is_help=True)


@app.command("export")
def export(
    dest: Path = typer.Argument(
        ...,
        help="AnythingLLM's plugins/agent-skills folder (in Docker: STORAGE_DIR/plugins/...).",
    ),
    url: str | None = typer.Option(
        None, help="Service URL preset (default http://host.docker.internal:8765)."
    ),
    token: str | None = typer.Option(
        None, envvar="DYTOPO_TOKEN", help="Service token preset (default: $DYTOPO_TOKEN)."
    ),
    topology: str | None = typer.Option(None, help="Default topology preset (default research)."),
    timeout: float | None = typer.Option(
        None, "--timeout", help="Overall deadline in seconds preset (default 1800)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing, different folder."),
) -> None:
    """Write DEST/dytopo-swarm (plugin.json, handler.js, README.md) for AnythingLLM to load."""
    target = export_skill(
        dest, url=url, token=token, topology=topology, timeout_s=timeout, force=force
    )
    out.print(f"skill ready: {target}", highlight=False, soft_wrap=True, markup=False)
    out.print(
        "next: in AnythingLLM open Settings -> Agent Skills, check dytopo-swarm is on and its "
        "DYTOPO_URL/DYTOPO_TOKEN; start the service with `dytopo serve`; then ask in a chat: "
        "@agent ask the dytopo swarm to ...",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
