"""Typed messages exchanged with an LLM backend (OpenAI chat-completions shape)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _encodable(text: str) -> str:
    # JSON may carry a lone surrogate (`"\ud800"`: from a model's reply, a tool result, a task)
    # that no UTF-8 request body can hold; replaced here, every message stays sendable.
    return _LONE_SURROGATE.sub("\ufffd", text)


Text = Annotated[str, AfterValidator(_encodable)]
"""A string that can always be encoded as UTF-8."""


class ToolCall(BaseModel):
    """One function call requested by the model; `arguments` is the raw JSON text."""

    id: Text = ""
    name: Text
    arguments: Text = "{}"


class ChatMessage(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: Text | None = None
    tool_calls: list[ToolCall] | None = None
    """Calls made by an assistant message."""
    tool_call_id: str | None = None
    """For role `tool`: the call this message answers."""

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


class Sampling(BaseModel):
    """Sampling parameters; None means the server's default."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    temperature: float | None = 0.7
    top_p: float | None = 0.8
    top_k: int | None = 20
    min_p: float | None = 0.0
    repeat_penalty: float | None = 1.0
    """1.0 is off: a repeat penalty corrupts JSON."""
    seed: int | None = None


class ChatRequest(BaseModel):
    """A chat-completion request, independent of any server."""

    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage]
    max_tokens: int = 512
    sampling: Sampling = Field(default_factory=Sampling)
    json_schema: dict[str, Any] | None = None
    """Constrain the reply to this JSON schema (llama-server grammar-constrained output)."""
    tools: list[dict[str, Any]] | None = None
    """OpenAI-style tool definitions."""
    tool_choice: Literal["auto", "required", "none"] | None = None
    stop: list[str] | None = None
    tag: str = ""
    """Who asks (agent id, 'manager', 'doctor'): goes into logs and accounting only."""


class Usage(BaseModel):
    """Token counts for one or many requests."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    """Prompt tokens the server did not process again: reused from its prompt cache
    (llama-server's `timings.cache_n`; counted in `prompt_tokens` too)."""
    requests: int = 0

    def __sub__(self, other: Usage) -> Usage:
        """What was used since `other` was taken from the same running total."""
        return Usage(
            prompt_tokens=self.prompt_tokens - other.prompt_tokens,
            completion_tokens=self.completion_tokens - other.completion_tokens,
            cached_tokens=self.cached_tokens - other.cached_tokens,
            requests=self.requests - other.requests,
        )

    @property
    def cached_share(self) -> float:
        """The share of prompt tokens served from the server's prompt cache (0 without any)."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            requests=self.requests + other.requests,
        )


class Timings(BaseModel):
    """llama-server's own `timings` block (absent on other servers)."""

    prompt_n: int = 0
    prompt_ms: float = 0.0
    prompt_per_second: float = 0.0
    predicted_n: int = 0
    predicted_ms: float = 0.0
    predicted_per_second: float = 0.0
    cache_n: int = 0


class ChatResponse(BaseModel):
    """The parsed reply of one chat completion."""

    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str = "stop"
    usage: Usage = Field(default_factory=Usage)
    timings: Timings | None = None
    attempts: int = 1
    """HTTP attempts it took (1 = no retry)."""
    wall_s: float = 0.0


class ServerInfo(BaseModel):
    """What the client learned about the server when it connected."""

    base_url: str
    model: str = "unknown"
    slots: int
    """Requests the server runs at once; the client never sends more."""
    n_ctx_per_slot: int
    """Context window of one request (prompt + output), in tokens."""
    supports_tools: bool | None = None
    """From the chat template's capabilities; None when the server does not say."""
    llamacpp: bool = True
    """False for servers without llama.cpp's /props, /tokenize, /slots endpoints."""
    build: str = ""
