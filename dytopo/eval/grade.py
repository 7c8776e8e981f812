"""Grading a completion: the problem's own tests run in the OS sandbox, never in this process.

The answer and the tests run in two sandboxes, joined by two pipes (dytopo/eval/_wire.py): the
answer's program (prompt + completion) answers each call with a plain value, and the tests'
program (prompt + test + `check(candidate)`, where the candidate and the entry point's name both
stand for that line) prints a marker once `check` has returned. An answer passes iff the TESTS'
sandbox exits with status 0 and the marker as the last line of its output. Nothing the answer
does to its own process reaches that verdict: printing the marker, `os._exit(0)`, an atexit hook
or a value whose `__eq__` is always True (not a plain value: the answer fails) are all failures.
When the tests stopped because the answer did (it raised, exited, timed out, sent a bad value),
the answer's own end is the status.
"""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel

from dytopo.eval.extract import Kind, extract
from dytopo.sandbox.bwrap import SandboxLimits, SandboxResult, run_sandboxed

LIMITS = SandboxLimits(wall_s=10.0, memory_mb=256, output_bytes=1_000_000, scratch_mb=16)
"""run_python's limits: 10 s wall clock, 256 MB per process, 1 MB of output."""
MARKER = "__dytopo_eval_checked__"
TAIL_CHARS = 1000
ANSWER_GONE = 3
"""The tests' exit status when the answer stopped answering."""
TESTS_GRACE_S = 5.0
"""The tests wait this much longer than the answer may run, so that the answer's own end
(its time limit, say) is what they see."""
_WIRE = Path(__file__).with_name("_wire.py").read_text(encoding="utf-8")
_LOAD_WIRE = (
    "import types as _dytopo_types\n"
    "_dytopo_wire = _dytopo_types.ModuleType('_dytopo_wire')\n"
    f"exec(compile({_WIRE!r}, '<grader>', 'exec'), _dytopo_wire.__dict__)\n"
)


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


def answer_program(prompt: str, completion: str, entry_point: str, fds: tuple[int, int]) -> str:
    """The answer's side: define prompt + completion, then serve calls on `fds` (requests in,
    replies out)."""
    source = f"{prompt}{completion}\n"
    # The source on a line of its own: a traceback shows the serve line, not the source again.
    serve = f"_dytopo_wire.serve(_dytopo_source, {entry_point!r}, {fds[0]}, {fds[1]})"
    return f"{_LOAD_WIRE}_dytopo_source = {source!r}\n{serve}\n"


def checks_program(prompt: str, test: str, entry_point: str, fds: tuple[int, int]) -> str:
    """The tests' side: the prompt's helpers and the problem's tests, with `check` given the
    line to the answer (`fds`: requests out, replies in), also under the entry point's name
    (some tests call it by name)."""
    return (
        f"{_LOAD_WIRE}_dytopo_candidate = _dytopo_wire.Candidate({fds[0]}, {fds[1]})\n"
        f"{prompt}\n\n{entry_point} = _dytopo_candidate\n\n{test}\n\n"
        "try:\n    check(_dytopo_candidate)\nexcept _dytopo_wire.CandidateGone:\n    pass\n"
        "if _dytopo_candidate.gone is not None:\n"
        "    print(_dytopo_candidate.gone, flush=True)\n"
        f"    raise SystemExit({ANSWER_GONE})\n"
        f"print({MARKER!r}, flush=True)\n"
    )


def _failure(result: SandboxResult, output: str, limits: SandboxLimits) -> str:
    if result.timed_out or result.returncode is None:
        return f"timed out after {limits.wall_s:g} s"
    if result.returncode < 0:
        sig = -result.returncode
        name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
        return f"killed by {name}"
    if result.returncode == 0:
        return "failed (exited before the tests finished)"
    lines = output.rstrip("\n").split("\n")
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    shown = f": {last[:200]}" if last else ""
    if result.output_truncated:
        shown = f": output stopped at the {limits.output_bytes}-byte limit"
    return f"failed (exit status {result.returncode}{shown})"


def _passed(tests: SandboxResult, output: str) -> bool:
    return tests.returncode == 0 and output.rstrip("\n").split("\n")[-1] == MARKER


def _run_both(
    prompt: str, completion: str, test: str, entry_point: str, limits: SandboxLimits
) -> tuple[SandboxResult, SandboxResult]:
    """(the answer's run, the tests' run), side by side; each pipe end is handed to the one
    sandbox that uses it, so either side sees EOF when the other ends."""
    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    answer = answer_program(prompt, completion, entry_point, (requests_r, replies_w))
    tests = checks_program(prompt, test, entry_point, (requests_w, replies_r))
    tests_limits = limits.model_copy(update={"wall_s": limits.wall_s + TESTS_GRACE_S})
    with ThreadPoolExecutor(1, thread_name_prefix="dytopo-grade") as pool:
        answered = pool.submit(run_sandboxed, answer, limits, give_fds=(requests_r, replies_w))
        try:
            tested = run_sandboxed(tests, tests_limits, give_fds=(requests_w, replies_r))
        finally:
            answer_result = answered.result()
    return answer_result, tested


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
    answer, tests = _run_both(prompt, completion, test, entry_point, limits)
    answer_output = answer.output.decode("utf-8", "replace")
    tests_output = tests.output.decode("utf-8", "replace")
    if _passed(tests, tests_output):
        status, output = "passed", answer_output
    elif tests.returncode == ANSWER_GONE:
        status, output = _failure(answer, answer_output, limits), answer_output
    else:
        tests_limits = limits.model_copy(update={"wall_s": limits.wall_s + TESTS_GRACE_S})
        status, output = _failure(tests, tests_output, tests_limits), tests_output
    return Grade(
        passed=status == "passed",
        status=status,
        kind=kind,
        completion=completion,
        duration_s=round(max(answer.duration_s, tests.duration_s), 3),
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
