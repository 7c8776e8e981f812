"""DyTopo: multi-agent LLM swarms whose communication graph is rebuilt every round."""

from dytopo.backends import (
    Backend,
    BackendSettings,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    LlamaCppBackend,
    Sampling,
    ServerInfo,
    SlotLimiter,
    Usage,
)
from dytopo.embedders import Embedder, HashEmbedder, HttpEmbedder
from dytopo.errors import (
    BackendError,
    BackendUnavailable,
    BudgetExceeded,
    ConfigError,
    ContextOverflow,
    DyTopoError,
    MalformedReply,
    ManagedServerError,
    RunError,
    ToolError,
)
from dytopo.managed import ManagedStack

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendError",
    "BackendSettings",
    "BackendUnavailable",
    "BudgetExceeded",
    "ChatMessage",
    "ChatRequest",
    "ChatResponse",
    "ConfigError",
    "ContextOverflow",
    "DyTopoError",
    "Embedder",
    "HashEmbedder",
    "HttpEmbedder",
    "LlamaCppBackend",
    "MalformedReply",
    "ManagedServerError",
    "ManagedStack",
    "RunError",
    "Sampling",
    "ServerInfo",
    "SlotLimiter",
    "ToolError",
    "Usage",
    "__version__",
]
