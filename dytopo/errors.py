"""The error family. Every message says what went wrong and what to do about it."""

from __future__ import annotations

from typing import Any


class DyTopoError(Exception):
    """Base class of every error DyTopo raises on purpose."""


class ConfigError(DyTopoError):
    """A configuration file or value is wrong; the message names the file, field and fix."""


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


class BudgetExceeded(DyTopoError):
    """A token budget cannot be met; the message names the budget to lower."""


class ToolError(DyTopoError):
    """A tool refused its input or failed."""


class ManagedServerError(DyTopoError):
    """The embedded llama-server could not be installed, started or stopped."""


class RunError(DyTopoError):
    """A run failed part-way; `partial` holds everything computed before the failure."""

    def __init__(self, message: str, *, partial: Any = None) -> None:
        super().__init__(message)
        self.partial = partial


class RunInUse(DyTopoError):
    """Another process is writing this run (its trace is locked): one writer per run."""


class AgentFailed(DyTopoError):
    """An agent could not produce a valid step (after the whole re-ask ladder)."""


class RoundFailed(AgentFailed):
    """No agent step of a round succeeded: the run has nothing to route or decide on."""
