"""`dytopo doctor`."""

from __future__ import annotations

import typer
from rich.table import Table

from dytopo.cli import options
from dytopo.cli._common import check_urls, out, run_async
from dytopo.cli._terminal import json_text
from dytopo.doctor import DoctorReport, embedded_check, embedded_status, run_doctor
from dytopo.managed.resolve import endpoints


async def _doctor(url: str | None, embed_url: str | None, model: str | None) -> DoctorReport:
    async with endpoints(url, embed_url, model=model) as ends:
        report = await run_doctor(ends.chat_url, ends.embed_url, source=ends.source)
    # The model that ran, else the one a run without a configured server would start.
    report.embedded_model = embedded_status(ends.model or model)
    report.checks.append(embedded_check(report.embedded_model, in_use=ends.model is not None))
    return report


def doctor(
    backend_url: str | None = typer.Option(
        None,
        "--backend-url",
        help="Server root to check (default: $DYTOPO_BASE_URL, else embedded).",
    ),
    embed_url: str | None = typer.Option(
        None,
        "--embed-url",
        help="Embedding server root (default: $DYTOPO_EMBED_URL, else the chat server).",
    ),
    model: str | None = options.SERVER_MODEL,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Check a llama.cpp server (or the embedded one) and measure it; name the embedded chat
    model, its file and whether it is assembled."""
    check_urls(backend_url, embed_url)
    report = run_async(_doctor(backend_url, embed_url, model))
    if as_json:
        print(json_text(report.model_dump(mode="json"), indent=2))
    else:
        table = Table(title=f"dytopo doctor: {report.url} ({report.source})")
        table.add_column("check")
        table.add_column("result")
        table.add_column("detail / fix", overflow="fold")
        for c in report.checks:
            mark = (
                "[red]FAIL[/]" if not c.ok else "[yellow]warn[/]" if c.warning else "[green]ok[/]"
            )
            table.add_row(c.name, mark, c.detail + (f"\n[yellow]fix:[/] {c.fix}" if c.fix else ""))
        out.print(table)
        out.print("[green]all checks passed[/]" if report.ok else "[red]some checks failed[/]")
    if not report.ok:
        raise typer.Exit(1)
