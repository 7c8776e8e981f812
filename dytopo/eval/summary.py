"""Per mode: pass@1 with its 95% interval, the oracle, and what a problem cost.

Cost per problem: tokens (prompt + generated), server work (prompt tokens the server had to
process, i.e. not served from its prompt cache, + generated tokens), requests and wall time;
means and medians. Ratios against another mode (`x plain`) are taken over the problems both
modes ran, as a ratio of sums, so a mode that ran fewer problems is not flattered by them.

Records written before the oracle existed load and count everywhere but in the oracle columns
(`oracle_checked` says how many runs have a verdict).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence

from pydantic import BaseModel

from dytopo.batch import RunRecord, latest

Z95 = 1.959963984540054
"""The standard normal quantile of 0.975: a two-sided 95% interval."""

Measure = Callable[[RunRecord], float]


def wilson(passed: int, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a pass rate `passed / total` (0..1; (0, 1) with no runs)."""
    if total <= 0:
        return 0.0, 1.0
    p = passed / total
    scale = 1 + z * z / total
    center = (p + z * z / (2 * total)) / scale
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / scale
    return max(0.0, center - half), min(1.0, center + half)


def tokens(record: RunRecord) -> float:
    return record.usage.prompt_tokens + record.usage.completion_tokens


def server_work(record: RunRecord) -> float:
    """Tokens the server computed: prompt tokens not served from its cache, plus generated."""
    u = record.usage
    return max(0, u.prompt_tokens - u.cached_tokens) + u.completion_tokens


def passed(record: RunRecord) -> bool:
    return record.grade.get("passed") is True


def oracle_passed(record: RunRecord) -> bool | None:
    """The run's oracle verdict; None for a record written before the oracle existed."""
    found = record.grade.get("oracle")
    if isinstance(found, dict) and isinstance(found.get("passed"), bool):
        return bool(found["passed"])
    return None


def lost(record: RunRecord) -> bool:
    """Some agent's code passed the tests, the final answer did not."""
    return oracle_passed(record) is True and not passed(record)


class ModeSummary(BaseModel):
    """One mode's row of the table. Means and medians are per problem (per run of that mode)."""

    mode: str
    problems: int
    passed: int
    pass_at_1: float
    """passed / problems (one sample per problem)."""
    pass_low: float
    pass_high: float
    """The 95% Wilson score interval of pass@1."""
    oracle_checked: int
    """Runs with an oracle verdict (records from before the oracle have none)."""
    oracle_passed: int
    oracle_rate: float | None
    """oracle_passed / oracle_checked; None when no run has a verdict."""
    lost: int
    """Runs whose oracle passed and whose final answer failed: lost by the framework."""
    prompt_tokens: float
    cached_tokens: float
    """Prompt tokens served from the server's prompt cache (part of prompt_tokens)."""
    completion_tokens: float
    tokens: float
    tokens_median: float
    server_work: float
    """Prompt tokens not served from cache + generated tokens."""
    server_work_median: float
    requests: float
    rounds: float
    wall_s: float
    wall_s_median: float
    failures: int
    """Runs that stopped with an error (they count as not passed)."""
    no_code: int
    """Answers in which no code was found."""
    tokens_x_base: float | None = None
    """Tokens over the baseline mode's on the same problems (None without a baseline run)."""
    work_x_base: float | None = None
    """Server work over the baseline mode's on the same problems."""


def _mean(values: Iterable[float]) -> float:
    found = list(values)
    return round(statistics.fmean(found), 2) if found else 0.0


def _median(values: Iterable[float]) -> float:
    found = list(values)
    return round(statistics.median(found), 2) if found else 0.0


def ratio(
    records: Iterable[RunRecord], mode: str, base: str, measure: Measure
) -> tuple[float | None, int]:
    """sum(measure) of `mode` over sum(measure) of `base`, on the problems both ran (the latest
    record of each), and how many problems that is; (None, n) when there are none or the base
    sums to 0."""
    kept = latest(list(records))
    shared = sorted({i for i, m in kept if m == mode} & {i for i, m in kept if m == base})
    top = sum(measure(kept[(i, mode)]) for i in shared)
    bottom = sum(measure(kept[(i, base)]) for i in shared)
    return (round(top / bottom, 3) if shared and bottom else None), len(shared)


def _row(mode: str, runs: list[RunRecord]) -> ModeSummary:
    won = sum(1 for r in runs if passed(r))
    verdicts = [v for v in map(oracle_passed, runs) if v is not None]
    low, high = wilson(won, len(runs))
    return ModeSummary(
        mode=mode,
        problems=len(runs),
        passed=won,
        pass_at_1=round(won / len(runs), 4) if runs else 0.0,
        pass_low=round(low, 6),
        pass_high=round(high, 6),
        oracle_checked=len(verdicts),
        oracle_passed=sum(verdicts),
        oracle_rate=round(sum(verdicts) / len(verdicts), 4) if verdicts else None,
        lost=sum(1 for r in runs if lost(r)),
        prompt_tokens=_mean(r.usage.prompt_tokens for r in runs),
        cached_tokens=_mean(r.usage.cached_tokens for r in runs),
        completion_tokens=_mean(r.usage.completion_tokens for r in runs),
        tokens=_mean(map(tokens, runs)),
        tokens_median=_median(map(tokens, runs)),
        server_work=_mean(map(server_work, runs)),
        server_work_median=_median(map(server_work, runs)),
        requests=_mean(r.usage.requests for r in runs),
        rounds=_mean(r.rounds for r in runs),
        wall_s=_mean(r.wall_s for r in runs),
        wall_s_median=_median(r.wall_s for r in runs),
        failures=sum(1 for r in runs if not r.ok),
        no_code=sum(1 for r in runs if r.grade.get("kind") == "none"),
    )


def summarize(
    records: Iterable[RunRecord], modes: Sequence[str], base: str | None = "plain"
) -> list[ModeSummary]:
    """A row per mode in `modes` order, from the latest record of each (item, mode); with the
    `base` mode among them, each row's tokens and server work relative to it."""
    kept = list(latest(list(records)).values())
    rows = [_row(mode, [r for r in kept if r.mode == mode]) for mode in modes]
    if base is None or base not in modes:
        return rows
    return [
        row.model_copy(
            update={
                "tokens_x_base": ratio(kept, row.mode, base, tokens)[0],
                "work_x_base": ratio(kept, row.mode, base, server_work)[0],
            }
        )
        for row in rows
    ]
