"""The first code the sandboxed interpreter runs: set the limits, drop to `nobody`, run the code.

Runs INSIDE the bubblewrap sandbox (dytopo/sandbox/bwrap.py passes this file's text to
`python -I -S -c`), so it uses the standard library only and imports nothing from dytopo. It is
not a security layer of its own: the namespaces and the unprivileged uid are. It only makes the
rlimits apply before any user code runs, and makes a crash read like the user's own traceback.

argv: CODE_PATH MEMORY_MB CPU_S FILE_BYTES PROCESSES OPEN_FILES DROP (DROP is 1 when the
sandbox started as its namespace's root, see `dytopo.sandbox.bwrap`, and must become `nobody`).
"""

from __future__ import annotations

import builtins
import linecache
import os
import resource
import sys
import traceback
import types

NOBODY = 65534
FILENAME = "<code>"


def set_limits(mem_mb: int, cpu_s: int, file_bytes: int, processes: int, open_files: int) -> None:
    # Soft CPU limit first (SIGXCPU, reported as such), the hard one a second later (SIGKILL).
    # RLIMIT_NPROC counts every process and thread of the sandbox's uid in its own user
    # namespace (that uid is not root outside, so the kernel enforces it).
    limits = [
        (resource.RLIMIT_AS, mem_mb * 1024 * 1024, mem_mb * 1024 * 1024),
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),
        (resource.RLIMIT_FSIZE, file_bytes, file_bytes),
        (resource.RLIMIT_NPROC, processes, processes),
        (resource.RLIMIT_NOFILE, open_files, open_files),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    for which, soft, hard in limits:
        _, current = resource.getrlimit(which)
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(which, (soft, hard))


def drop_to_nobody() -> None:
    """Become uid/gid 65534 for good; setuid from root clears every capability."""
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise SystemExit("sandbox: could not drop root; refusing to run the code")


def run(code: str, mem_mb: int) -> int:
    # The code gets a fresh __main__, not this module.
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    # Lets tracebacks show the offending source line.
    linecache.cache[FILENAME] = (len(code), None, code.splitlines(True), FILENAME)
    try:
        compiled = compile(code, FILENAME, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        traceback.print_exception(exc, limit=0)
        return 1
    try:
        exec(compiled, main.__dict__)
    except MemoryError:
        main.__dict__.clear()  # free what the code holds so the message can be written
        print(f"MemoryError: the code exceeded its {mem_mb} MB memory limit", file=sys.stderr)
        return 1
    except SystemExit:
        raise
    except BaseException as exc:
        # Skip this function's frame: the reader should see only their own code.
        tb = exc.__traceback__.tb_next if exc.__traceback__ else None
        traceback.print_exception(type(exc), exc, tb)
        return 1
    return 0


def main(argv: list[str]) -> int:
    code_path, mem_mb, cpu_s, file_bytes, processes, open_files, drop = argv
    # surrogatepass: a lone surrogate becomes the code's own error when it is compiled
    with open(code_path, encoding="utf-8", errors="surrogatepass") as handle:
        code = handle.read()
    set_limits(int(mem_mb), int(cpu_s), int(file_bytes), int(processes), int(open_files))
    if drop == "1":
        drop_to_nobody()
    return run(code, int(mem_mb))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
