"""A pooled batch in numbers: per mode (runs, ok, tokens, wall time), per server (runs served,
the most requests in flight seen), and the batch's throughput."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import BaseModel, Field
from rich import box
from rich.console import Group
from rich.table import Table

from dytopo.batch.models import RunRecord
from dytopo.batch.pool import ServerStats
from dytopo.batch.store import latest


class ModeRow(BaseModel):
    """One mode over the batch's items (the latest record of each)."""

    mode: str
    runs: int
    ok: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    tokens_per_run: float
    wall_s_per_run: float


class BatchSummary(BaseModel):
    """What `dytopo batch` prints at the end (`--json`: this, as JSON)."""

    out: str
    records: str
    tasks: int
    runs: int
    """Runs of this batch on record (every item in every mode, when it completed)."""
    skipped: int
    """Runs already on record when this invocation started (not run again)."""
    ran: int
    """Runs this invocation finished."""
    wall_s: float
    """This invocation's time from the first run's start to the last run's end."""
    runs_per_minute: float
    """`ran` over `wall_s`."""
    modes: list[ModeRow] = Field(default_factory=list)
    servers: list[ServerStats] = Field(default_factory=list)


def mode_rows(records: Iterable[RunRecord], modes: Sequence[str]) -> list[ModeRow]:
    kept = list(latest(list(records)).values())
    rows = []
    for mode in modes:
        runs = [r for r in kept if r.mode == mode]
        prompt = sum(r.usage.prompt_tokens for r in runs)
        completion = sum(r.usage.completion_tokens for r in runs)
        rows.append(
            ModeRow(
                mode=mode,
                runs=len(runs),
                ok=sum(1 for r in runs if r.ok),
                failed=sum(1 for r in runs if not r.ok),
                prompt_tokens=prompt,
                completion_tokens=completion,
                tokens_per_run=round((prompt + completion) / len(runs), 1) if runs else 0.0,
                wall_s_per_run=round(sum(r.wall_s for r in runs) / len(runs), 2) if runs else 0.0,
            )
        )
    return rows


def tables(summary: BatchSummary) -> Group:
    """The summary as two terminal tables: per mode, per server."""
    by_mode = Table(
        title=f"{summary.tasks} tasks; {summary.ran} runs in {summary.wall_s:.1f} s "
        f"({summary.runs_per_minute:.2f} runs/min), {summary.skipped} already done",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    by_mode.add_column("mode")
    for name in ("runs", "ok", "failed", "prompt\ntokens", "generated\ntokens"):
        by_mode.add_column(name, justify="right")
    by_mode.add_column("tokens\nper run", justify="right")
    by_mode.add_column("wall s\nper run", justify="right")
    for row in summary.modes:
        by_mode.add_row(
            row.mode,
            str(row.runs),
            str(row.ok),
            str(row.failed),
            f"{row.prompt_tokens:,}",
            f"{row.completion_tokens:,}",
            f"{row.tokens_per_run:,.0f}",
            f"{row.wall_s_per_run:.1f}",
        )
    by_server = Table(box=box.SIMPLE_HEAD)
    by_server.add_column("server")
    for name in ("slots", "slots\nper run", "runs", "runs at\nonce (max)", "in flight\n(max)"):
        by_server.add_column(name, justify="right")
    by_server.add_column("state")
    for s in summary.servers:
        moved = f", {s.moved_off} runs moved off" if s.moved_off else ""
        by_server.add_row(
            s.server,
            str(s.slots),
            str(s.per_run),
            str(s.runs),
            str(s.max_runs_at_once),
            "?" if s.max_in_flight is None else str(s.max_in_flight),
            ("alive" if s.alive else "dead") + moved,
        )
    return Group(by_mode, by_server)
