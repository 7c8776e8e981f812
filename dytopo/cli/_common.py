"""What every command shares: one-line errors, exit codes, logging flags, option checks."""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import typer
from rich.markup import escape

from dytopo.backends.settings import url_problem
from dytopo.cli._terminal import SafeConsole
from dytopo.errors import ConfigError
from dytopo.logs import configure_logging

T = TypeVar("T")

# Model text, task ids and tool output reach the terminal through these: no escape codes.
out = SafeConsole()
err = SafeConsole(stderr=True)

TRUST_HELP = (
    "The topology file is yours: load its tool_modules (Python code that runs with your rights) "
    "and role cards from anywhere, not only from its folder tree and installed entry points."
)


class State:
    debug = False


def setup(verbose: bool, debug: bool) -> None:
    State.debug = debug
    configure_logging("debug" if debug else "info" if verbose else "warning")


def error_line(message: str) -> None:
    """Print one `error:` line; the message is text, never rich markup."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    error_line(message)
    raise typer.Exit(code)


def check_urls(backend_url: str | None, embed_url: str | None = None) -> None:
    """Refuse a server root that can never work before anything connects (or retries): each
    flag, else the environment variable it falls back to."""
    for flag, env, value in (
        ("--backend-url", "DYTOPO_BASE_URL", backend_url),
        ("--embed-url", "DYTOPO_EMBED_URL", embed_url),
    ):
        where, url = (flag, value) if value else (f"${env}", os.environ.get(env))
        problem = url_problem(url) if url else None
        if problem:
            raise ConfigError(f"{where}: {problem}")


def check_seconds(flag: str, value: float) -> None:
    """A time limit must be a positive, finite number of seconds."""
    if not (math.isfinite(value) and 0 < value <= 86_400):
        raise ConfigError(f"{flag} {value}: give a number of seconds between 0 and 86400")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; Ctrl-C exits 130 after everything was cleaned up."""
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None
