"""run_python: a Python snippet in an OS sandbox (bubblewrap), see `dytopo.sandbox`.

The snippet runs as uid 65534 in its own user, pid, network, ipc, uts and mount namespaces,
sees only the Python runtime read-only (plus the folders `tool_settings.python_read_only`
names), writes only to a size-capped tmpfs scratch folder that is its working directory, and
is held by rlimits (memory, CPU, file size, processes) and a wall-clock limit that kills the
whole namespace. Where the host cannot provide that isolation, run_python refuses with one line
naming the fix; there is no weaker fallback.

Results: whatever ran (including a crash, a MemoryError, or a kill at a limit) comes back as
result text whose first line is the status, e.g. `[exit status 1]` or `[timed out after 10 s:
the process was killed]`, followed by the combined stdout and stderr. ToolError is raised only
when the snippet is refused before it runs.
"""

from __future__ import annotations

import signal

from dytopo.errors import SandboxError, SandboxUnavailable, ToolError
from dytopo.sandbox import FIX, SandboxLimits, SandboxResult, run_sandboxed
from dytopo.tools import ToolContext, tool

MAX_CODE_CHARS = 100_000
MAX_WALL_S = 10.0
# Output (and any one file the snippet writes) larger than this is cut by RLIMIT_FSIZE.
MAX_OUTPUT_BYTES = 4 * 1024 * 1024


def _status(result: SandboxResult, limits: SandboxLimits) -> str:
    if result.timed_out or result.returncode is None:
        return f"[timed out after {limits.wall_s:g} s: the process was killed]"
    if result.returncode >= 0:
        return f"[exit status {result.returncode}]"
    sig = -result.returncode
    if sig == signal.SIGXCPU:
        return f"[killed: CPU time limit of {limits.cpu_limit_s} s exceeded]"
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = str(sig)
    return f"[killed by signal {name}]"


def _clip(text: str, budget: int) -> str:
    """Keep the head and the tail: a traceback's last lines matter most."""
    if len(text) <= budget:
        return text
    half = max(budget // 2 - 40, 0)
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters omitted ...]\n{text[-half:]}"


@tool
def run_python(code: str, ctx: ToolContext) -> str:
    """Run a Python snippet (standard library only) in a sandbox and return its output.

    No network, no files outside a temporary scratch folder, a few seconds and a few hundred
    MB at most. Print what you want to see.

    Args:
        code: a complete Python program, e.g. "import math\\nprint(math.comb(10, 3))".
    """
    if not code.strip():
        raise ToolError("run_python needs some code to run, e.g. print(2 + 2)")
    if len(code) > MAX_CODE_CHARS:
        raise ToolError(f"run_python takes at most {MAX_CODE_CHARS} characters of code")
    limits = SandboxLimits(
        wall_s=min(ctx.timeout_s, MAX_WALL_S),
        memory_mb=ctx.python_memory_mb,
        output_bytes=min(ctx.max_bytes, MAX_OUTPUT_BYTES),
        scratch_mb=ctx.python_scratch_mb,
    )
    binds = [ctx.workspace / path for path in ctx.python_read_only]  # absolute paths stay
    try:
        result = run_sandboxed(code, limits, binds)
    except SandboxUnavailable as exc:
        raise ToolError(
            f"run_python needs bubblewrap with user namespaces ({exc.reason}): {FIX}"
        ) from None
    except SandboxError as exc:
        raise ToolError(f"run_python: {exc}") from None
    status = _status(result, limits)
    if result.output_truncated:  # later writes, the traceback included, failed with EFBIG
        status += f" [output stopped at the {limits.output_bytes}-byte limit]"
    text = result.output.decode("utf-8", errors="replace") or "(no output)"
    return f"{status}\n{_clip(text, ctx.max_result_chars - len(status) - 1)}"
