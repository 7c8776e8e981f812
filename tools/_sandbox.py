"""The first code of run_python's child interpreter: lock the process down, then run the snippet.

Started by run_python as `python -I -S -B -u -X utf8 _sandbox.py CODE SCRATCH MEM_MB CPU_S FSIZE
UID`. Not a tool module (the leading underscore keeps the registry away); standard library only.

Order matters. Kernel-enforced layers come first: a private network namespace, resource limits,
an unprivileged user. Then an audit hook (PEP 578) refuses sockets, new processes, ctypes and
file access outside the scratch folder. PEP 578 hooks are a tripwire against naive escapes, not
a security boundary; the kernel layers and the parent's process-group kill are the boundary.
"""

from __future__ import annotations

import builtins
import linecache
import os
import resource
import socket
import stat
import sys
import traceback
import types
from typing import Any, NoReturn

FILENAME = "<run_python>"
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

# Process creation, privilege games and heap walking (which could find the hook); every
# `ctypes.*` and `socket.*` event is refused as well.
BLOCKED_EVENTS = frozenset(
    {
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "os.kill",
        "os.killpg",
        "subprocess.Popen",
        "resource.setrlimit",
        "resource.prlimit",
        "os.symlink",  # links would let a lexically-inside path point outside
        "os.link",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
    }
)
# Sub-interpreters start without this hook; the others reach native code or fork().
BLOCKED_MODULES = frozenset(
    {"_posixsubprocess", "_ctypes", "_xxsubinterpreters", "_testcapi", "_testinternalcapi"}
)
# Path-changing events: their path arguments must lie in the scratch folder; the indices are
# their dir_fd arguments, which must be unused (a directory fd would re-anchor a relative path).
PATH_EVENTS: dict[str, tuple[int, ...]] = {
    "os.remove": (1,),
    "os.rmdir": (1,),
    "os.mkdir": (2,),
    "os.chmod": (2,),
    "os.chown": (3,),
    "os.utime": (3,),
    "os.rename": (2, 3),
    "os.truncate": (),
    "os.chdir": (),
}


def isolate_network() -> bool:
    """Enter a private network namespace: its only interface is a loopback that is down."""
    import ctypes

    try:
        unshare = ctypes.CDLL(None, use_errno=True).unshare
    except (OSError, AttributeError):  # not Linux
        return False
    finally:
        # Forget ctypes so that user code has to import it afresh, which the hook refuses.
        for name in [m for m in sys.modules if m == "_ctypes" or m.startswith("ctypes")]:
            del sys.modules[name]
    # Root may unshare directly; an unprivileged user needs its own user namespace for it.
    return any(unshare(flags) == 0 for flags in (CLONE_NEWNET, CLONE_NEWUSER | CLONE_NEWNET))


def set_limits(mem_mb: int, cpu_s: int, fsize: int) -> None:
    # Soft CPU limit first (SIGXCPU, reported as such), hard one a second later (SIGKILL).
    limits = [
        (resource.RLIMIT_AS, mem_mb * 1024 * 1024, mem_mb * 1024 * 1024),
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),
        (resource.RLIMIT_FSIZE, fsize, fsize),
        (resource.RLIMIT_NOFILE, 64, 64),
        (resource.RLIMIT_NPROC, 64, 64),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    for which, soft, hard in limits:
        _, current = resource.getrlimit(which)
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(which, (soft, hard))


def disarm_fork_exec() -> None:
    """Keep `import subprocess` (and asyncio, which imports it) working, but starting nothing.

    _posixsubprocess.fork_exec raises no audit event of its own. Replacing it in the one loaded
    copy suffices: loading a fresh copy raises the `import` event, which the hook refuses.
    """
    import _posixsubprocess

    def refuse(*args: object, **kwargs: object) -> NoReturn:
        raise PermissionError("starting processes is not allowed in run_python")

    setattr(_posixsubprocess, "fork_exec", refuse)  # noqa: B010 (mypy: a module attribute)


def drop_privileges(uid: int) -> None:
    if uid >= 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


