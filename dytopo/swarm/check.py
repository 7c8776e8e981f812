"""The answer's check: the answer's code run with a teammate's tests in the OS sandbox.

A small model asked to run code through a tool call splits the function and its asserts into
separate calls (each its own process: NameError) and retypes the code it should have copied
(measured with Qwen2.5-Coder-1.5B). So when a topology names who writes the tests
(`answer.tests_from`), the library runs the check itself after every round, at no token cost:
the author's latest code, then the tester's latest test code (or, with `tests_from: task`, the
examples the task gives), in one sandboxed process. A pass ends the run (`halt_on_pass`); a
failure goes to the author and the tester as a message.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import doctest
import re
from collections.abc import Mapping

from pydantic import BaseModel

from dytopo.agents.answer import AnswerSpec, Work, code_blocks, code_of, extract
from dytopo.errors import SandboxError
from dytopo.sandbox.bwrap import SandboxLimits, run_sandboxed
from dytopo.syntax import parse

LIMITS = SandboxLimits(wall_s=10.0, memory_mb=512)
OUTPUT_CHARS = 600
"""Characters of a failed check's output kept (its tail: where the assertion error is)."""


class Check(BaseModel):
    """One run of the answer's code with the tests."""

    round: int
    source: str = ""
    """The agent whose code was checked: the answer's author, or a teammate whose code passed
    where the author's failed."""
    answer_round: int
    """The round the checked code was written in."""
    tests_round: int
    passed: bool
    output: str
    """Status line and the output's tail."""
    answer: str
    """The checked answer as the final answer would carry it."""

    def render(self, spec: AnswerSpec) -> str:
        tests = (
            "the task's examples"
            if spec.tests_from == TASK
            else f"{spec.tests_from}'s round {self.tests_round} tests"
        )
        what = f"{self.source or spec.source}'s round {self.answer_round} code with {tests}"
        return f"check of {what}: " + ("passed" if self.passed else f"FAILED: {self.output}")


