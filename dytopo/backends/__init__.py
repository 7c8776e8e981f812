"""LLM backends: the interface, the llama.cpp client, request types, slot limiter, token meter."""

from dytopo.backends.base import Backend, estimate_tokens
from dytopo.backends.limiter import QueueClock, SlotLimiter, queue_clock
from dytopo.backends.llamacpp import LlamaCppBackend
from dytopo.backends.settings import BackendSettings
from dytopo.backends.types import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    Sampling,
    ServerInfo,
    Timings,
    ToolCall,
    Usage,
)

__all__ = [
    "Backend",
    "BackendSettings",
    "ChatMessage",
    "ChatRequest",
    "ChatResponse",
    "LlamaCppBackend",
    "QueueClock",
    "Sampling",
    "ServerInfo",
    "SlotLimiter",
    "Timings",
    "ToolCall",
    "Usage",
    "estimate_tokens",
    "queue_clock",
]
