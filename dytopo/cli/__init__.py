"""The `dytopo` command line."""

from __future__ import annotations

import typer

from dytopo.cli import backend, doctor
from dytopo.cli._common import setup

app = typer.Typer(
    name="dytopo",
    help="Multi-agent LLM swarms with a communication graph rebuilt every round.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress events to stderr."),
    debug: bool = typer.Option(False, "--debug", help="Debug logs, and tracebacks on errors."),
) -> None:
    setup(verbose, debug)


app.command("doctor")(doctor.doctor)
app.add_typer(backend.app, name="backend")


def main() -> None:
    app()
