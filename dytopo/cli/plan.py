"""`dytopo plan`: every agent's context and output budget, before anything runs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from dytopo.backends.llamacpp import LlamaCppBackend
from dytopo.budget.plan import BudgetPlan, kv_layout, plan_budgets, plan_for_server
from dytopo.cli import options
from dytopo.cli._common import check_urls, error_line, out, run_async
from dytopo.cli._terminal import json_text
from dytopo.loader import load_topology
from dytopo.managed.resolve import endpoints, own_server
from dytopo.topology import Topology


async def _from_server(topology: Topology, url: str | None, model: str | None) -> BudgetPlan:
    chat = url or topology.backend.base_url
    async with endpoints(chat, model=model or topology.backend.model) as ends:
        settings = topology.backend.model_copy(update={"base_url": ends.chat_url})
        async with LlamaCppBackend(settings) as backend:
            info = await backend.connect()
        layout = kv_layout(settings.kv_unified, own_server(ends.chat_url, info.model))
    return plan_for_server(topology, info.n_ctx_per_slot, info.slots, layout)


def plan(
    topology: Path = typer.Argument(..., help="Topology YAML."),
    n_ctx: int | None = typer.Option(
        None, "--n-ctx", min=256, help="Plan for a server with this --ctx-size (no server needed)."
    ),
    slots: int | None = typer.Option(None, "--slots", min=1, help="...and this many slots (-np)."),
    kv_unified: bool = typer.Option(False, "--kv-unified", help="...started with --kv-unified."),
    backend_url: str | None = typer.Option(None, "--backend-url", help="Read a running server."),
    model: str | None = options.MODEL,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    trust_topology: bool = options.TRUST,
) -> None:
    """Show each agent's budgets; exit 2 naming the budget to lower when they do not fit."""
    loaded = load_topology(topology, trust_topology=trust_topology)
    if (n_ctx is None) != (slots is None):
        error_line("give both --n-ctx and --slots, or neither (to ask the server)")
        raise typer.Exit(2)
    if n_ctx is not None and slots is not None:
        result = plan_budgets(
            loaded,
            n_ctx=n_ctx,
            slots=slots,
            kv_unified=kv_unified or bool(loaded.backend.kv_unified),
        )
    else:
        check_urls(backend_url or loaded.backend.base_url)
        result = run_async(_from_server(loaded, backend_url, model))
    if as_json:
        print(json_text(result.model_dump(mode="json"), indent=2))
    else:
        table = Table(
            title=(
                f"{loaded.name}: n_ctx {result.n_ctx}, {result.slots} slots, "
                f"{result.request_limit} tokens per request"
                + (" (unified KV)" if result.kv_unified else "")
            ),
            caption=f"KV cache: {result.kv_layout}" if result.kv_layout else None,
        )
        for column in ("agent", "context budget", "max output", "prompt room", "set by"):
            table.add_column(column, justify="left" if column in ("agent", "set by") else "right")
        for b in result.agents:
            table.add_row(
                b.agent,
                str(b.context_budget),
                str(b.max_output_tokens),
                str(b.context_budget - b.max_output_tokens),
                "budget.context" if b.explicit else "weight",
            )
        out.print(table)
    for problem in result.problems:
        error_line(f"{topology}: {problem}")
    if not result.fits:
        raise typer.Exit(2)
