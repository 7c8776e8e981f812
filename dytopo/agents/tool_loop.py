"""The tool phase of an agent step: native tool calls, validated, re-asked, executed, capped.

Every reply ends as valid calls that run, or as a recorded failure; nothing raises out of the
phase except transport errors (the server being down is not the model's fault).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from dytopo.agents.prompting import Pack, clip_tokens
from dytopo.agents.structured import REASK_TEMPERATURE, Attempt
from dytopo.backends.base import Backend
from dytopo.backends.types import ChatMessage, ChatRequest, Sampling, ToolCall, Usage
from dytopo.errors import BudgetExceeded, MalformedReply, ToolError
from dytopo.tools.executor import ToolExecutor, ToolOutcome

Emit = Callable[..., None]


@dataclass
class ToolPhase:
    """What the phase produced for the agent's final answer and the trace."""

    outcomes: list[ToolOutcome] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    failed: str = ""
    """Why the phase stopped short: the ladder gave up on getting a valid call, or the tool
    turns no longer fit the context budget (empty when neither happened)."""
    turns: list[ChatMessage] = field(default_factory=list)
    """The conversation after the prompt: each assistant turn with its tool calls, then their
    results (the answer's request continues it)."""


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
    max_parallel: int = 4
    """Calls of one turn that run at the same time."""
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
    pack: Pack | None = None,
) -> ToolPhase:
    """Let the model call tools; return the executed outcomes and the turns (the assistant's
    calls and their results, which the answer's request continues).

    `pack(extra)` fits each request (the tool turns so far and any re-ask pinned at the end) to
    the context budget; without it they are appended to `messages`. When the turns no longer
    fit, the phase ends with the results it has.
    """
    phase = ToolPhase()
    definitions = [t.definition() for t in executor.tools.values()]
    prompt = pack or _appended(messages)
    turns = phase.turns
    for turn in range(policy.max_rounds):
        choice: Literal["auto", "required"] = policy.choice if turn == 0 else "auto"
        ask = _Ask(backend, prompt, definitions, executor, policy, sampling, choice, tag, emit)
        calls = await ask.valid_calls(turns, phase)
        if not calls:
            break
        calls = calls[: max(0, policy.max_calls - len(phase.outcomes))]
        outcomes = await executor.run_all(calls, parallel=policy.max_parallel)
        for outcome in outcomes:
            phase.outcomes.append(outcome)
            if emit:
                emit("tool_call", **outcome.model_dump())
        turns.append(ChatMessage(role="assistant", tool_calls=calls))
        turns += [
            ChatMessage(role="tool", tool_call_id=c.id or c.name, content=o.result)
            for c, o in zip(calls, outcomes, strict=True)
        ]
        if all(o.repeated for o in outcomes) or len(phase.outcomes) >= policy.max_calls:
            break
    return phase


def _appended(messages: Sequence[ChatMessage]) -> Pack:
    async def pack(extra: Sequence[ChatMessage]) -> list[ChatMessage]:
        return [*messages, *extra]

    return pack


REASK_ECHO_TOKENS = 120
"""How much of a rejected tool call a re-ask shows the model."""


