"""The answer's check: the answer's code run with a teammate's tests in the OS sandbox.

A small model asked to run code through a tool call splits the function and its asserts into
separate calls (each its own process: NameError) and retypes the code it should have copied
(measured with Qwen2.5-Coder-1.5B). So when a topology names who writes the tests
(`answer.tests_from`), the library runs the check itself after every round, at no token cost:
the author's latest code, then the tester's latest test code, in one sandboxed process. A
pass ends the run (`halt_on_pass`); a failure goes to the author and the tester as a message.
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Mapping

from pydantic import BaseModel

from dytopo.answer import AnswerSpec, Work, code_blocks, extract
from dytopo.sandbox import SandboxError, SandboxLimits, run_sandboxed

LIMITS = SandboxLimits(wall_s=10.0, memory_mb=512)
OUTPUT_CHARS = 600
"""Characters of a failed check's output kept (its tail: where the assertion error is)."""


class Check(BaseModel):
    """One run of the answer's code with the tests."""

    round: int
    answer_round: int
    """The round the checked code was written in."""
    tests_round: int
    passed: bool
    output: str
    """Status line and the output's tail."""
    answer: str
    """The checked answer as the final answer would carry it."""

    def render(self, spec: AnswerSpec) -> str:
        what = (
            f"{spec.source}'s round {self.answer_round} code with {spec.tests_from}'s "
            f"round {self.tests_round} tests"
        )
        return f"check of {what}: " + ("passed" if self.passed else f"FAILED: {self.output}")


def test_code(tests: str, answer: str) -> str | None:
    """The test code to append: the tests' code blocks without their own definitions of the
    answer's names (a tester that retyped the function would test its copy); None when they
    hold no assert (nothing would be checked)."""
    code = "\n\n".join(code_blocks(tests))
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code if "assert" in code else None
    try:
        defined = {
            n.name
            for n in ast.parse(answer).body
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        }
    except SyntaxError:
        defined = set()
    kept = [
        n
        for n in tree.body
        if not (
            isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and n.name in defined
        )
    ]
    if not any(isinstance(n, ast.Assert) for stmt in kept for n in ast.walk(stmt)):
        return None
    return ast.unparse(ast.Module(body=kept, type_ignores=[]))


async def run_check(spec: AnswerSpec, work: Mapping[str, Work], round: int) -> Check | None:
    """Check the answer's latest code with the tests' latest code; None when either is missing
    or the host cannot sandbox (the run goes on unchecked)."""
    if spec.source is None or spec.tests_from is None:
        return None
    answer, tests = work.get(spec.source), work.get(spec.tests_from)
    if answer is None or tests is None:
        return None
    code = "\n\n".join(code_blocks(answer.text))
    checks = test_code(tests.text, code) if code.strip() else None
    if checks is None:
        return None
    try:
        result = await asyncio.to_thread(run_sandboxed, f"{code}\n\n{checks}\n", LIMITS)
    except SandboxError:
        return None
    text = result.output.decode("utf-8", errors="replace").strip()
    if result.timed_out or result.returncode is None:
        status = f"timed out after {LIMITS.wall_s:g} s"
    else:
        status = f"exit status {result.returncode}"
    tail = text[-OUTPUT_CHARS:] if len(text) > OUTPUT_CHARS else text
    return Check(
        round=round,
        answer_round=answer.round,
        tests_round=tests.round,
        passed=result.returncode == 0 and not result.timed_out,
        output=f"[{status}] {tail}".strip(),
        answer=extract(answer.text, spec.extract),
    )
