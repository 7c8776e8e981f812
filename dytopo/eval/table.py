"""The eval's tables: per mode (terminal and Markdown) and per run, and the mode comparisons."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich import box
from rich.table import Table

from dytopo.batch import BatchItem, RunRecord, latest
from dytopo.eval.summary import ModeSummary, oracle_passed, passed, ratio, server_work, tokens

COLUMNS = (
    ("mode", "mode"),
    ("passed", "passed"),
    ("pass@1 [95% CI]", "pass@1 [95% CI]"),
    ("oracle", "oracle"),
    ("lost", "lost"),
    ("tokens\nmean", "tokens mean"),
    ("tokens\nmedian", "tokens median"),
    ("server work\nmean", "server work mean"),
    ("server work\nmedian", "server work median"),
    ("requests", "requests"),
    ("wall s\nmean", "wall s mean"),
    ("wall s\nmedian", "wall s median"),
    ("tokens\nx {base}", "tokens x {base}"),
    ("work\nx {base}", "server work x {base}"),
    ("failed\nruns", "failed runs"),
    ("no\ncode", "no code"),
)


def pass_cell(row: ModeSummary) -> str:
    """pass@1 and its interval: `72.5% [57.2, 83.9]`."""
    return f"{row.pass_at_1:.1%} [{row.pass_low * 100:.1f}, {row.pass_high * 100:.1f}]"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _cells(row: ModeSummary) -> list[str]:
    oracle = "-" if row.oracle_rate is None else f"{row.oracle_rate:.1%}"
    if row.oracle_rate is not None and row.oracle_checked < row.problems:
        oracle += f" of {row.oracle_checked}"
    return [
        row.mode,
        f"{row.passed}/{row.problems}",
        pass_cell(row),
        oracle,
        str(row.lost),
        f"{row.tokens:,.0f}",
        f"{row.tokens_median:,.0f}",
        f"{row.server_work:,.0f}",
        f"{row.server_work_median:,.0f}",
        f"{row.requests:.1f}",
        f"{row.wall_s:.1f}",
        f"{row.wall_s_median:.1f}",
        _times(row.tokens_x_base),
        _times(row.work_x_base),
        str(row.failures),
        str(row.no_code),
    ]


def table(rows: Sequence[ModeSummary], title: str = "", base: str = "plain") -> Table:
    """The summary as a terminal table (tokens, server work, requests and seconds per problem)."""
    view = Table(title=title or None, title_justify="left", box=box.SIMPLE_HEAD)
    for k, (name, _) in enumerate(COLUMNS):
        view.add_column(name.format(base=base), justify="left" if k == 0 else "right")
    for row in rows:
        view.add_row(*_cells(row))
    return view


def markdown(rows: Sequence[ModeSummary], base: str = "plain") -> str:
    """The summary as a Markdown table (for BENCHMARKS files)."""
    names = [name.format(base=base) for _, name in COLUMNS]
    lines = ["| " + " | ".join(names) + " |", "|---|" + "---:|" * (len(names) - 1)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def comparisons(records: Iterable[RunRecord], modes: Sequence[str]) -> list[str]:
    """Lines comparing modes on the problems both ran: dynamic against broadcast (does routing
    save tokens over sending everything to everyone?)."""
    kept = list(records)
    lines = []
    for mode, other in (("dynamic", "broadcast"),):
        if mode in modes and other in modes:
            by_tokens, shared = ratio(kept, mode, other, tokens)
            by_work, _ = ratio(kept, mode, other, server_work)
            if shared:
                lines.append(
                    f"{mode} vs {other} on the same {shared} problems: {_times(by_tokens)} "
                    f"tokens, {_times(by_work)} server work"
                )
    return lines


def _oracle_cell(record: RunRecord) -> str:
    verdict = oracle_passed(record)
    if verdict is None:
        return "-"
    if not verdict:
        return "fail"
    source = str(record.grade.get("oracle", {}).get("source", ""))
    return "pass" if source in ("", "final") else f"pass ({source})"


def runs_table(
    records: Iterable[RunRecord], items: Sequence[BatchItem], modes: Sequence[str]
) -> Table:
    """A row per run (problem x mode, in that order) with its verdicts and cost."""
    kept = latest(list(records))
    view = Table(box=box.SIMPLE_HEAD)
    for k, name in enumerate(("problem", "mode", "final", "oracle", "tokens", "server work")):
        view.add_column(name, justify="left" if k < 4 else "right")
    for name in ("requests", "wall s"):
        view.add_column(name, justify="right")
    for item in items:
        for mode in modes:
            record = kept.get((item.id, mode))
            if record is None:
                continue
            final = "pass" if passed(record) else ("error" if not record.ok else "fail")
            view.add_row(
                item.id,
                mode,
                final,
                _oracle_cell(record),
                f"{tokens(record):,.0f}",
                f"{server_work(record):,.0f}",
                str(record.usage.requests),
                f"{record.wall_s:.1f}",
            )
    return view
