"""The OS sandbox (bubblewrap, rlimits, seccomp) that runs untrusted Python: tools, checks."""

from dytopo.sandbox.bwrap import (
    FIX,
    SandboxError,
    SandboxLimits,
    SandboxResult,
    SandboxUnavailable,
    run_sandboxed,
    sandbox_problem,
)

__all__ = [
    "FIX",
    "SandboxError",
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailable",
    "run_sandboxed",
    "sandbox_problem",
]
