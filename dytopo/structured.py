"""Structured output that never crashes a step: constrain, parse, re-ask, then fail cleanly.

The ladder: (a) ask with the server's JSON-schema constraint; (b) parse strictly and validate
with pydantic; (c) on failure re-ask at temperature 0.1 showing the error; (d) after the last
re-ask, return a recorded failure for the caller to handle.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field, ValidationError

from dytopo.backends.base import Backend
from dytopo.backends.types import ChatMessage, ChatRequest, Usage
from dytopo.errors import MalformedReply

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


def schema_for(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def parse_strict(model: type[T], text: str) -> T:
    """The reply must be exactly one JSON object for `model`; nothing is repaired silently."""
    return model.model_validate_json(text.strip())


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in e['loc']) or 'reply'}: {e['msg']}" for e in exc.errors()[:5]
        ]
        return "; ".join(parts)
    return f"{type(exc).__name__}: {exc}"[:400]


async def ask_structured(
    backend: Backend,
    request: ChatRequest,
    model: type[T],
    *,
    reasks: int = 2,
    on_attempt: Callable[[Attempt], None] | None = None,
) -> Structured[T]:
    """Run the ladder for one structured reply. Only transport failures raise."""
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
        reply_text, finish = "", ""
        try:
            reply = await backend.chat(attempt_request)
            result.usage = result.usage + reply.usage
            reply_text, finish = reply.content, reply.finish_reason
            if finish == "length":
                raise ValueError(
                    f"reply cut off at max_tokens={request.max_tokens}; write shorter fields"
                )
            value = parse_strict(model, reply_text)
        except (ValidationError, ValueError, MalformedReply) as exc:
            attempt = Attempt(
                attempt=number,
                temperature=sampling.temperature,
                ok=False,
                error=_describe(exc),
                finish_reason=finish,
                reply=reply_text[:300],
            )
            result.attempts.append(attempt)
            result.raw = reply_text
            if on_attempt:
                on_attempt(attempt)
            messages = [*request.messages, *_reask(reply_text, attempt.error, schema)]
            continue
        attempt = Attempt(
            attempt=number, temperature=sampling.temperature, ok=True, finish_reason=finish
        )
        result.attempts.append(attempt)
        if on_attempt:
            on_attempt(attempt)
        result.value, result.raw = value, reply_text
        return result
    return result


def _reask(bad_reply: str, error: str, schema: dict[str, Any]) -> list[ChatMessage]:
    fields = ", ".join(schema.get("properties", {}))
    return [
        ChatMessage(role="assistant", content=bad_reply[:1500] or "(empty reply)"),
        ChatMessage(
            role="user",
            content=(
                f"That reply was not valid: {error}. Answer again with ONLY one JSON object with "
                f"the keys {fields}, all strings unless the schema says otherwise. "
                f"Schema: {json.dumps(schema)[:1500]}"
            ),
        ),
    ]
