"""Fitting a prompt into its context budget by dropping the least valuable parts first."""

from __future__ import annotations

import bisect
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
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
    levels: Sequence[int] | None = None,
) -> tuple[list[ChatMessage], list[str]]:
    """Messages from `build(kept)` that fit `budget` with room for the output.

    `droppable` is ordered most valuable first; items are dropped from the end until the prompt,
    counted by the backend (the server's tokenizer where it has one), fits. `levels` (if given)
    are the only numbers of items that may be kept (see `Timeline`): the largest that fits wins.
    `tools` are the tool definitions sent along: the chat template renders them into the
    prompt, so they count. Returns the messages and the dropped items; `report` (if given)
    receives the prompt's tokens with everything kept (`full_tokens`) and as sent
    (`prompt_tokens`).
    """
    limit = budget - max_output_tokens - SAFETY_MARGIN
    if limit <= 0:
        raise BudgetExceeded(
            f"{who}: context budget {budget} leaves no room for max_output_tokens "
            f"{max_output_tokens} (raise the budget or lower max_output_tokens)"
        )
    kept = list(droppable)
    allowed = sorted({*(levels or range(len(kept) + 1)), 0})
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
        # Drop proportionally to the overshoot to avoid one tokenizer call per item: the last
        # items' characters summed as they are walked (summing each suffix anew was quadratic:
        # 16k memory entries took 14 s), then the largest allowed level below what is left.
        cut = _cut(kept, chars=(used - limit) * 3)
        kept = kept[: allowed[bisect.bisect_right(allowed, len(kept) - cut) - 1]]


def _cut(kept: Sequence[str], *, chars: int) -> int:
    """How many of the last items of `kept` hold `chars` characters (at least one, at most all)."""
    cut, total = 0, 0
    for text in reversed(kept):
        cut += 1
        total += len(text)
        if total >= chars:
            break
    return max(cut, 1)


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
    levels: Sequence[int] | None = None,
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
                levels=levels,
            )
        except BudgetExceeded:
            if limit <= MIN_TASK_CHARS:
                raise
            limit = max(MIN_TASK_CHARS, limit // 2)
            continue
        if limit < len(task):
            dropped.append(f"task truncated to {limit} of {len(task)} characters")
        return messages, dropped


CHARS_PER_TOKEN = 3
"""A low estimate of characters per token, to turn a token budget into a character span."""
CUT_SPANS = 4
"""The span between stable cut points is a quarter of the budget (see `Timeline`)."""


@dataclass(frozen=True)
class Timeline:
    """The droppable part of a prompt laid out for the server's prompt cache.

    `history` is append-only and oldest first (an agent's memory, the public transcript): it is
    rendered right after the fixed head, so one request's history is the start of the next
    one's, and the server reuses it (llama-server matches the longest common prefix).
    `fresh` (this request's new items, most valuable first) follows it.

    When not everything fits, the oldest history goes first, but not one entry at a time: that
    would move the start of the history, and so invalidate the cached prefix, every round. The
    history may only start at a *stable cut*: item 0, or the first item at or after each
    multiple of `span` characters of the history. The history is append-only and `span`
    depends on the budget alone, so the cut points found in one round are the same in every
    later one; packing keeps the earliest cut after which everything fits, and that cut stays
    put until the history has grown by about `span` more characters. Only when the items
    after the last cut point alone do not fit are single items dropped (oldest first, then the
    least valuable fresh ones); after that the task is shortened (`fit_with_task`).
    """

    history: Sequence[str]
    fresh: Sequence[str] = ()
    span: int = 1

    @classmethod
    def for_budget(cls, budget: int, history: Sequence[str], fresh: Sequence[str] = ()) -> Timeline:
        return cls(history, fresh, max(1, budget * CHARS_PER_TOKEN // CUT_SPANS))

    @property
    def droppable(self) -> list[str]:
        """Most valuable first, as packing drops from the end: fresh, then history newest first."""
        return [*self.fresh, *reversed(self.history)]

    def cuts(self) -> list[int]:
        """How many of the oldest history items each stable cut drops, ascending."""
        cuts, total, mark = [0], 0, self.span
        for k, text in enumerate(self.history, 1):
            total += len(text) + 1  # the line break that joins it
            if total >= mark:
                cuts.append(k)
                mark += self.span * ((total - mark) // self.span + 1)
        return cuts

    def levels(self) -> list[int]:
        """The numbers of droppable items that may be kept, largest first."""
        n, fresh = len(self.history), len(self.fresh)
        cuts = self.cuts()
        finer = range(fresh + n - cuts[-1] - 1, -1, -1)
        return [*(fresh + n - k for k in cuts), *finer]

    def split(self, kept: Sequence[str]) -> tuple[int, list[str]]:
        """For kept items (a prefix of `droppable`): how many fresh items are kept, and the kept
        history oldest first."""
        fresh = min(len(kept), len(self.fresh))
        return fresh, list(reversed(kept[fresh:]))


Pack = Callable[[Sequence[ChatMessage]], Awaitable[list[ChatMessage]]]
"""`pack(extra)`: the prompt for one request with `extra` pinned at its end, fitted to budget."""


class Packer:
    """One step's prompt, packed again for each follow-up request (a re-ask, a tool turn).

    The first call packs `build(task, kept)` leaving `max_output_tokens + reserve` free. A
    follow-up pins its messages at the end: when they fit behind the first prompt as it is, that
    prompt is kept (a server reuses a shared prefix from its cache); otherwise the droppable items
    are packed anew around them, so every request fits `budget` with room for its output.
    `levels` limit how many items may be kept (`Timeline.levels`). Items dropped on any call are
    appended to `dropped` (the trace's list) once each.
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
        levels: Sequence[int] | None = None,
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
        self.levels = levels
        self._first: list[ChatMessage] | None = None

    def follow_up(self, *, max_output_tokens: int) -> Packer:
        """A packer for the next request of the same conversation (the answer after a tool
        phase): it keeps this packer's first prompt while what it pins fits behind it with room
        for `max_output_tokens`, and packs anew otherwise. Drops go to the same list."""
        other = Packer(
            self.backend,
            self.build,
            self.task,
            self.droppable,
            budget=self.budget,
            max_output_tokens=max_output_tokens,
            who=self.who,
            tools=self.tools,
            dropped=self.dropped,
            levels=self.levels,
        )
        other._first = self._first
        return other

    async def behind(self, extra: Sequence[ChatMessage]) -> list[ChatMessage] | None:
        """The first prompt with `extra` pinned behind it, if that fits (None otherwise)."""
        if self._first is None:
            return None
        messages = [*self._first, *extra]
        used = await self.backend.count_tokens(messages, self.tools)
        return messages if used + self.max_output_tokens + SAFETY_MARGIN <= self.budget else None

    async def __call__(self, extra: Sequence[ChatMessage] = ()) -> list[ChatMessage]:
        pinned = list(extra)
        kept = await self.behind(pinned)
        if kept is not None:
            return kept

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
            levels=self.levels,
        )
        seen = set(self.dropped)  # a set: scanning the list for each item was quadratic
        for item in dropped:
            if item not in seen:
                seen.add(item)
                self.dropped.append(item)
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
