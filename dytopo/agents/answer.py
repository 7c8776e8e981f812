"""What a run's final answer is made of: an agent's latest work, put in verbatim.

A small model asked to retype a teammate's work product writes a sentence about it instead
(measured: the manager's "final answer" to a HumanEval problem was prose about the developer's
correct function). So the library, not the manager, copies the work: the topology can name the
agent whose latest work is the answer (`answer.from`), or the manager names one
(`answer_from`); only when neither applies does the manager's own text become the answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dytopo.syntax import parse

FENCE = re.compile(
    r"^[ \t]*```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.DOTALL | re.MULTILINE
)
"""A fenced block: its fences start their lines (prose that mentions ``` is not a fence)."""
LOOSE_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
"""A fence anywhere in a line, for replies that open one mid-sentence ("Here: ```python")."""


class AnswerSpec(BaseModel):
    """How the final answer is made (the topology's `answer:`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: str | None = Field(default=None, alias="from")
    """The agent whose latest work is the answer, verbatim; None: the manager chooses."""
    extract: Literal["text", "code"] = "text"
    """text: the whole private message; code: its fenced code blocks, in one fence (the whole
    message when it has none)."""
    tests_from: str | None = None
    """The agent whose latest code blocks are tests, or `task` (the examples the task gives:
    doctests, or `call == expected` lines): after every round the library runs the answer's
    code followed by them in the OS sandbox (needs `from` and `extract: code`)."""
    halt_on_pass: bool = True
    """A passing check ends the run (from min_rounds on) without asking the manager."""

    @model_validator(mode="after")
    def _check(self) -> AnswerSpec:
        if self.tests_from is not None and (self.source is None or self.extract != "code"):
            raise ValueError("answer.tests_from needs answer.from and answer.extract: code")
        return self


class Work(BaseModel):
    """An agent's latest work product: its private message of the last round it succeeded."""

    agent: str
    round: int
    text: str

    def render(self, limit: int | None = None) -> str:
        text = self.text if limit is None or len(self.text) <= limit else self.text[:limit] + " …"
        return f"[{self.agent}, round {self.round}]\n{text}"


class _Output(Protocol):
    @property
    def private(self) -> str: ...


class _Step(Protocol):
    @property
    def agent(self) -> str: ...
    @property
    def ok(self) -> bool: ...
    @property
    def output(self) -> _Output | None: ...


def latest_work(
    rounds: Iterable[tuple[int, Iterable[_Step]]], spec: AnswerSpec | None = None
) -> dict[str, Work]:
    """Each agent's latest successful private message over `rounds` ((round, steps) pairs,
    oldest first). With `spec` extracting code, the answer's author's latest message that
    holds code: a reply that only says what changed does not replace the code it changed."""
    work: dict[str, Work] = {}
    for t, steps in rounds:
        for step in steps:
            if not step.ok or step.output is None or not step.output.private.strip():
                continue
            text = step.output.private
            author = spec is not None and spec.extract == "code" and step.agent == spec.source
            if author and not has_code(text) and step.agent in work:
                continue
            work[step.agent] = Work(agent=step.agent, round=t, text=text)
    return work


def code_blocks(text: str) -> list[str]:
    """The bodies of the fenced code blocks in `text`, in order (an unclosed last fence counts:
    a reply cut at its token limit still holds the code up to there)."""
    return [m.group(2).strip("\n") for m in _fences(text) if m.group(2).strip()]


def _fences(text: str) -> list[re.Match[str]]:
    return list(FENCE.finditer(text)) or list(LOOSE_FENCE.finditer(text))


CODE_START = re.compile(r"^(def |async def |class |import |from \S+ import |@)", re.MULTILINE)


def bare_code(text: str) -> str | None:
    """Python written without a fence: from the first line that starts a definition or an
    import, up to the last line after which it still parses (prose around it is dropped)."""
    start = CODE_START.search(text)
    if start is None:
        return None
    lines = text[start.start() :].splitlines()
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end]).strip()
        try:
            parse(candidate)
        except SyntaxError:
            continue
        return candidate
    return None


def code_of(text: str) -> str | None:
    """The code a work product holds: its fenced blocks joined, else its unfenced Python."""
    return "\n\n".join(code_blocks(text)) or bare_code(text)


def has_code(text: str) -> bool:
    return code_of(text) is not None


def extract(text: str, how: Literal["text", "code"]) -> str:
    """The part of a work product that is the answer (code: its fenced blocks in one fence,
    else the Python it holds unfenced, else the whole text)."""
    if how == "text":
        return text.strip()
    code = code_of(text)
    if code is None:
        return text.strip()
    fenced = code_blocks(text)
    language = next((m.group(1) for m in _fences(text) if m.group(1)), "")
    return f"```{language if fenced else 'python'}\n{code}\n```"


def resolve(
    spec: AnswerSpec, chosen: str, written: str, work: Mapping[str, Work]
) -> tuple[str, str]:
    """The final answer and where it came from ("agent:<id>" or "manager").

    The topology's agent wins over the manager's choice; an agent without work yet falls back
    to the manager's choice, then to the manager's own text."""
    for agent in (spec.source, chosen.strip()):
        if agent and agent in work:
            return extract(work[agent].text, spec.extract), f"agent:{agent}"
    return written.strip(), "manager"
