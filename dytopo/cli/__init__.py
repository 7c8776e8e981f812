"""The `dytopo` command line: the typer app, its commands and their terminal output."""

from __future__ import annotations

import logging
import signal
import sys

import typer

from dytopo.cli import backend, doctor, mcp, plan, report, resume, run, runs, serve, skill, tools
from dytopo.cli import batch as batch_cli
from dytopo.cli import compare as compare_cli
from dytopo.cli import eval as eval_cli
from dytopo.cli import init as init_cli
from dytopo.cli._common import State, error_line, setup
from dytopo.errors import ConfigError, DyTopoError

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


app.command("run")(run.run)
app.command("validate")(run.validate)
app.command("init")(init_cli.init)
app.command("eval")(eval_cli.eval_command)
app.command("batch")(batch_cli.batch_command)
app.command("compare")(compare_cli.compare)
app.command("schema")(run.schema)
app.command("plan")(plan.plan)
app.command("runs")(runs.runs)
app.command("resume")(resume.resume)
app.command("doctor")(doctor.doctor)
app.command("mcp")(mcp.mcp)
app.command("serve")(serve.serve)
app.command("report")(report.report)
app.add_typer(backend.app, name="backend")
app.add_typer(tools.app, name="tools")
app.add_typer(skill.app, name="skill")


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM is Ctrl-C: inside asyncio.run, SIGINT cancels the run's task (in-flight requests
    end at once, the checkpoint keeps the last complete round). Raising KeyboardInterrupt here
    would hit whichever task runs, and asyncio would print its traceback."""
    if callable(signal.getsignal(signal.SIGINT)):
        signal.raise_signal(signal.SIGINT)
    else:  # SIGINT ignored (a background job): still stop
        raise KeyboardInterrupt


class _QuietInterrupt(logging.Filter):
    """A second Ctrl-C lands inside a task; asyncio then logs "Task exception was never
    retrieved" with a traceback. The user asked to stop: `interrupted` says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return State.debug or not isinstance(error, KeyboardInterrupt)


def main() -> None:
    """Entry point: DyTopo errors become one clear line (per problem) and a non-zero exit."""
    # SIGTERM (systemd, docker stop, kill) unwinds like Ctrl-C: servers stop, the trace ends.
    signal.signal(signal.SIGTERM, _interrupt)
    logging.getLogger("asyncio").addFilter(_QuietInterrupt())
    try:
        app()
    except DyTopoError as exc:
        if State.debug:
            raise
        for line in str(exc).splitlines() or [type(exc).__name__]:
            error_line(line)
        sys.exit(2 if isinstance(exc, ConfigError) else 1)
    except Exception as exc:  # a bug: still one line; --debug shows the traceback
        if State.debug:
            raise
        first = (str(exc).splitlines() or [""])[0][:300]
        error_line(f"unexpected {type(exc).__name__}: {first} (rerun with --debug and report it)")
        sys.exit(1)