def install_hook(scratch: str, readable: tuple[str, ...]) -> None:
    """Add the audit hook. Everything it uses is captured here, in closure cells.

    User code can rebind module attributes (os.getcwd, builtins.isinstance, this module's
    globals), but not these cells: the hook is unreachable once installed.
    """
    getcwd, stat_path, is_dir = os.getcwd, os.stat, stat.S_ISDIR
    type_, str_, bytes_, int_, oserror = type, str, bytes, int, OSError
    write_flags, af_unix = WRITE_FLAGS, socket.AF_UNIX
    blocked_events, blocked_modules, path_events = (
        BLOCKED_EVENTS,
        BLOCKED_MODULES,
        dict(PATH_EVENTS),
    )

    def absolute(path: object) -> str:
        """The absolute path, exactly as the kernel will resolve it (see the `..` rule)."""
        # Audit events carry the path already converted by os.fspath(), so a user-defined
        # __fspath__ cannot show the hook one path and the system call another.
        kind = type_(path)
        if kind is bytes_:
            text: str = path.decode("utf-8", "surrogateescape")  # type: ignore[attr-defined]
        elif kind is str_:
            text = path  # type: ignore[assignment]
        else:
            raise PermissionError("run_python accepts only str and bytes paths")
        if not text.startswith("/"):
            # The working directory can only move inside the scratch folder (os.chdir below)
            # and no symlink can be made, so a relative path without `..` stays inside it.
            text = getcwd() + "/" + text
        parts = [part for part in text.split("/") if part and part != "."]
        if ".." in parts:
            # Refused outright: a folder renamed by another thread between this check and the
            # system call could make `..` climb out of a lexically safe path.
            raise PermissionError(f"run_python does not accept '..' in paths: {text}")
        return "/" + "/".join(parts)

    def within(path: str, roots: tuple[str, ...]) -> bool:
        # A loop, not any(): user code can rebind builtins.any, not the for statement.
        for root in roots:  # noqa: SIM110
            if path == root or path.startswith(root + "/"):
                return True
        return False

    def is_folder(path: str) -> bool:
        try:
            return is_dir(stat_path(path).st_mode)
        except oserror:
            return False

    def check_open(path: object, mode: object, flags: int) -> None:
        if type_(path) is int_:
            return  # an already open descriptor: it passed this check when it was opened
        where = absolute(path)
        if within(where, (scratch,)):
            # os.open() (mode None) of a folder yields a dir_fd, which re-anchors relative paths
            if mode is None and is_folder(where):
                raise PermissionError("run_python does not open folders with os.open")
            return
        if mode is None or flags & write_flags:
            raise PermissionError(f"run_python may write only inside its scratch folder: {where}")
        if not within(where, readable):
            raise PermissionError(f"run_python may not read {where}; use its scratch folder")

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            check_open(args[0], args[1], args[2])
        elif event in path_events:
            if type_(args[0]) is int_:
                raise PermissionError(f"{event} on a file descriptor is not allowed in run_python")
            for index in path_events[event]:
                if args[index] not in (None, -1):  # -1: no dir_fd given
                    raise PermissionError(f"{event} with dir_fd is not allowed in run_python")
            for arg in args[:2] if event == "os.rename" else args[:1]:
                where = absolute(arg)
                if not within(where, (scratch,)):
                    raise PermissionError(f"run_python may change only its scratch folder: {where}")
        elif event == "socket.__new__" and args[1] == af_unix:
            return  # asyncio's self-pipe; connect/bind/sendto (even to a unix path) stay refused
        elif event.startswith(("socket.", "syslog.")):
            raise PermissionError("network access is disabled in run_python")
        elif event.startswith("ctypes.") or event in blocked_events:
            raise PermissionError(f"{event} is not allowed in run_python")
        # rpartition: a package prefix would not change the native module that gets loaded
        elif event == "import" and str_(args[0]).rpartition(".")[2] in blocked_modules:
            raise PermissionError(f"importing {args[0]} is not allowed in run_python")

    sys.addaudithook(hook)


def run(code: str, mem_mb: int) -> int:
    # User code gets a fresh __main__, not this module (whose globals steer nothing anyway).
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    # Lets tracebacks show the offending source line of the snippet.
    linecache.cache[FILENAME] = (len(code), None, code.splitlines(True), FILENAME)
    try:
        compiled = compile(code, FILENAME, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        traceback.print_exception(exc, limit=0)
        return 1
    try:
        exec(compiled, main.__dict__)
    except MemoryError:
        main.__dict__.clear()  # free what the snippet holds so the message can be written
        print(f"MemoryError: the snippet exceeded run_python's {mem_mb} MB limit", file=sys.stderr)
        return 1
    except SystemExit:
        raise
    except BaseException as exc:
        # Skip the frame of this function: the model should see only its own code.
        tb = exc.__traceback__.tb_next if exc.__traceback__ else None
        traceback.print_exception(type(exc), exc, tb)
        return 1
    return 0


def main(argv: list[str]) -> int:
    code_path, scratch, mem_mb, cpu_s, fsize, uid = argv
    isolate_network()
    with open(code_path, encoding="utf-8") as handle:  # before the privileges go
        code = handle.read()
    set_limits(int(mem_mb), int(cpu_s), int(fsize))
    drop_privileges(int(uid))
    disarm_fork_exec()
    stdlib = os.path.dirname(os.__file__)
    readable = (
        scratch,
        stdlib,
        os.path.realpath(stdlib),
        "/usr/share/zoneinfo",
        "/dev/null",
        "/dev/urandom",
    )
    install_hook(os.path.realpath(scratch), readable)
    return run(code, int(mem_mb))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
