"""Fitting a prompt into its context budget by dropping the least valuable parts first."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from dytopo.backends.base import Backend
from dytopo.backends.types import ChatMessage
from dytopo.errors import BudgetExceeded

# Tokens kept free for the chat template's own framing and tokenizer disagreements.
SAFETY_MARGIN = 16


async def _fit(
    backend: Backend,
    build: Callable[[Sequence[str]], list[ChatMessage]],
    droppable: Sequence[str],
    *,
    budget: int,
    max_output_tokens: int,
    who: str,
    tools: Sequence[dict[str, Any]] | None = None,
    report: dict[str, int] | None = None,
) -> tuple[list[ChatMessage], list[str]]:
    """Messages from `build(kept)` that fit `budget` with room for the output.

    `droppable` is ordered most valuable first; items are dropped from the end until the prompt,
    counted by the backend (the server's tokenizer where it has one), fits. `tools` are the
    tool definitions sent along: the chat template renders them into the prompt, so they count.
    Returns the messages and the dropped items; `report` (if given) receives the prompt's
    tokens with everything kept (`full_tokens`) and as sent (`prompt_tokens`).
    """
    limit = budget - max_output_tokens - SAFETY_MARGIN
    if limit <= 0:
        raise BudgetExceeded(
            f"{who}: context budget {budget} leaves no room for max_output_tokens "
            f"{max_output_tokens} (raise the budget or lower max_output_tokens)"
        )
    kept = list(droppable)
    while True:
        messages = build(kept)
        used = await backend.count_tokens(messages, tools)
        if report is not None:
            report.setdefault("full_tokens", used)
            report["prompt_tokens"] = used
            report["budget"] = budget
        if used <= limit:
            return messages, list(droppable[len(kept) :])
        if not kept:
            raise BudgetExceeded(
                f"{who}: the pinned prompt alone needs {used} tokens but only {limit} are free "
                f"(budget {budget} - output {max_output_tokens}); shorten the task or role card, "
                "or raise the context budget"
            )
        # Drop proportionally to the overshoot to avoid one tokenizer call per item.
        excess = used - limit
        cut = 1
        while cut < len(kept) and sum(len(t) for t in kept[len(kept) - cut :]) < excess * 3:
            cut += 1
        kept = kept[: len(kept) - cut]


MIN_TASK_CHARS = 200


async def fit_with_task(
    backend: Backend,
    build: Callable[[str, Sequence[str]], list[ChatMessage]],
    task: str,
    droppable: Sequence[str],
    *,
    budget: int,
    max_output_tokens: int,
    who: str,
    tools: Sequence[dict[str, Any]] | None = None,
    report: dict[str, int] | None = None,
) -> tuple[list[ChatMessage], list[str]]:
    """`_fit`, and when even the pinned prompt is too big, shorten the task (halving) to fit.

    `build(task_text, kept)` makes the messages. A shortened task is reported in the dropped list.
    """
    limit = len(task)
    while True:
        text = (
            task
            if limit >= len(task)
            else (task[:limit] + f"\n[task truncated: {len(task) - limit} more characters]")
        )
        try:
            messages, dropped = await _fit(
                backend,
                functools.partial(build, text),
                droppable,
                budget=budget,
                max_output_tokens=max_output_tokens,
                who=who,
                tools=tools,
                report=report,
            )
        except BudgetExceeded:
            if limit <= MIN_TASK_CHARS:
                raise
            limit = max(MIN_TASK_CHARS, limit // 2)
            continue
        if limit < len(task):
            dropped.append(f"task truncated to {limit} of {len(task)} characters")
        return messages, dropped


Pack = Callable[[Sequence[ChatMessage]], Awaitable[list[ChatMessage]]]
"""`pack(extra)`: the prompt for one request with `extra` pinned at its end, fitted to budget."""


class Packer:
    """One step's prompt, packed again for each follow-up request (a re-ask, a tool turn).

    The first call packs `build(task, kept)` leaving `max_output_tokens + reserve` free. A
    follow-up pins its messages at the end: when they fit behind the first prompt as it is, that
    prompt is kept (a server reuses a shared prefix from its cache); otherwise the droppable items
    are packed anew around them, so every request fits `budget` with room for its output.
    Items dropped on any call are appended to `dropped` (the trace's list) once each.
    """

    def __init__(
        self,
        backend: Backend,
        build: Callable[[str, Sequence[str]], list[ChatMessage]],
        task: str,
        droppable: Sequence[str],
        *,
        budget: int,
        max_output_tokens: int,
        who: str,
        tools: Sequence[dict[str, Any]] | None = None,
        reserve: int = 0,
        report: dict[str, int] | None = None,
        dropped: list[str] | None = None,
    ) -> None:
        self.backend = backend
        self.build = build
        self.task = task
        self.droppable = list(droppable)
        self.budget = budget
        self.max_output_tokens = max_output_tokens
        self.who = who
        self.tools = tools
        self.reserve = reserve
        self.report = report
        self.dropped = dropped if dropped is not None else []
        self._first: list[ChatMessage] | None = None

    async def __call__(self, extra: Sequence[ChatMessage] = ()) -> list[ChatMessage]:
        pinned = list(extra)
        if self._first is not None:
            messages = [*self._first, *pinned]
            used = await self.backend.count_tokens(messages, self.tools)
            if used + self.max_output_tokens + SAFETY_MARGIN <= self.budget:
                return messages

        def build(task_text: str, kept: Sequence[str]) -> list[ChatMessage]:
            return [*self.build(task_text, kept), *pinned]

        first = self._first is None
        messages, dropped = await fit_with_task(
            self.backend,
            build,
            self.task,
            self.droppable,
            budget=self.budget,
            max_output_tokens=self.max_output_tokens + (self.reserve if first else 0),
            who=self.who,
            tools=self.tools,
            report=self.report if first else None,
        )
        self.dropped.extend(d for d in dropped if d not in self.dropped)
        if first:
            self._first = messages[: len(messages) - len(pinned)]
        return messages


async def clip_tokens(backend: Backend, text: str, limit: int) -> str:
    """The start of `text` in at most about `limit` tokens, as the backend counts them."""
    empty = await backend.count_tokens([ChatMessage(role="assistant", content="")])
    # Text averages under 4 characters a token: start there and shrink until it fits.
    cut = text[: limit * 4]
    for _ in range(4):
        if not cut:
            break
        used = await backend.count_tokens([ChatMessage(role="assistant", content=cut)]) - empty
        if used <= limit:
            return cut if len(cut) == len(text) else f"{cut} [...]"
        cut = cut[: len(cut) * limit // used * 9 // 10]
    return ""
