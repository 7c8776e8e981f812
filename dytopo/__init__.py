"""DyTopo: multi-agent LLM swarms whose communication graph is rebuilt every round.

The public API: the run entry points; the swarm and what it is built from; what a custom agent,
manager, tool, backend or embedder implements or receives; a run's result; every error. The
request types stay because a custom Backend implements methods that take and return them.
Everything else (the slot limiter, checkpoints, run state, the embedded server, the benchmark's
simulated server) is reachable from its own module.
"""

from dytopo.agent import Agent, AgentOutput, FunctionAgent, StepContext
from dytopo.answer import AnswerSpec, Work
from dytopo.backends import (
    Backend,
    BackendSettings,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    LlamaCppBackend,
    Sampling,
    ServerInfo,
    ToolCall,
    Usage,
)
from dytopo.cards import RoleCard, load_card
from dytopo.embedders import Embedder, HashEmbedder, HttpEmbedder
from dytopo.errors import (
    AgentAborted,
    AgentFailed,
    BackendError,
    BackendUnavailable,
    BudgetExceeded,
    CardError,
    ConfigError,
    ContextOverflow,
    DyTopoError,
    MalformedReply,
    ManagedServerError,
    NotAllowed,
    NotResumable,
    OverLimit,
    PoolExhausted,
    QueueFull,
    RoundFailed,
    RunError,
    RunInUse,
    SandboxError,
    SandboxUnavailable,
    ServiceClosed,
    StepTimeout,
    TokenCapReached,
    ToolError,
    UnknownTopology,
)
from dytopo.llm_agent import LLMAgent
from dytopo.loader import load_topology
from dytopo.logs import configure_logging
from dytopo.manager import (
    FinalAnswer,
    LLMManager,
    Manager,
    ManagerDecision,
    PublicMessage,
    TeamMember,
)
from dytopo.memory import MemoryItem
from dytopo.result import HaltReason, RoundRecord, RunResult
from dytopo.router import Edge, Routing
from dytopo.routing import RoutingConfig
from dytopo.runner import (
    aresume,
    arun,
    connect,
    load_swarm,
    resume,
    resume_run,
    run,
    run_topology,
)
from dytopo.swarm import Swarm
from dytopo.tools import Tool, ToolContext, tool
from dytopo.topology import Topology
from dytopo.trace import Observer

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentAborted",
    "AgentFailed",
    "AgentOutput",
    "AnswerSpec",
    "Backend",
    "BackendError",
    "BackendSettings",
    "BackendUnavailable",
    "BudgetExceeded",
    "CardError",
    "ChatMessage",
    "ChatRequest",
    "ChatResponse",
    "ConfigError",
    "ContextOverflow",
    "DyTopoError",
    "Edge",
    "Embedder",
    "FinalAnswer",
    "FunctionAgent",
    "HaltReason",
    "HashEmbedder",
    "HttpEmbedder",
    "LLMAgent",
    "LLMManager",
    "LlamaCppBackend",
    "MalformedReply",
    "ManagedServerError",
    "Manager",
    "ManagerDecision",
    "MemoryItem",
    "NotAllowed",
    "NotResumable",
    "Observer",
    "OverLimit",
    "PoolExhausted",
    "PublicMessage",
    "QueueFull",
    "RoleCard",
    "RoundFailed",
    "RoundRecord",
    "Routing",
    "RoutingConfig",
    "RunError",
    "RunInUse",
    "RunResult",
    "Sampling",
    "SandboxError",
    "SandboxUnavailable",
    "ServerInfo",
    "ServiceClosed",
    "StepContext",
    "StepTimeout",
    "Swarm",
    "TeamMember",
    "TokenCapReached",
    "Tool",
    "ToolCall",
    "ToolContext",
    "ToolError",
    "Topology",
    "UnknownTopology",
    "Usage",
    "Work",
    "__version__",
    "aresume",
    "arun",
    "configure_logging",
    "connect",
    "load_card",
    "load_swarm",
    "load_topology",
    "resume",
    "resume_run",
    "run",
    "run_topology",
    "tool",
]
