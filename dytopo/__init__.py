"""DyTopo: multi-agent LLM swarms whose communication graph is rebuilt every round.

The public API: the run entry points; the swarm and what it is built from; what a custom agent,
manager, tool, backend or embedder implements or receives; a run's result; the errors a run
raises. The transport stays in its subpackage: a custom Backend imports the request and reply
types it implements (`ChatRequest`, `ChatResponse`, `ServerInfo` ...) from `dytopo.backends`.
Everything else (the slot limiter, checkpoints, run state, the embedded server, the benchmark's
simulated server) is reachable from its own module, and every error class from `dytopo.errors`
(the service's, the batch pool's and the sandbox's are not exported here).
"""

from dytopo.agents import (
    Agent,
    AgentOutput,
    AnswerSpec,
    FinalAnswer,
    FunctionAgent,
    LLMAgent,
    LLMManager,
    Manager,
    ManagerDecision,
    MemoryItem,
    PublicMessage,
    RoleCard,
    StepContext,
    TeamMember,
    Work,
    load_card,
)
from dytopo.backends import (
    Backend,
    BackendSettings,
    LlamaCppBackend,
    Sampling,
    Usage,
)
from dytopo.embedders import Embedder, HashEmbedder, HttpEmbedder
from dytopo.errors import (
    AgentFailed,
    BackendError,
    BackendUnavailable,
    BudgetExceeded,
    ConfigError,
    ContextOverflow,
    DyTopoError,
    MalformedReply,
    ManagedServerError,
    RoundFailed,
    RunError,
    RunInUse,
    TokenCapReached,
    ToolError,
)
from dytopo.loader import load_topology
from dytopo.logs import configure_logging
from dytopo.routing import Edge, Routing, RoutingConfig
from dytopo.runner import (
    aresume,
    arun,
    connect,
    load_swarm,
    resume,
    run,
)
from dytopo.swarm import HaltReason, Observer, RoundRecord, RunResult, Swarm
from dytopo.tools import Tool, ToolContext, tool
from dytopo.topology import Topology
from dytopo.versions import __version__

__all__ = [
    "Agent",
    "AgentFailed",
    "AgentOutput",
    "AnswerSpec",
    "Backend",
    "BackendError",
    "BackendSettings",
    "BackendUnavailable",
    "BudgetExceeded",
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
    "Observer",
    "PublicMessage",
    "RoleCard",
    "RoundFailed",
    "RoundRecord",
    "Routing",
    "RoutingConfig",
    "RunError",
    "RunInUse",
    "RunResult",
    "Sampling",
    "StepContext",
    "Swarm",
    "TeamMember",
    "TokenCapReached",
    "Tool",
    "ToolContext",
    "ToolError",
    "Topology",
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
    "run",
    "tool",
]
