"""DyTopo: multi-agent LLM swarms whose communication graph is rebuilt every round."""

from dytopo.agent import Agent, AgentOutput, FunctionAgent, StepContext
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
from dytopo.cards import RoleCard, load_card
from dytopo.checkpoint import Checkpoint
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
from dytopo.managed import ManagedStack
from dytopo.manager import LLMManager, Manager, ManagerDecision
from dytopo.result import RoundRecord, RunResult
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
from dytopo.simulated import SimulatedBackend
from dytopo.state import RunState
from dytopo.swarm import Swarm
from dytopo.topology import Topology

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentAborted",
    "AgentFailed",
    "AgentOutput",
    "Backend",
    "BackendError",
    "BackendSettings",
    "BackendUnavailable",
    "BudgetExceeded",
    "CardError",
    "ChatMessage",
    "ChatRequest",
    "ChatResponse",
    "Checkpoint",
    "ConfigError",
    "ContextOverflow",
    "DyTopoError",
    "Embedder",
    "FunctionAgent",
    "HashEmbedder",
    "HttpEmbedder",
    "LLMAgent",
    "LLMManager",
    "LlamaCppBackend",
    "MalformedReply",
    "ManagedServerError",
    "ManagedStack",
    "Manager",
    "ManagerDecision",
    "NotAllowed",
    "NotResumable",
    "OverLimit",
    "PoolExhausted",
    "QueueFull",
    "RoleCard",
    "RoundFailed",
    "RoundRecord",
    "RoutingConfig",
    "RunError",
    "RunInUse",
    "RunResult",
    "RunState",
    "Sampling",
    "SandboxError",
    "SandboxUnavailable",
    "ServerInfo",
    "ServiceClosed",
    "SimulatedBackend",
    "SlotLimiter",
    "StepContext",
    "StepTimeout",
    "Swarm",
    "TokenCapReached",
    "ToolError",
    "Topology",
    "UnknownTopology",
    "Usage",
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
]
