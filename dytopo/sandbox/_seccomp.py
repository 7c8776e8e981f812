"""A small seccomp filter for the code sandbox (classic BPF, handed to `bwrap --seccomp`).

Why: inside its user namespace the sandboxed code could create a NESTED user namespace, get
every capability there and mount an uncapped tmpfs (measured: 937 MB written in 3 s past a
1 MB scratch cap), or pile up System V shared memory, message queues and semaphores, which no
rlimit bounds (measured: 600 MB of kernel memory in 1.8 s through semget alone). The filter
refuses those calls with EPERM and answers clone3 with ENOSYS (its flags live in memory a
filter cannot read; glibc then falls back to clone, which is checked).
Calls of any other ABI (x32, 32-bit int 0x80) are refused outright, so numbers cannot alias.
"""

from __future__ import annotations

import errno
import platform
import struct

# seccomp_data: int nr; u32 arch; u64 ip; u64 args[6]. Offsets below assume little-endian
# (both supported architectures are), so the low half of args[0] sits at offset 16.
NR, ARCH, ARG0_LOW = 0, 4, 16
LD_ABS, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
ALLOW = 0x7FFF0000
ERRNO = 0x00050000
X32_BIT = 0x40000000
# NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET (NEWTIME, 0x80, is clone's exit-signal byte)
CLONE_NEW_ANY = 0x7E020000


class _Arch:
    def __init__(self, audit: int, clone: int, unshare: int, refused: tuple[int, ...]) -> None:
        self.audit, self.clone, self.unshare, self.refused = audit, clone, unshare, refused


CLONE3 = 435  # the same on both
# Every System V IPC call: shmget shmat shmctl shmdt, msgget msgsnd msgrcv msgctl,
# semget semop semctl semtimedop (multiprocessing uses POSIX semaphores in /dev/shm instead).
SYSV_X86_64 = (29, 30, 31, 67, 68, 69, 70, 71, 64, 65, 66, 220)
SYSV_AARCH64 = (194, 196, 195, 197, 186, 189, 188, 187, 190, 193, 191, 192)
ARCHES = {
    # refused: System V IPC, setns, keyctl, add_key, request_key, bpf, userfaultfd,
    # perf_event_open, io_uring_setup
    "x86_64": _Arch(0xC000003E, 56, 272, (*SYSV_X86_64, 308, 250, 248, 249, 321, 323, 298, 425)),
    "aarch64": _Arch(0xC00000B7, 220, 97, (*SYSV_AARCH64, 268, 219, 217, 218, 280, 282, 241, 425)),
}


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def seccomp_filter(machine: str | None = None) -> bytes | None:
    """The compiled filter for this CPU, or None where it is not written yet."""
    arch = ARCHES.get(machine or platform.machine())
    if arch is None:
        return None
    prog = [
        _op(LD_ABS, ARCH),
        _op(JEQ, arch.audit, 1, 0),
        _op(RET, ERRNO | errno.ENOSYS),  # another ABI
        _op(LD_ABS, NR),
    ]
    if arch.audit == ARCHES["x86_64"].audit:
        prog += [_op(JGE, X32_BIT, 0, 1), _op(RET, ERRNO | errno.ENOSYS)]
    prog += [_op(JEQ, CLONE3, 0, 1), _op(RET, ERRNO | errno.ENOSYS)]
    for number in arch.refused:
        prog += [_op(JEQ, number, 0, 1), _op(RET, ERRNO | errno.EPERM)]
    # clone and unshare: refuse any namespace flag in the first argument.
    prog += [
        _op(JEQ, arch.clone, 1, 0),
        _op(JEQ, arch.unshare, 0, 3),
        _op(LD_ABS, ARG0_LOW),
        _op(JSET, CLONE_NEW_ANY, 0, 1),
        _op(RET, ERRNO | errno.EPERM),
        _op(RET, ALLOW),
    ]
    return b"".join(prog)
