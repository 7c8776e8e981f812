"""How well the answer's check (`tests_from: task`) judges HumanEval, with the task text
`dytopo eval` gives the swarm: how many problems it can check, how many canonical solutions
pass it (written as the task's function, and as the bare def without the task's imports, as a
developer often returns it), and how many stubs it catches.

    .venv/bin/python benchmarks/check_humaneval.py
"""

from __future__ import annotations

import asyncio
import re

from dytopo.agents.answer import AnswerSpec, Work
from dytopo.eval.humaneval import problems, task_text
from dytopo.swarm.check import run_check

SPEC = AnswerSpec(source="developer", extract="code", tests_from="task")
IMPORT = re.compile(r"^(from \S+ import .*|import .*)$", re.MULTILINE)


async def judged(task: str, code: str) -> bool | None:
    work = {"developer": Work(agent="developer", round=1, text=f"```python\n{code}\n```")}
    check = await run_check(SPEC, work, 1, task)
    return None if check is None else check.passed


async def main() -> None:
    checkable = whole = bare = stubs = 0
    wrong: list[str] = []
    for p in problems():
        task = task_text(p)
        full = p["prompt"] + p["canonical_solution"]
        verdict = await judged(task, full)
        if verdict is None:
            continue
        checkable += 1
        whole += verdict
        if not verdict:
            wrong.append(p["task_id"])
        bare += bool(await judged(task, IMPORT.sub("", full)))
        stub = p["prompt"] + "    pass\n"
        stubs += not await judged(task, stub)
    n = len(problems())
    print(f"checkable: {checkable} of {n}")
    print(f"canonical solutions passing: {whole} of {checkable} (failing: {', '.join(wrong)})")
    print(f"... written without the task's imports: {bare} of {checkable}")
    print(f"stubs caught: {stubs} of {checkable}")


if __name__ == "__main__":
    asyncio.run(main())
