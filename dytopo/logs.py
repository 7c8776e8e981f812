"""structlog setup: key-value events to stderr, quiet by default."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level: str = "warning", *, json: bool = False) -> None:
    """Route DyTopo's events to stderr at `level` (debug, info, warning, error)."""
    numeric = logging.getLevelName(level.upper())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S"),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # Looked up per call: sys.stderr may be swapped (pytest, CliRunner) after setup.
        logger_factory=lambda *args: structlog.PrintLogger(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
