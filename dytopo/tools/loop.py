"""The tool phase of an agent step: native tool calls, validated, re-asked, executed, capped.

Every reply ends as valid calls that run, or as a recorded failure; nothing raises out of the
phase except transport errors (the server being down is not the model's fault).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from dytopo.backends.base import Backend
from dytopo.backends.types import ChatMessage, ChatRequest, Sampling, ToolCall, Usage
from dytopo.errors import MalformedReply, ToolError
from dytopo.structured import REASK_TEMPERATURE, Attempt
from dytopo.tools.executor import ToolExecutor, ToolOutcome

Emit = Callable[..., None]


@dataclass
class ToolPhase:
    """What the phase produced for the agent's final answer and the trace."""

    outcomes: list[ToolOutcome] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    failed: str = ""
    """Why the ladder gave up on getting a valid call (empty when it did not)."""


@dataclass
class ToolPolicy:
    """How an agent uses tools."""

    choice: Literal["auto", "required"] = "auto"
    """required: the first request must call a tool (small models rarely decide to on their own)."""
    max_rounds: int = 2
    """Model turns with tool calls per step."""
    max_calls: int = 4
    """Tool executions per step."""
    reasks: int = 2
    max_tokens: int = 256
    prefill: str | None = "<tool_call>\n"
    """With `required`: an assistant prefix opening the call (Hermes/Qwen template format)."""


async def run_tools(
    backend: Backend,
    messages: list[ChatMessage],
    executor: ToolExecutor,
    policy: ToolPolicy,
    sampling: Sampling,
    *,
    tag: str = "",
    emit: Emit | None = None,
) -> ToolPhase:
    """Let the model call tools; return the executed outcomes (for the final prompt)."""
    phase = ToolPhase()
    definitions = [t.definition() for t in executor.tools.values()]
    history = list(messages)
    for turn in range(policy.max_rounds):
        choice: Literal["auto", "required"] = policy.choice if turn == 0 else "auto"
        calls = await _valid_calls(
            backend, history, definitions, executor, policy, sampling, choice, tag, phase, emit
        )
        if not calls:
            break
        calls = calls[: max(0, policy.max_calls - len(phase.outcomes))]
        outcomes = [await executor.run(call) for call in calls]
        for outcome in outcomes:
            phase.outcomes.append(outcome)
            if emit:
                emit("tool_call", **outcome.model_dump())
        history.append(ChatMessage(role="assistant", tool_calls=calls))
        history += [
            ChatMessage(role="tool", tool_call_id=c.id or c.name, content=o.result)
            for c, o in zip(calls, outcomes, strict=True)
        ]
        if all(o.repeated for o in outcomes) or len(phase.outcomes) >= policy.max_calls:
            break
    return phase


async def _valid_calls(
    backend: Backend,
    history: list[ChatMessage],
    definitions: list[dict[str, Any]],
    executor: ToolExecutor,
    policy: ToolPolicy,
    sampling: Sampling,
    choice: Literal["auto", "required"],
    tag: str,
    phase: ToolPhase,
    emit: Emit | None,
) -> list[ToolCall]:
    """The ladder for tool calls: ask, validate, re-ask at 0.1 with the error, or give up."""
    extra: list[ChatMessage] = []
    for number in range(1, policy.reasks + 2):
        temperature = sampling.temperature if number == 1 else REASK_TEMPERATURE
        prefill = policy.prefill if choice == "required" and policy.prefill else None
        request = ChatRequest(
            messages=[
                *history,
                *extra,
                *([ChatMessage(role="assistant", content=prefill)] if prefill else []),
            ],
            tools=definitions,
            tool_choice=choice,
            max_tokens=policy.max_tokens,
            sampling=sampling.model_copy(update={"temperature": temperature}),
            stop=["</tool_call>"] if prefill else None,
            tag=tag,
        )
        error, raw = "", ""
        calls: list[ToolCall] = []
        valid: list[ToolCall] = []
        refused: list[tuple[ToolCall, str]] = []
        try:
            reply = await backend.chat(request)
            phase.usage = phase.usage + reply.usage
            raw, calls = reply.content, reply.tool_calls
            if not calls and choice == "required":
                error = "no tool call in the reply; call one of the tools"
            for call in calls:
                try:
                    executor.check(call)
                    valid.append(call)
                except ToolError as exc:
                    refused.append((call, str(exc)))
            if calls and not valid:
                error = refused[0][1]
        except MalformedReply as exc:
            error = f"malformed tool call: {exc.body[:300] or exc}"
        shown = raw or "; ".join(f"{c.name}({c.arguments})" for c in calls) or "(nothing)"
        attempt = Attempt(
            attempt=number,
            temperature=temperature,
            ok=not error,
            error=error,
            kind="tool_call",
            reply=shown[:300] if error else "",
        )
        phase.attempts.append(attempt)
        if emit:
            emit("ladder", **attempt.model_dump())
        if not error:
            # A reply mixing valid and invalid calls (small models repeat a call until
            # max_tokens cuts the last one off) runs the valid ones; the rest are recorded.
            for call, why in refused:
                outcome = ToolOutcome(
                    tool=call.name,
                    arguments=call.arguments,
                    ok=False,
                    result=f"error: {why}",
                    error=why,
                )
                phase.outcomes.append(outcome)
                if emit:
                    emit("tool_call", **outcome.model_dump())
            return valid
        names = ", ".join(sorted(executor.tools))
        extra = [
            ChatMessage(role="assistant", content=shown[:600]),
            ChatMessage(
                role="user",
                content=f"That tool call was not valid: {error}. "
                f"Call one of: {names}, with arguments matching its schema.",
            ),
        ]
    phase.failed = phase.attempts[-1].error if phase.attempts else "no attempt"
    return []


def tool_notes(outcomes: Sequence[ToolOutcome]) -> list[str]:
    """Tool results as prompt notes for the agent's final answer (most recent first)."""
    notes = []
    for o in reversed(outcomes):
        args = (
            o.arguments
            if isinstance(o.arguments, str)
            else ", ".join(f"{k}={v!r}" for k, v in o.arguments.items())
        )
        notes.append(f"[tool {o.tool}({args})] {o.result}")
    return notes
