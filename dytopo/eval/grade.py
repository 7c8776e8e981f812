"""Grading a completion: the problem's own tests run in the OS sandbox, never in this process.

The program is the HumanEval one (prompt + completion + test + `check(entry_point)`), followed
by a line that prints a marker once `check` has returned. It passes iff the sandbox reports exit
status 0 within its limits AND the marker is the last line of output: an answer that ends the
process early with status 0 (`sys.exit(0)` inside the function) does not pass.
"""

from __future__ import annotations

import signal

from pydantic import BaseModel

from dytopo.eval.extract import Kind, extract
from dytopo.sandbox import SandboxLimits, SandboxResult, run_sandboxed

LIMITS = SandboxLimits(wall_s=10.0, memory_mb=256, output_bytes=1_000_000, scratch_mb=16)
"""run_python's limits: 10 s wall clock, 256 MB per process, 1 MB of output."""
MARKER = "__dytopo_eval_checked__"
TAIL_CHARS = 1000


class Grade(BaseModel):
    """The verdict on one answer."""

    passed: bool
    status: str
    """passed, failed (exit status N: last error line), timed out, killed by SIGNAL, no code."""
    kind: Kind
    """What the extraction found (see dytopo.eval.extract)."""
    completion: str
    """The text appended to the prompt."""
    duration_s: float = 0.0
    output_tail: str = ""
    """The last characters of the program's output (stdout and stderr)."""


def program(prompt: str, completion: str, test: str, entry_point: str) -> str:
    return (
        f"{prompt}{completion}\n\n{test}\n\ncheck({entry_point})\nprint({MARKER!r}, flush=True)\n"
    )


def _status(result: SandboxResult, output: str, limits: SandboxLimits) -> tuple[bool, str]:
    if result.timed_out or result.returncode is None:
        return False, f"timed out after {limits.wall_s:g} s"
    lines = output.rstrip("\n").split("\n")
    if result.returncode == 0 and lines[-1] == MARKER:
        return True, "passed"
    if result.returncode < 0:
        sig = -result.returncode
        name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
        return False, f"killed by {name}"
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    if result.returncode == 0:
        return False, "failed (exited before the tests finished)"
    shown = f": {last[:200]}" if last else ""
    if result.output_truncated:
        shown = f": output stopped at the {limits.output_bytes}-byte limit"
    return False, f"failed (exit status {result.returncode}{shown})"


def grade_completion(
    prompt: str,
    completion: str,
    test: str,
    entry_point: str,
    *,
    kind: Kind = "function",
    limits: SandboxLimits = LIMITS,
) -> Grade:
    """Run the problem's tests on `completion` in the sandbox (SandboxUnavailable when this host
    cannot sandbox: there is no unsandboxed fallback)."""
    if kind == "none" or not completion.strip():
        return Grade(passed=False, status="no code in the answer", kind="none", completion="")
    result = run_sandboxed(program(prompt, completion, test, entry_point), limits)
    output = result.output.decode("utf-8", "replace")
    passed, status = _status(result, output, limits)
    return Grade(
        passed=passed,
        status=status,
        kind=kind,
        completion=completion,
        duration_s=round(result.duration_s, 3),
        output_tail=output[-TAIL_CHARS:],
    )


def grade_answer(
    answer: str, prompt: str, test: str, entry_point: str, *, limits: SandboxLimits = LIMITS
) -> Grade:
    """Extract the function from a final answer and grade it."""
    found = extract(answer, entry_point)
    return grade_completion(
        prompt, found.completion, test, entry_point, kind=found.kind, limits=limits
    )
