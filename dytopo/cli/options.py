"""Options that several commands share: one definition, one help text."""

from __future__ import annotations

import typer

from dytopo.cli._common import TRUST_HELP
from dytopo.errors import ConfigError, ManagedServerError
from dytopo.managed.models import embedded_model, known


def _known_model(name: str | None) -> str | None:
    """Refuse an unknown --model before anything starts (even when a configured server would
    make it moot: a typo is a typo)."""
    if name is not None:
        try:
            embedded_model(name)
        except ManagedServerError:
            raise ConfigError(
                f"--model {name!r} is not an embedded model; choose one of {known()}"
            ) from None
    return name


BACKEND_URL = typer.Option(
    None, "--backend-url", help="LLM server root (default: $DYTOPO_BASE_URL, else embedded)."
)
EMBED_URL = typer.Option(
    None,
    "--embed-url",
    help="Embedding server root (default: $DYTOPO_EMBED_URL, else the embedded MiniLM server, "
    "else the LLM server).",
)
_MODEL_HELP = (
    f"Chat model of the embedded server, used only when one is started (no server given): "
    f"{known()}."
)
MODEL = typer.Option(
    None,
    "--model",
    metavar="NAME",
    callback=_known_model,
    help=f"{_MODEL_HELP} Default: the topology's backend.model, else $DYTOPO_MODEL.",
)
SERVER_MODEL = typer.Option(
    None,
    "--model",
    metavar="NAME",
    callback=_known_model,
    help=f"{_MODEL_HELP} Default: $DYTOPO_MODEL.",
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
