"""The embedded default: started on demand, never leaves an orphan llama-server behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dytopo.managed.server import pid_alive
from dytopo.swarm.checkpoint import checkpoint_path, read_checkpoint
from dytopo.swarm.trace import read_trace

HOLD_STACK = """
import asyncio, json, sys
from dytopo.logs import configure_logging
from dytopo.managed import ManagedStack

configure_logging("warning")

async def main() -> None:
    async with ManagedStack(slots=1, ctx_per_slot=1024) as stack:
        print(json.dumps([stack.chat.pid, stack.embed.pid]), flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def _spawn_holder(home: Path) -> tuple[subprocess.Popen[str], list[int]]:
    env = {**os.environ, "DYTOPO_HOME": str(home)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_STACK],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert holder.stdout is not None
    line = holder.stdout.readline()
    try:
        pids = json.loads(line)
    except ValueError:
        holder.kill()
        holder.wait()
        holder.stdout.close()
        raise AssertionError(f"holder did not report its servers: {line!r}") from None
    assert all(pid_alive(p) for p in pids)
    return holder, pids


def _wait_dead(pids: list[int], timeout_s: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = [p for p in pids if _running(p)]
        if not alive:
            return []
        time.sleep(0.1)
    return [p for p in pids if _running(p)]


def _running(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap if it happens to be our child
    if not pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_no_orphan_server_after_signal(dytopo_home: Path, sig: signal.Signals) -> None:
    holder, pids = _spawn_holder(dytopo_home)
    try:
        holder.send_signal(sig)
        holder.wait(timeout=30)
    finally:
        holder.kill()  # never leave the holder behind, even when the test fails
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    assert _wait_dead(pids) == [], f"orphan llama-server after {sig.name}: {pids}"


def test_doctor_cli_on_the_embedded_default(dytopo_home: Path) -> None:
    env = {**os.environ, "DYTOPO_HOME": str(dytopo_home)}
    env.pop("DYTOPO_BASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "dytopo", "doctor", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert report["source"] == "embedded"
    burst = report["burst"]
    assert burst["completed"] == burst["requests"] == 3 * report["slots"]
    assert burst["max_in_flight"] <= report["slots"]


def test_background_backend_start_status_reuse_stop(dytopo_home: Path, tmp_path: Path) -> None:
    env = {**os.environ, "DYTOPO_HOME": str(tmp_path / "home")}
    env.pop("DYTOPO_BASE_URL", None)

    def dytopo(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dytopo", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )

    # Share the converted embedder with the session instead of converting it again.
    (tmp_path / "home").mkdir()
    for gguf in dytopo_home.glob("*.gguf"):
        (tmp_path / "home" / gguf.name).symlink_to(gguf)
    assert dytopo("backend", "status").returncode == 1
    started = dytopo("backend", "start", "--slots", "1", "--ctx-per-slot", "1024")
    assert started.returncode == 0, started.stderr
    try:
        assert "chat  http://127.0.0.1:" in dytopo("backend", "status").stdout
        report = dytopo("doctor", "--json")
        assert report.returncode == 0, report.stderr
        assert json.loads(report.stdout)["source"] == "background"
    finally:
        stopped = dytopo("backend", "stop")
    assert "stopped" in stopped.stdout
    assert dytopo("backend", "status").returncode == 1


SHORT = "instructions: Keep every field under 15 words., budget: {max_output_tokens: 160}"
SMALL = f"""\
name: small
task: Compare LRU and LFU cache eviction for a web cache in two sentences.
max_rounds: 2
min_rounds: 2
structured_reasks: 1
manager: {{{SHORT}}}
agents:
  - {{id: researcher, {SHORT}}}
  - {{id: writer, {SHORT}}}
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_dytopo_run_interrupted_stops_its_servers_and_can_be_resumed(
    dytopo_home: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    """Ctrl-C (or SIGTERM) while round 2's requests are in flight: exit 130 at once, no orphan
    server, the trace ends with run_end, round 1 is kept in the checkpoint, and `dytopo resume`
    finishes the run on a server of its own."""
    topology, trace = tmp_path / "small.yaml", tmp_path / "trace.jsonl"
    topology.write_text(SMALL, encoding="utf-8")
    env = {**os.environ, "DYTOPO_HOME": str(dytopo_home)}
    env.pop("DYTOPO_BASE_URL", None)
    env.pop("DYTOPO_EMBED_URL", None)
    run = subprocess.Popen(
        [sys.executable, "-m", "dytopo", "run", str(topology), "--trace", str(trace)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not _started(trace, 2) and run.poll() is None:
            time.sleep(0.2)
        assert _started(trace, 2), "round 2 never started"
        servers = [
            int(p)
            for p in subprocess.run(
                ["pgrep", "-P", str(run.pid)], capture_output=True, text=True
            ).stdout.split()
        ]
        assert len(servers) == 2
        signalled = time.monotonic()
        run.send_signal(sig)
        assert run.wait(timeout=60) == 130
        exit_s = time.monotonic() - signalled
        assert run.stderr is not None
        stderr = run.stderr.read()
    finally:
        run.kill()
        run.wait()
        if run.stderr is not None:
            run.stderr.close()
    assert _wait_dead(servers) == []
    assert exit_s < 20, f"{exit_s:.1f}s from {sig.name} to exit"
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == f"continue it with: dytopo resume {trace}"
    last = json.loads(trace.read_text().strip().splitlines()[-1])
    assert last["event"] == "run_end"
    assert last["error"] == "interrupted"
    cp = read_checkpoint(checkpoint_path(trace))
    assert (cp.status, cp.state.round) == ("interrupted", 1)

    resumed = subprocess.run(
        [sys.executable, "-m", "dytopo", "resume", str(trace), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads(resumed.stdout)
    assert result["rounds"] == 2
    assert result["run_id"] == cp.run_id
    assert read_checkpoint(checkpoint_path(trace)).status == "complete"
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [e["round"] for e in events if e["event"] == "round_end"] == [1, 2]
    print(f"\n{sig.name}: exit 130 after {exit_s:.1f}s")


def _started(trace: Path, round: int) -> bool:
    """Has the trace's round `round` started (read while the run writes it)?"""
    # A line being written may end mid-character: not UTF-8 yet (ValueError).
    with contextlib.suppress(FileNotFoundError, ValueError):
        return any(e["event"] == "round_start" and e["round"] == round for e in read_trace(trace))
    return False
