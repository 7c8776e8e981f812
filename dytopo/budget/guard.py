"""The budget guard: whether a run with a token cap stops before its next round.

The meter (dytopo/backends/meter.py) enforces the cap on every request; the guard only keeps a
round from starting when it would be cut off, so the reserve stays for the final answer.
"""

from __future__ import annotations

from typing import Any

from dytopo.backends.meter import TokenMeter


def budget_stop(
    meter: TokenMeter | None, used: int, last_round: int, *, round: int, ahead: bool = True
) -> dict[str, Any] | None:
    """The `budget_stop` event's fields when the run must stop before `round`, else None.

    It stops when the cap already refused a request, or (`ahead`) when the next round, forecast
    as costing what the last one did, would eat into the final answer's reserve."""
    if meter is None:
        return None
    forecast = ahead and round > 1 and used + last_round + meter.reserve > meter.cap
    if not meter.refused and not forecast:
        return None
    return {
        "round": round,
        "run_token_budget": meter.cap,
        "used": used,
        "next_round_estimate": last_round,
        "final_answer_reserve": meter.reserve,
        "refused": meter.refused,
    }
