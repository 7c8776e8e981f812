"""Running validated tool calls: per-call timeout, errors as text, repeats stopped, results cut."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from dytopo import activity
from dytopo.backends.types import ToolCall
from dytopo.errors import ToolError
from dytopo.tools.context import ToolContext
from dytopo.tools.registry import Tool


class ToolOutcome(BaseModel):
    """One executed (or refused) call, as the trace records it."""

    tool: str
    arguments: dict[str, Any] | str
    ok: bool
    result: str
    """What the model sees (an error explanation when not ok)."""
    error: str = ""
    repeated: bool = False
    wall_s: float = 0.0


MAX_ARGUMENT_DEPTH = 32
"""Nesting allowed in a call's arguments: real ones nest a few levels. Deeper values would
reach recursive code (validation, the repeat check, the trace) near Python's recursion limit."""


def parse_arguments(call: ToolCall) -> dict[str, Any]:
    """Arguments must be one JSON object; nothing is repaired silently."""
    too_deep = ToolError(
        f"arguments of {call.name} are nested more than {MAX_ARGUMENT_DEPTH} levels deep; "
        "pass a flat JSON object"
    )
    try:
        value = json.loads(call.arguments or "{}")
    except json.JSONDecodeError as exc:
        raise ToolError(f"arguments of {call.name} are not valid JSON: {exc.msg}") from exc
    except RecursionError:  # a model looping on "[[[[...": the decoder recurses per level
        raise too_deep from None
    if _deeper_than(value, MAX_ARGUMENT_DEPTH):
        raise too_deep
    try:
        # JSON may escape half a UTF-16 pair ("\ud800"): Python decodes it to a lone surrogate,
        # which no later request to the server can encode (a tool echoing it breaks the step).
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ToolError(
            f"arguments of {call.name} hold a lone UTF-16 surrogate (an escape like \\ud800 "
            "without its pair); write the characters themselves"
        ) from None
    if not isinstance(value, dict):
        raise ToolError(
            f"arguments of {call.name} must be a JSON object, got {type(value).__name__}"
        )
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether lists and objects nest more than `limit` levels; iterative, so never recursing."""
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


MAX_ERROR_CHARS = 500
"""Longest `ToolOutcome.error`: it goes into the trace, logs and a CLI error line."""


def one_line(text: str, limit: int | None = None) -> str:
    """An error as one line (at most `limit` characters): it ends up in a CLI error line, a
    log field and the trace."""
    line = " ".join(text.split())
    if limit is None or len(line) <= limit:
        return line
    return line[: max(0, limit - 6)] + " [...]"


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[truncated: {len(text) - limit} more characters]"


class ToolExecutor:
    """Runs the calls of one agent step; remembers calls to refuse identical repeats."""

    def __init__(self, tools: Sequence[Tool], ctx: ToolContext) -> None:
        self.tools = {t.name: t for t in tools}
        self.ctx = ctx
        self._seen: set[tuple[str, str]] = set()

    def check(self, call: ToolCall) -> tuple[Tool, dict[str, Any]]:
        """Validate a call without running it; raises ToolError saying what is wrong, in one
        line that fits a tool result (a model's call can quote a huge name or key)."""
        try:
            return self._check(call)
        except ToolError as exc:
            room = self.ctx.max_result_chars - len("error: ")
            raise ToolError(one_line(str(exc), min(MAX_ERROR_CHARS, room))) from exc

    def _check(self, call: ToolCall) -> tuple[Tool, dict[str, Any]]:
        tool = self.tools.get(call.name)
        if tool is None:
            names = ", ".join(sorted(self.tools)) or "none"
            raise ToolError(f"unknown tool {call.name!r}; available: {names}")
        arguments = parse_arguments(call)
        try:
            tool.validate(arguments)
        except ToolError:
            raise
        except Exception as exc:  # a buggy validator in a tool's parameters refuses the call
            raise ToolError(
                f"invalid arguments for {tool.name}: {type(exc).__name__}: {exc}"
            ) from exc
        return tool, arguments

    async def run(self, call: ToolCall, limit_chars: int | None = None) -> ToolOutcome:
        started = time.monotonic()
        admitted = self._admit(call)
        if isinstance(admitted, ToolOutcome):
            return admitted
        return await self._execute(*admitted, started, limit_chars)

    async def run_all(self, calls: Sequence[ToolCall], *, parallel: int = 4) -> list[ToolOutcome]:
        """Run one turn's calls, at most `parallel` at a time; outcomes in call order.

        Calls are admitted (validated, repeats refused) in call order before any runs, so
        which of two identical calls counts as the repeat does not depend on scheduling.
        A failing call is an outcome and never cancels its siblings.
        """
        if parallel < 1:
            raise ValueError(f"parallel must be at least 1, got {parallel}")
        admitted = [self._admit(call) for call in calls]
        running = [item[0].name for item in admitted if not isinstance(item, ToolOutcome)]
        if running:
            activity.note("tool", ", ".join(running))
        gate = asyncio.Semaphore(parallel)

        async def one(item: ToolOutcome | tuple[Tool, dict[str, Any]]) -> ToolOutcome:
            if isinstance(item, ToolOutcome):
                return item
            async with gate:
                return await self._execute(*item, time.monotonic(), None)

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(item)) for item in admitted]
        return [task.result() for task in tasks]

    def _admit(self, call: ToolCall) -> ToolOutcome | tuple[Tool, dict[str, Any]]:
        """The tool and its arguments, or the outcome refusing the call (invalid or a repeat)."""
        try:
            tool, arguments = self.check(call)
        except ToolError as exc:
            return ToolOutcome(
                tool=call.name,
                arguments=call.arguments,
                ok=False,
                result=f"error: {exc}",
                error=str(exc),
            )
        key = (tool.name, json.dumps(arguments, sort_keys=True))
        if key in self._seen:
            message = (
                f"{tool.name} was already called with these arguments in this step; "
                "use that result or change the arguments"
            )
            return ToolOutcome(
                tool=tool.name,
                arguments=arguments,
                ok=False,
                repeated=True,
                result=f"error: {message}",
                error=message,
            )
        self._seen.add(key)
        return tool, arguments

    async def _execute(
        self, tool: Tool, arguments: dict[str, Any], started: float, limit_chars: int | None
    ) -> ToolOutcome:
        """Run an admitted call; every failure of the tool becomes the outcome's text."""
        limit = min(limit_chars or self.ctx.max_result_chars, self.ctx.max_result_chars)
        timeout = min(tool.timeout_s or self.ctx.timeout_s, self.ctx.timeout_s)
        try:
            async with asyncio.timeout(timeout):
                result = await tool(arguments, self.ctx)
            outcome = ToolOutcome(
                tool=tool.name, arguments=arguments, ok=True, result=truncate(result, limit)
            )
        except TimeoutError:
            message = f"{tool.name} timed out after {timeout:.0f}s"
            outcome = ToolOutcome(
                tool=tool.name,
                arguments=arguments,
                ok=False,
                result=f"error: {message}",
                error=message,
            )
        # A tool's failure, even its sys.exit(), is information for the model, not a crash.
        except (Exception, SystemExit) as exc:
            message = str(exc) if isinstance(exc, ToolError) else f"{type(exc).__name__}: {exc}"
            outcome = ToolOutcome(
                tool=tool.name,
                arguments=arguments,
                ok=False,
                result=truncate(f"error: {one_line(message)}", limit),
                error=one_line(message, MAX_ERROR_CHARS),
            )
        outcome.wall_s = round(time.monotonic() - started, 3)
        return outcome
