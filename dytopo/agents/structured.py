"""Structured output that never crashes a step: constrain, parse, re-ask, then fail cleanly.

The ladder: (a) ask with the server's JSON-schema constraint; (b) parse strictly and validate
with pydantic; (c) on failure re-ask at temperature 0.1 showing the error; (d) after the last
re-ask, return a recorded failure for the caller to handle.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field, ValidationError

from dytopo.agents.prompting import Pack, clip_tokens
from dytopo.backends.base import Backend
from dytopo.backends.types import ChatMessage, ChatRequest, ChatResponse, Usage
from dytopo.errors import AgentFailed, BudgetExceeded, MalformedReply

T = TypeVar("T", bound=BaseModel)

REASK_TEMPERATURE = 0.1


class Attempt(BaseModel):
    """One rung of the ladder."""

    attempt: int
    temperature: float | None
    ok: bool
    error: str = ""
    finish_reason: str = ""
    kind: str = "structured"
    """structured (a JSON answer) or tool_call."""
    reply: str = ""
    """The start of a rejected reply, to see what the model did wrong."""
    usage: Usage = Field(default_factory=Usage)
    """What this request used, cached prompt tokens included (zero when no reply came)."""


class Structured(BaseModel, Generic[T]):
    """What the ladder produced: a validated value, or None with every attempt's error."""

    value: T | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    raw: str = ""
    """The last reply text (kept for the trace when everything failed)."""

    @property
    def error(self) -> str:
        return self.attempts[-1].error if self.attempts and self.value is None else ""

    def required(self, who: str, what: str = "reply") -> T:
        """The value, or AgentFailed naming `who`, the attempts and the last error."""
        if self.value is None:
            raise AgentFailed(
                f"{who}: no valid {what} after {len(self.attempts)} attempts ({self.error})"
            )
        return self.value


@functools.cache
def schema_for(model: type[BaseModel]) -> dict[str, Any]:
    # Built once per model (pydantic takes milliseconds to build one); shared, never mutated.
    return model.model_json_schema()


def parse_strict(model: type[T], text: str) -> T:
    """The reply must be exactly one JSON object for `model`; nothing is repaired silently."""
    return model.model_validate_json(text.strip())


def _describe(exc: Exception) -> str:
    """One line: the error reaches the trace, AgentFailed and CLI lines, and it quotes the model."""
    if isinstance(exc, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in e['loc']) or 'reply'}: {e['msg']}" for e in exc.errors()[:5]
        ]
        text = "; ".join(parts)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:400]


def _judge(model: type[T], reply: ChatResponse, max_tokens: int) -> tuple[T | None, str]:
    """The validated value, or None and what is wrong with the reply."""
    if reply.finish_reason == "length":
        return None, f"reply cut off at max_tokens={max_tokens}; write shorter fields"
    try:
        return parse_strict(model, reply.content), ""
    except ValidationError as exc:  # pydantic reports invalid JSON as a ValidationError too
        return None, _describe(exc)


async def ask_structured(
    backend: Backend,
    request: ChatRequest,
    model: type[T],
    *,
    reasks: int = 2,
    on_attempt: Callable[[Attempt], None] | None = None,
    pack: Pack | None = None,
) -> Structured[T]:
    """Run the ladder for one structured reply.

    Only a bad reply is re-asked: one that does not validate, was cut off at max_tokens, or
    that the server itself could not parse (MalformedReply). Anything else `backend.chat`
    raises (and cancellation) propagates at once. `pack(extra)` returns the prompt with the
    re-ask messages pinned at its end, fitted to the context budget; without it they are
    appended to `request.messages`.
    """
    result: Structured[T] = Structured()
    schema = schema_for(model)
    messages = list(request.messages)
    for number in range(1, reasks + 2):
        sampling = request.sampling
        if number > 1:
            sampling = sampling.model_copy(update={"temperature": REASK_TEMPERATURE})
        attempt_request = request.model_copy(
            update={"messages": messages, "json_schema": schema, "sampling": sampling}
        )
        reply_text, finish, used = "", "", Usage()
        value: T | None = None
        try:
            reply = await backend.chat(attempt_request)
        except MalformedReply as exc:
            error = _describe(exc)
        else:
            result.usage, used = result.usage + reply.usage, reply.usage
            reply_text, finish = reply.content, reply.finish_reason
            value, error = _judge(model, reply, request.max_tokens)
        last = value is not None or number > reasks
        if not last:
            try:
                messages = await _reask_prompt(backend, request, reply_text, error, schema, pack)
            except BudgetExceeded as exc:
                # Even the bare correction does not fit beside the pinned prompt: asking again
                # would overflow the context, so the ladder ends here with the reason recorded.
                error, last = f"{error}; no room left to re-ask ({exc})", True
        attempt = Attempt(
            attempt=number,
            temperature=sampling.temperature,
            ok=value is not None,
            error=error,
            finish_reason=finish,
            reply=reply_text[:300] if value is None else "",
            usage=used,
        )
        result.attempts.append(attempt)
        result.raw = reply_text
        if on_attempt:
            on_attempt(attempt)
        if last:
            result.value = value
            return result
    return result


REASK_ECHO_TOKENS = 120
"""How much of a rejected reply a re-ask shows the model: its start is enough to correct."""


async def _reask_prompt(
    backend: Backend,
    request: ChatRequest,
    bad_reply: str,
    error: str,
    schema: dict[str, Any],
    pack: Pack | None,
) -> list[ChatMessage]:
    echo = await clip_tokens(backend, bad_reply, REASK_ECHO_TOKENS) if bad_reply else ""
    extra = _reask(echo, error, schema)
    if pack is None:
        return [*request.messages, *extra]
    try:
        return await pack(extra)
    except BudgetExceeded:
        # No room to show the bad reply: the correction alone still helps.
        return await pack(extra[-1:])


def _reask(echo: str, error: str, schema: dict[str, Any]) -> list[ChatMessage]:
    # The server enforces the schema itself (response_format); the keys and types suffice.
    fields = ", ".join(
        f"{name} ({spec.get('type', 'value')})"
        for name, spec in schema.get("properties", {}).items()
    )
    return [
        ChatMessage(role="assistant", content=echo or "(empty reply)"),
        ChatMessage(
            role="user",
            content=(
                f"That reply was not valid: {error}. Answer again with ONLY one JSON object "
                f"with the keys {fields}."
            ),
        ),
    ]
