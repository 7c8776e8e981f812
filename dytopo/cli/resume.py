"""`dytopo resume RUN`: continue a stopped run from its last complete round."""

from __future__ import annotations

from pathlib import Path

import typer

from dytopo.cli import options
from dytopo.cli._common import check_urls, err
from dytopo.cli.progress import RoundProgress
from dytopo.cli.run import show_run
from dytopo.runner import aresume
from dytopo.swarm.checkpoint import find_checkpoint, read_checkpoint


def resume(
    run: str = typer.Argument(
        ..., help="A run id (see `dytopo runs`), a trace path or a checkpoint path."
    ),
    force: bool = typer.Option(
        False, "--force", help="Resume even though the topology file changed since the run began."
    ),
    backend_url: str | None = options.BACKEND_URL,
    embed_url: str | None = options.EMBED_URL,
    model: str | None = options.MODEL,
    runs_dir: Path = typer.Option(Path("runs"), "--dir", help="Where run ids are looked up."),
    as_json: bool = options.JSON,
    quiet: bool = options.QUIET,
    trust_topology: bool = options.TRUST,
    report: bool = options.REPORT,
    report_to: Path | None = options.REPORT_TO,
) -> None:
    """Continue a run that stopped (Ctrl-C, a dead server, a crash) from its last complete
    round; its trace goes on in the same file. Prints the final answer like `dytopo run`."""
    check_urls(backend_url, embed_url)
    # Read here too (aresume reads it again): the progress view needs the agents up front.
    cp = read_checkpoint(find_checkpoint(run, runs_dir))
    show_run(
        lambda observers: aresume(
            run,
            backend_url=backend_url,
            embed_url=embed_url,
            force=force,
            observers=observers,
            runs_dir=runs_dir,
            trust_topology=trust_topology,
            model=model,
        ),
        trace=Path(cp.trace_path) if cp.trace_path else None,
        as_json=as_json,
        quiet=quiet,
        progress=RoundProgress(err, agents=cp.state.agents),
        report=report_to,
        want_report=report or report_to is not None,
    )
