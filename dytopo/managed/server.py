"""Start and stop llama-server processes that never outlive DyTopo."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from types import TracebackType
from typing import IO, Self

import httpx
import psutil
import structlog
from pydantic import BaseModel

from dytopo.errors import ManagedServerError
from dytopo.managed import assets, models

log = structlog.get_logger("dytopo.managed")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # Linux: the kernel kills the server if DyTopo dies, even by SIGKILL. SIGKILL, not SIGTERM:
    # a server whose parent is gone has nobody to finish for, and llama-server answers a
    # second SIGTERM by calling exit() from its signal handler, which can hang (CI saw the
    # embedding server outlive its killed parent by more than 15 s).
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServerProcess:
    """One llama-server child process on a free loopback port."""

    def __init__(
        self,
        name: str,
        args: list[str],
        *,
        port: int | None = None,
        detached: bool = False,
        startup_timeout_s: float = 120.0,
    ) -> None:
        self.name = name
        self.args = args
        self.port = port or free_port()
        self.detached = detached
        self.startup_timeout_s = startup_timeout_s
        self.log_path = assets.cache_dir() / "logs" / f"{name}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def identity(self) -> ProcessIdentity:
        """Who the running server is, to record for a later `dytopo backend stop`."""
        if self.pid is None:
            raise ManagedServerError(f"{self.name} llama-server is not running")
        identity = ProcessIdentity.of(self.pid)
        if identity is None:
            raise ManagedServerError(
                f"{self.name} llama-server (pid {self.pid}) exited (log: {self.log_path})"
            )
        return identity

    def command(self) -> list[str]:
        binary = assets.llama_server_binary()
        return [str(binary), *self.args, "--host", "127.0.0.1", "--port", str(self.port)]

    async def start(self) -> None:
        command = self.command()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logfile: IO[bytes] = self.log_path.open("wb")
        log.info("managed.start", name=self.name, port=self.port, log=str(self.log_path))
        # Spawned from the event-loop thread: PDEATHSIG fires when the *spawning thread* exits.
        # A plain Popen (fork+exec is quick) so stop() can run synchronously from finally/atexit.
        self.process = subprocess.Popen(  # noqa: ASYNC220
            command,
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=self.detached,
            preexec_fn=None if self.detached or sys.platform != "linux" else _die_with_parent,
        )
        logfile.close()
        try:
            await self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    async def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise ManagedServerError(
                        f"{self.name} llama-server exited with code {self.process.returncode} "
                        f"while starting: {self.log_tail()} (full log: {self.log_path})"
                    )
                with contextlib.suppress(httpx.TransportError):
                    response = await client.get(f"{self.url}/health")
                    if response.status_code == 200:
                        log.info("managed.healthy", name=self.name, url=self.url)
                        return
                await asyncio.sleep(0.1)
        raise ManagedServerError(
            f"{self.name} llama-server did not become healthy within {self.startup_timeout_s:.0f}s "
            f"(log: {self.log_path})"
        )

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate the process and wait for it; kill it if it does not go."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.info("managed.stopped", name=self.name, pid=process.pid)


CACHE_FLAGS: list[str] = [
    # A host-RAM prompt cache: a slot's prompt is saved there before another request takes the
    # slot, and the longest matching one is restored, so agents reuse their prefixes although
    # they outnumber the slots. Without it (--cache-ram 0) 3 agents and a manager on 2 slots
    # reused 2% of their prompt tokens instead of 56% (the bound). Written out, not left to
    # the build's defaults, so the measured setting is the one that runs.
    "--cache-ram",
    "8192",
    "--cache-idle-slots",
    "--slot-prompt-similarity",
    "0.10",
    # One KV pool per slot: DyTopo plans each request for the per-slot context /props reports
    # (a unified pool would report the whole pool); unified measured no better.
    "--no-kv-unified",
]
"""Prompt-cache flags of the embedded chat server (measured: benchmarks/server_cache.md)."""


DEFAULT_SLOTS = 2
DEFAULT_CTX_PER_SLOT = 8192
"""Context per slot of the embedded chat server: a swarm's prompts (role card, goal, memory,
routed messages) outgrow 4096 by round 3. The Qwen2.5-Coder models are trained for 32,768
tokens; 2 x 8192 keeps their KV cache (28 KB per token for the 1.5B) under 0.5 GB."""


def chat_args(
    *,
    model: str | None = None,
    slots: int = DEFAULT_SLOTS,
    ctx_per_slot: int = DEFAULT_CTX_PER_SLOT,
    cache_flags: list[str] | None = None,
    threads: int | None = None,
) -> list[str]:
    """llama-server arguments of the embedded chat server (`model`: a catalogue name, None for
    $DYTOPO_MODEL or the default; `cache_flags`: CACHE_FLAGS; `threads`: CPU threads, default
    one per core). Assembles the model first if need be (blocking)."""
    chosen = models.embedded_model(model)
    template = ["--chat-template-file", str(chosen.template)] if chosen.template else []
    return [
        "-m",
        str(models.ensure_model(chosen)),
        # Jinja templates always: tool calls are parsed from the template's own format.
        "--jinja",
        *template,
        "--parallel",
        str(slots),
        "--ctx-size",
        str(slots * ctx_per_slot),
        "--threads",
        str(threads or max(1, os.cpu_count() or 1)),
        "--metrics",
        "--slots",
        "--alias",
        chosen.name,
        *(CACHE_FLAGS if cache_flags is None else cache_flags),
    ]


def chat_server(
    *,
    model: str | None = None,
    slots: int = DEFAULT_SLOTS,
    ctx_per_slot: int = DEFAULT_CTX_PER_SLOT,
    detached: bool = False,
    threads: int | None = None,
) -> LlamaServerProcess:
    """The embedded chat server on `model` (see `dytopo.managed.models`; None: $DYTOPO_MODEL,
    else Qwen2.5-Coder-1.5B-Instruct). Servers sharing one machine should split its cores
    (`threads`): llama.cpp's threads spin while they wait, and two servers with a thread per
    core each ran a batch 10x slower than one server alone."""
    args = chat_args(model=model, slots=slots, ctx_per_slot=ctx_per_slot, threads=threads)
    return LlamaServerProcess("chat", args, detached=detached)


def embedding_server(*, detached: bool = False) -> LlamaServerProcess:
    """all-MiniLM-L6-v2 (converted to GGUF on first use), embeddings only."""
    args = [
        "-m",
        str(assets.embedding_model()),
        "--embeddings",
        "--pooling",
        "mean",
        "--parallel",
        "2",
        "--ctx-size",
        "1024",
        "--batch-size",
        "512",
        "--ubatch-size",
        "512",
        "--alias",
        "all-minilm-l6-v2",
    ]
    return LlamaServerProcess("embed", args, detached=detached)


class ManagedStack:
    """The embedded default: chat and embedding servers, stopped on exit, error or Ctrl-C.

    `model`: a catalogue name (`dytopo.managed.models`); None: $DYTOPO_MODEL, else the default.
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        slots: int = DEFAULT_SLOTS,
        ctx_per_slot: int = DEFAULT_CTX_PER_SLOT,
        embeddings: bool = True,
    ) -> None:
        self.model = models.embedded_model(model)
        """The chat model (an unknown name fails here, before anything starts)."""
        self.slots = slots
        self.ctx_per_slot = ctx_per_slot
        self.embeddings = embeddings
        self.chat: LlamaServerProcess | None = None
        self.embed: LlamaServerProcess | None = None

    @property
    def chat_url(self) -> str:
        assert self.chat is not None, "stack not started"
        return self.chat.url

    @property
    def embed_url(self) -> str | None:
        return self.embed.url if self.embed else None

    async def start(self) -> None:
        # A split model is assembled (and hashed) once: seconds of I/O, kept off the loop.
        await asyncio.to_thread(models.ensure_model, self.model)
        self.chat = chat_server(
            model=self.model.name, slots=self.slots, ctx_per_slot=self.ctx_per_slot
        )
        if self.embeddings:
            self.embed = embedding_server()
        try:
            async with asyncio.TaskGroup() as group:
                for process in (self.chat, self.embed):
                    if process is not None:
                        group.create_task(process.start())
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for process in (self.chat, self.embed):
            if process is not None:
                process.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ProcessIdentity(BaseModel):
    """A process told apart from a later one that reuses its pid (kept in the state file)."""

    pid: int
    create_time: float
    """Start time as psutil reports it; a process that reuses the pid starts later."""
    exe: str
    cmdline: list[str]

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity | None:
        """The identity of the process `pid` now; None when there is none (or it is a zombie)."""
        try:
            return cls._of(psutil.Process(pid))
        except psutil.Error:  # gone, a zombie, or not ours to inspect: not the one we started
            return None

    @classmethod
    def _of(cls, process: psutil.Process) -> ProcessIdentity:
        with process.oneshot():
            return cls(
                pid=process.pid,
                create_time=process.create_time(),
                exe=process.exe(),
                cmdline=process.cmdline(),
            )

    def running(self) -> bool:
        """True when `pid` is still this very process, not an unrelated one that reused it."""
        return ProcessIdentity.of(self.pid) == self

    def terminate(self) -> bool:
        """SIGTERM this process if it is still the one recorded; False when it is gone."""
        try:
            process = psutil.Process(self.pid)
            if self._of(process) != self:
                return False
            # psutil signals only if the pid still names the process it looked at above.
            process.terminate()
        except psutil.Error:
            return False
        return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
