"""Progress over the runs of a batch or an eval: a bar in a terminal, a line per run (stderr)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from dytopo.batch import BatchItem, RunRecord
from dytopo.batch.pool import PoolServer
from dytopo.routing.config import Mode


def run_verdict(record: RunRecord) -> str:
    return "ok" if record.ok else f"error: {record.error}"


class RunsProgress:
    """A bar over `total` runs in a terminal (gone when stopped, so error lines stay clear),
    and a line per finished or moved run on any console. `verdict` says how a run ended."""

    def __init__(
        self, console: Console, total: int, verdict: Callable[[RunRecord], str] = run_verdict
    ) -> None:
        self.console, self.total, self.done, self.verdict = console, total, 0, verdict
        self.bar: Progress | None = None
        self.task: Any = None
        if console.is_terminal:
            self.bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self.task = self.bar.add_task("starting", total=total)
            self.bar.start()

    def _line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def start(self, item: BatchItem, mode: str, server: PoolServer | None = None) -> None:
        if self.bar is not None:
            where = f" on {escape(server.name)}" if server is not None else ""
            self.bar.update(self.task, description=f"{escape(item.id)} [cyan]{mode}[/]{where}")

    def finished(self, record: RunRecord) -> None:
        self.done += 1
        where = f" on {record.server}" if record.server else ""
        tokens = record.usage.prompt_tokens + record.usage.completion_tokens
        self._line(
            f"[{self.done}/{self.total}] {record.item} {record.mode}{where}: "
            f"{self.verdict(record)[:160]} "
            f"({record.rounds} rounds, {tokens:,} tokens, {record.wall_s:.1f} s)"
        )
        if self.bar is not None:
            self.bar.advance(self.task)

    def moved(self, item: BatchItem, mode: Mode, server: PoolServer, error: str) -> None:
        self._line(
            f"{item.id} {mode}: {server.name} stopped answering ({error[:120]}); the run goes "
            "on from its checkpoint on another server"
        )

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