@dataclass
class _Ask:
    """One model turn of the tool phase."""

    backend: Backend
    prompt: Pack
    definitions: list[dict[str, Any]]
    executor: ToolExecutor
    policy: ToolPolicy
    sampling: Sampling
    choice: Literal["auto", "required"]
    tag: str
    emit: Emit | None

    async def valid_calls(self, turns: list[ChatMessage], phase: ToolPhase) -> list[ToolCall]:
        """The ladder for tool calls: ask, validate, re-ask at 0.1 with the error, or give up."""
        policy = self.policy
        prefill = policy.prefill if self.choice == "required" and policy.prefill else None
        tail = [ChatMessage(role="assistant", content=prefill)] if prefill else []
        extra: list[ChatMessage] = []
        for number in range(1, policy.reasks + 2):
            temperature = self.sampling.temperature if number == 1 else REASK_TEMPERATURE
            try:
                messages = await self.prompt([*turns, *extra, *tail])
            except BudgetExceeded as exc:
                # The tool turns (or a re-ask on top) no longer fit: stop with what was found.
                phase.failed = str(exc)
                return []
            request = ChatRequest(
                messages=messages,
                tools=self.definitions,
                tool_choice=self.choice,
                max_tokens=policy.max_tokens,
                sampling=self.sampling.model_copy(update={"temperature": temperature}),
                stop=["</tool_call>"] if prefill else None,
                tag=self.tag,
            )
            before = phase.usage
            valid, refused, error, shown = await self._judge(request, phase)
            attempt = Attempt(
                attempt=number,
                temperature=temperature,
                ok=not error,
                error=error,
                kind="tool_call",
                reply=shown[:300] if error else "",
                usage=phase.usage - before,
            )
            phase.attempts.append(attempt)
            if self.emit:
                self.emit("ladder", **attempt.model_dump())
            if not error:
                self._record_refused(refused, phase)
                return valid
            if number <= policy.reasks:
                extra = await self._reask(shown, error)
        phase.failed = phase.attempts[-1].error if phase.attempts else "no attempt"
        return []

    async def _judge(
        self, request: ChatRequest, phase: ToolPhase
    ) -> tuple[list[ToolCall], list[tuple[ToolCall, str]], str, str]:
        """Valid calls, refused calls with why, the error ("" when usable), the reply shown."""
        error, raw = "", ""
        calls: list[ToolCall] = []
        valid: list[ToolCall] = []
        refused: list[tuple[ToolCall, str]] = []
        try:
            reply = await self.backend.chat(request)
        except MalformedReply as exc:
            error = f"malformed tool call: {exc.body[:300] or exc}"
        else:
            phase.usage = phase.usage + reply.usage
            raw, calls = reply.content, reply.tool_calls
            if not calls and self.choice == "required":
                error = "no tool call in the reply; call one of the tools"
            for call in calls:
                try:
                    self.executor.check(call)
                    valid.append(call)
                except ToolError as exc:
                    refused.append((call, str(exc)))
            if calls and not valid:
                error = refused[0][1]
        shown = raw or "; ".join(f"{c.name}({c.arguments})" for c in calls) or "(nothing)"
        return valid, refused, error, shown

    def _record_refused(self, refused: list[tuple[ToolCall, str]], phase: ToolPhase) -> None:
        # A reply mixing valid and invalid calls (small models repeat a call until max_tokens
        # cuts the last one off) runs the valid ones; the rest are recorded.
        for call, why in refused:
            outcome = ToolOutcome(
                tool=call.name,
                arguments=call.arguments,
                ok=False,
                result=f"error: {why}",
                error=why,
            )
            phase.outcomes.append(outcome)
            if self.emit:
                self.emit("tool_call", **outcome.model_dump())

    async def _reask(self, shown: str, error: str) -> list[ChatMessage]:
        echo = await clip_tokens(self.backend, shown, REASK_ECHO_TOKENS)
        names = ", ".join(sorted(self.executor.tools))
        return [
            ChatMessage(role="assistant", content=echo or "(nothing)"),
            ChatMessage(
                role="user",
                content=f"That tool call was not valid: {error[:400]}. "
                f"Call one of: {names}, with arguments matching its schema.",
            ),
        ]


def tool_notes(outcomes: Sequence[ToolOutcome]) -> list[str]:
    """Tool results as prompt notes (most recent first), for an answer whose prompt cannot hold
    the tool turns themselves."""
    notes = []
    for o in reversed(outcomes):
        args = (
            o.arguments
            if isinstance(o.arguments, str)
            else ", ".join(f"{k}={v!r}" for k, v in o.arguments.items())
        )
        notes.append(f"[tool {o.tool}({args})] {o.result}")
    return notes
