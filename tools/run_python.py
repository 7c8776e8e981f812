"""run_python: a Python snippet in a separate, locked-down, short-lived process.

Layers, outermost first:
- a new session (process group) that is SIGKILLed as a whole at the wall-clock limit and
  again after a normal exit, so nothing the snippet started survives it;
- `python -I -S`: no environment variables, no user or site packages, no script folder on
  sys.path; an empty environment besides; stdin is /dev/null;
- a fresh scratch folder as working directory, HOME and TMPDIR, deleted afterwards;
- in the child (tools/_sandbox.py, before the snippet is even read): a private network
  namespace where Linux allows it, rlimits (address space, CPU, file size, descriptors,
  processes, no core dumps), the `nobody` user when started as root, and an audit hook
  refusing sockets, new processes, ctypes and file access outside the scratch folder.

Results: whatever ran (including a crash, a MemoryError, or a kill at a limit) comes back as
result text whose first line is the status, e.g. `[exit status 1]` or `[timed out after 10 s:
the process was killed]`, followed by the combined stdout and stderr. ToolError is raised only
when the snippet is refused before it runs.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dytopo.errors import ToolError
from dytopo.tools import ToolContext, tool

PRELUDE = Path(__file__).resolve().with_name("_sandbox.py")
MAX_CODE_CHARS = 100_000
MAX_WALL_S = 10.0
# Output files larger than this are cut by RLIMIT_FSIZE (the snippet gets an OSError).
MAX_OUTPUT_BYTES = 4 * 1024 * 1024
NOBODY = 65534


def _sandbox_uid() -> int:
    """`nobody` when we are root and `nobody` can still reach the standard library, else -1.

    (An interpreter installed under a private home, like /root/.pyenv, is out of nobody's
    reach; the child then keeps our user and relies on the other layers.)
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return -1
    stdlib = Path(os.__file__).resolve().parent
    for folder in (stdlib, *stdlib.parents):
        if not folder.stat().st_mode & stat.S_IXOTH:
            return -1
    return NOBODY


def _wait(pid: int, limit_s: float) -> bool:
    """Wait for the child to exit *without reaping it*; False if the limit passed first.

    While the exited child is an unreaped zombie its pid (the process-group id) cannot be
    reused, so the killpg() that follows cannot hit an unrelated process group.
    """
    deadline = time.monotonic() + limit_s
    pause = 0.002
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _status(returncode: int, timed_out: bool, limit_s: float, cpu_s: int) -> str:
    if timed_out:
        return f"[timed out after {limit_s:g} s: the process was killed]"
    if returncode >= 0:
        return f"[exit status {returncode}]"
    sig = -returncode
    if sig == signal.SIGXCPU:
        return f"[killed: CPU time limit of {cpu_s} s exceeded]"
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
    if os.name != "posix" or not hasattr(os, "waitid"):
        raise ToolError("run_python needs a Linux host (process groups, rlimits, waitid)")
    limit_s = min(ctx.timeout_s, MAX_WALL_S)
    cpu_s = math.ceil(limit_s) + 1  # the wall clock normally strikes first
    uid = _sandbox_uid()
    fsize = min(ctx.max_bytes, MAX_OUTPUT_BYTES)
    base = Path(tempfile.mkdtemp(prefix="dytopo-run-"))  # mode 0700: only we can look in
    try:
        scratch = base / "scratch"
        scratch.mkdir()
        if uid >= 0:
            os.chown(scratch, uid, uid)
        code_file = base / "snippet.py"
        code_file.write_text(code, encoding="utf-8")
        argv = [
            sys.executable,
            *("-I", "-S", "-B", "-u", "-X", "utf8"),  # -u: output survives a kill
            str(PRELUDE),
            str(code_file),
            str(scratch),
            str(ctx.python_memory_mb),
            str(cpu_s),
            str(fsize),
            str(uid),
        ]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(scratch), "TMPDIR": str(scratch)}
        # One file for stdout and stderr keeps their interleaving and cannot fill up a pipe.
        with open(base / "output", "wb") as output:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    cwd=scratch,
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                raise ToolError(f"run_python could not start Python: {exc}") from None
            try:
                timed_out = not _wait(proc.pid, limit_s)
            finally:
                _kill_group(proc.pid)
                proc.wait()
        with open(base / "output", "rb") as result:
            raw = result.read(MAX_OUTPUT_BYTES)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    status = _status(proc.returncode, timed_out, limit_s, cpu_s)
    if len(raw) >= fsize:  # later writes, the traceback included, failed with EFBIG
        status += f" [output stopped at the {fsize}-byte limit]"
    text = raw.decode("utf-8", errors="replace") or "(no output)"
    return f"{status}\n{_clip(text, ctx.max_result_chars - len(status) - 1)}"
