"""What every command shares: one-line errors, exit codes, logging flags."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from dytopo.logs import configure_logging

T = TypeVar("T")

out = Console()
err = Console(stderr=True)


class State:
    debug = False


def setup(verbose: bool, debug: bool) -> None:
    State.debug = debug
    configure_logging("debug" if debug else "info" if verbose else "warning")


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; Ctrl-C exits 130 after everything was cleaned up."""
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None
