"""Options that several commands share: one definition, one help text."""

from __future__ import annotations

import typer

from dytopo.cli._common import TRUST_HELP

BACKEND_URL = typer.Option(
    None, "--backend-url", help="LLM server root (default: $DYTOPO_BASE_URL, else embedded)."
)
EMBED_URL = typer.Option(
    None,
    "--embed-url",
    help="Embedding server root (default: $DYTOPO_EMBED_URL, else the embedded MiniLM server, "
    "else the LLM server).",
)
JSON = typer.Option(False, "--json", help="Print one JSON object, no progress.")
QUIET = typer.Option(
    False, "--quiet", "-q", help="No live progress view (the result is still printed)."
)
TRUST = typer.Option(False, "--trust-topology", help=TRUST_HELP)
REPORT = typer.Option(
    False,
    "--report",
    help="Also write the run's HTML report (beside the trace, .html), however the run ends; "
    "see `dytopo report`.",
)
REPORT_TO = typer.Option(
    None,
    "--report-to",
    metavar="PATH",
    help="Write the HTML report to this file (implies --report).",
)
