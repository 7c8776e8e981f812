"""One row per routing mode: what a run cost and how it ended, or why it failed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from dytopo.errors import ConfigError, DyTopoError, RunError
from dytopo.routing.config import Mode
from dytopo.swarm.result import RunResult
from dytopo.topology import Topology

MODES: tuple[str, ...] = Mode.__args__  # type: ignore[attr-defined]
"""Every routing mode, in the order a comparison runs them by default."""

# Where an overridden field came from, to name the flag in the error.
_FLAGS = {"max_rounds": "--rounds", "min_rounds": "--rounds", "seed": "--seed"}


class ModeRow(BaseModel):
    """One mode's run in a comparison."""

    mode: str
    ok: bool
    """The run finished (halted by the manager, max_rounds or budget) rather than failed."""
    rounds: int = 0
    """Complete rounds."""
    edges_per_round: list[int] = Field(default_factory=list)
    prompt_tokens: int = 0
    cached_tokens: int = 0
    """Prompt tokens the server's prompt cache spared it (counted in prompt_tokens too)."""
    completion_tokens: int = 0
    requests: int = 0
    wall_s: float = 0.0
    halt_reason: str = ""
    answer_chars: int = 0
    error: str = ""
    """Why the run failed (empty when ok)."""
    run_id: str | None = None
    trace: str | None = None
    report: str | None = None
    """The run's HTML report, when it was written."""
    report_error: str = ""

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def parse_modes(text: str) -> list[str]:
    """`dynamic,broadcast` as a list; ConfigError (one line) for an unknown, empty or repeated
    name."""
    modes = [m.strip() for m in text.split(",")]
    for mode in modes:
        if mode not in MODES:
            shown = repr(mode) if mode else "an empty name"
            raise ConfigError(f"--modes: {shown} is not one of {', '.join(MODES)}")
    repeated = next((m for k, m in enumerate(modes) if m in modes[:k]), None)
    if repeated:
        raise ConfigError(f"--modes names {repeated} twice; give each mode once")
    return modes


def variant(topology: Topology, mode: str, rounds: int | None, seed: int | None) -> Topology:
    """`topology` in `mode`; with `rounds`, exactly that many rounds (min = max), so every mode
    does the same amount of work whatever the manager decides."""
    data: dict[str, Any] = topology.model_dump()
    data["routing"] = {**data["routing"], "mode": mode}
    if rounds is not None:
        data["max_rounds"] = data["min_rounds"] = rounds
    if seed is not None:
        data["seed"] = seed
    try:
        return Topology.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = str(error["loc"][0]) if error["loc"] else "options"
        raise ConfigError(
            f"{_FLAGS.get(field, field)} {error.get('input')!r}: {error['msg']}"
        ) from None


def row_of(mode: str, result: RunResult) -> ModeRow:
    return ModeRow(
        mode=mode,
        ok=result.halt_reason != "error",
        rounds=len(result.rounds),
        edges_per_round=[len(r.routing.edges) for r in result.rounds],
        prompt_tokens=result.usage.prompt_tokens,
        cached_tokens=result.usage.cached_tokens,
        completion_tokens=result.usage.completion_tokens,
        requests=result.usage.requests,
        wall_s=round(result.wall_s, 2),
        halt_reason=result.halt_reason,
        answer_chars=len(result.final_answer),
        run_id=result.run_id,
        trace=result.trace_path,
    )


def failed_row(mode: str, error: DyTopoError) -> ModeRow:
    """The row of a run that failed: what it did before (a RunError's partial result), and the
    error's first line."""
    message = (str(error).splitlines() or [type(error).__name__])[0]
    partial = error.partial if isinstance(error, RunError) else None
    if isinstance(partial, RunResult):
        row = row_of(mode, partial)
        return row.model_copy(update={"ok": False, "halt_reason": "error", "error": message})
    return ModeRow(mode=mode, ok=False, halt_reason="error", error=message)


def relative_tokens(rows: Sequence[ModeRow]) -> list[float | None]:
    """Each finished row's tokens (prompt + completion) over the first finished row's; None for
    a failed row (a partial run's count compares with nothing)."""
    base = next((r.tokens for r in rows if r.ok and r.tokens), None)
    return [round(r.tokens / base, 2) if base and r.ok else None for r in rows]
