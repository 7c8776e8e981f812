"""`dytopo backend start|stop|status`: the embedded server, kept running between runs."""

from __future__ import annotations

import typer

from dytopo.cli import options
from dytopo.cli._common import out, run_async
from dytopo.managed.resolve import (
    BackgroundState,
    read_background,
    start_background,
    stop_background,
)
from dytopo.managed.server import DEFAULT_CTX_PER_SLOT, DEFAULT_SLOTS

app = typer.Typer(
    help="Start, stop or inspect the embedded llama-server in the background.", no_args_is_help=True
)


@app.command()
def start(
    slots: int = typer.Option(DEFAULT_SLOTS, min=1, help="Parallel slots of the chat server."),
    ctx_per_slot: int = typer.Option(
        DEFAULT_CTX_PER_SLOT, min=512, help="Context tokens per slot."
    ),
    model: str | None = options.SERVER_MODEL,
) -> None:
    """Start the embedded chat and embedding servers; later runs reuse them."""
    state = run_async(start_background(model=model, slots=slots, ctx_per_slot=ctx_per_slot))
    _show(state)


def _show(state: BackgroundState) -> None:
    model = f", {state.model}" if state.model else ""
    out.print(f"chat  {state.chat_url} (pid {state.chat_pid}{model})", markup=False)
    out.print(f"embed {state.embed_url} (pid {state.embed_pid})", markup=False)


@app.command()
def stop() -> None:
    """Stop the background servers."""
    outcome = stop_background()
    if outcome == "stopped":
        out.print("stopped")
    elif outcome == "gone":
        out.print(
            "the recorded servers had already exited (their pids were not signalled: they may "
            "belong to other programs now); removed the stale record"
        )
    else:
        out.print("nothing was running")


@app.command()
def status() -> None:
    """Show whether the background servers are running."""
    state = read_background()
    if state is None:
        out.print(
            "not running (runs start a temporary embedded server; `dytopo backend start` keeps one)"
        )
        raise typer.Exit(1)
    _show(state)