def test_code(tests: str, answer: str) -> str | None:
    """The test code to append: the tests' code blocks without their own definitions of the
    answer's names (a tester that retyped the function would test its copy); None when they
    hold no assert (nothing would be checked)."""
    code = "\n\n".join(code_blocks(tests))
    try:
        tree = parse(code)
    except SyntaxError:
        return code if "assert" in code else None
    try:
        defined = {
            n.name
            for n in parse(answer).body
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


TASK = "task"
"""`tests_from: task`: the examples the task itself gives are the tests."""
FENCE_LINE = re.compile(r"^[ \t]*(```.*|\"\"\"|\'\'\')[ \t]*$", re.MULTILINE)
EXAMPLE_LINE = re.compile(r"^\s*([A-Za-z_]\w*\(.*\))\s*(?:==|➞|=>|→)\s*(.+?)\s*$")
IMPORT_LINE = re.compile(r"^(import [\w., ]+|from [\w.]+ import [\w., ()*]+)\s*$")
DEFINED = re.compile(r"^\s*(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)", re.MULTILINE)
RUNNER = """
import math as _math, sys as _sys
def _same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        try:
            return _math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
        except TypeError:
            return False
    return a == b
_failed = []
{examples}
print("\\n".join(_failed) or "all {count} examples passed")
_sys.exit(1 if _failed else 0)
"""
EXAMPLE = """
try:
    _got = ({call})
except Exception as _e:
    _failed.append({call!r} + " raised " + type(_e).__name__ + ": " + str(_e))
else:
    if not _same(_got, ({want})):
        _failed.append({call!r} + " returned " + repr(_got) + ", expected " + {want!r})
"""


def examples(task: str) -> list[tuple[str, str]]:
    """The (call, expected) pairs a task gives: its doctests (`>>> call`, then the output),
    and its `call == expected` lines (also with ➞, => or →)."""
    text = FENCE_LINE.sub("", task)
    try:
        found = doctest.DocTestParser().get_examples(text)
    except ValueError:  # inconsistent indentation: no usable doctests
        found = []
    pairs = []
    for e in found:
        call, want = e.source.strip(), e.want.strip()
        if not want and "==" in call:
            want = "True"
        pairs.append((call, want))
    if not pairs:
        pairs = [(m[1], m[2]) for m in map(EXAMPLE_LINE.match, text.splitlines()) if m]
    return pairs


def _usable(call: str, want: str, names: set[str]) -> tuple[str, str] | None:
    """The example as two clean expressions (comments dropped), when both are expressions
    over the answer's names, builtins and literals (a name the task never defines, such as
    `a` or a lowercase `true`, would fail any code)."""
    try:
        trees = [parse(call, mode="eval"), parse(want, mode="eval")]
    except SyntaxError:
        return None
    known = names | set(dir(builtins))
    used = {n.id for t in trees for n in ast.walk(t) if isinstance(n, ast.Name)}
    if isinstance(trees[0].body, ast.Constant) or not used <= known:
        return None
    return ast.unparse(trees[0]), ast.unparse(trees[1])


def example_tests(task: str, answer: str) -> str | None:
    """A program that runs the task's examples against the answer's functions and exits 1
    listing the ones that failed; None when the task gives no usable example."""
    try:
        tree = parse(answer)
    except SyntaxError:  # still checked: the run reports the syntax error to the author
        names = set(DEFINED.findall(answer))
    else:
        names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    names |= {name for line in task_imports(task) for name in _imported(line)}
    chosen = [e for c, w in examples(task) if (e := _usable(c, w, names)) is not None]
    if not chosen:
        return None
    body = "".join(EXAMPLE.format(call=c, want=w) for c, w in chosen)
    return RUNNER.format(examples=body, count=len(chosen))


def task_imports(task: str) -> list[str]:
    """The import lines of the task's own code (a signature's `List` comes from the task's
    `from typing import List`, which an answer may leave out as the task already has it)."""
    lines = []
    for block in code_blocks(task):
        for line in block.splitlines():
            if IMPORT_LINE.match(line):
                lines.append(line.strip())
    return lines


def _imported(line: str) -> set[str]:
    try:
        nodes = parse(line).body
    except SyntaxError:
        return set()
    return {
        (a.asname or a.name).split(".")[0]
        for n in nodes
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }


async def run_check(
    spec: AnswerSpec, work: Mapping[str, Work], round: int, task: str = ""
) -> Check | None:
    """Check the answer's latest code with the tests' latest code (or the task's examples);
    None when either is missing or the host cannot sandbox (the run goes on unchecked).

    When the author's code fails (or it has none), each teammate's latest code is checked the
    same way, and the first that passes is the answer: measured on HumanEval, a tester wrote a
    correct function in round 1 while the developer repeated a broken one for three rounds.
    A failure reported is the author's (it is the author who fixes it)."""
    if spec.source is None or spec.tests_from is None:
        return None
    tests = None if spec.tests_from == TASK else work.get(spec.tests_from)
    if tests is None and spec.tests_from != TASK:
        return None
    teammates = [a for a in work if a not in (spec.source, spec.tests_from)]
    failed: Check | None = None
    for agent in [spec.source, *teammates]:
        answer = work.get(agent)
        if answer is None:
            continue
        check = await _check_one(spec, answer, tests, round, task)
        if check is None:
            continue
        if check.passed:
            return check
        failed = failed or check
    return failed


async def _check_one(
    spec: AnswerSpec, answer: Work, tests: Work | None, round: int, task: str
) -> Check | None:
    code = code_of(answer.text) or ""
    if not code.strip():
        return None
    checks = example_tests(task, code) if tests is None else test_code(tests.text, code)
    if checks is None:
        return None
    if tests is None:  # the task's examples run with the task's imports in scope
        code = "\n".join([*task_imports(task), code])
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
        source=answer.agent,
        answer_round=answer.round,
        tests_round=tests.round if tests is not None else 0,
        passed=result.returncode == 0 and not result.timed_out,
        output=f"[{status}] {tail}".strip(),
        answer=extract(answer.text, spec.extract),
    )
