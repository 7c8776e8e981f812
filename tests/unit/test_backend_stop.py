"""`dytopo backend stop` signals only the servers it started, never a process that reused a pid."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from dytopo.cli import app
from dytopo.managed import assets
from dytopo.managed.resolve import BackgroundState, read_background
from dytopo.managed.server import ProcessIdentity

runner = CliRunner()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process of our own that is NOT a llama-server."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def identity(process: subprocess.Popen[bytes]) -> ProcessIdentity:
    found = ProcessIdentity.of(process.pid)
    assert found is not None
    return found


def record(chat: ProcessIdentity, embed: ProcessIdentity) -> None:
    state = BackgroundState(
        chat_url="http://127.0.0.1:1",
        chat_pid=chat.pid,
        embed_url="http://127.0.0.1:2",
        embed_pid=embed.pid,
        chat_process=chat,
        embed_process=embed,
    )
    (assets.cache_dir() / "backend.json").write_text(state.model_dump_json())


def as_exited_server(live: ProcessIdentity) -> ProcessIdentity:
    """What `backend start` recorded for a server that exited, its pid now `live`'s."""
    return live.model_copy(
        update={
            "create_time": live.create_time - 3600,
            "exe": "/opt/llama/bin/llama-server",
            "cmdline": ["llama-server", "--port", "1"],
        }
    )


def test_stop_spares_an_unrelated_process_that_reused_the_pid(
    sleeper: subprocess.Popen[bytes],
) -> None:
    stale = as_exited_server(identity(sleeper))
    record(stale, stale)
    assert read_background() is None  # `status` does not mistake it for the server either
    result = runner.invoke(app, ["backend", "stop"])
    assert result.exit_code == 0, result.output
    assert "already exited" in result.output
    assert "removed the stale record" in result.output
    with pytest.raises(subprocess.TimeoutExpired):
        sleeper.wait(timeout=0.3)  # still alive
    assert not (assets.cache_dir() / "backend.json").exists()


@pytest.mark.parametrize("field", ["create_time", "exe", "cmdline"])
def test_any_identity_mismatch_spares_the_process(
    sleeper: subprocess.Popen[bytes], field: str
) -> None:
    live = identity(sleeper)
    other = as_exited_server(live)
    stale = live.model_copy(update={field: getattr(other, field)})
    assert not stale.running()
    assert stale.terminate() is False
    with pytest.raises(subprocess.TimeoutExpired):
        sleeper.wait(timeout=0.3)


def test_stop_still_stops_the_recorded_process(sleeper: subprocess.Popen[bytes]) -> None:
    live = identity(sleeper)
    record(live, live)
    assert read_background() is not None
    result = runner.invoke(app, ["backend", "stop"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "stopped"
    assert sleeper.wait(timeout=10) == -15  # SIGTERM
    assert not (assets.cache_dir() / "backend.json").exists()


def test_stop_without_a_record_says_so() -> None:
    (assets.cache_dir() / "backend.json").unlink(missing_ok=True)
    result = runner.invoke(app, ["backend", "stop"])
    assert result.output.strip() == "nothing was running"


def test_identity_of_a_missing_pid_is_none(sleeper: subprocess.Popen[bytes]) -> None:
    pid = sleeper.pid
    sleeper.kill()
    sleeper.wait()
    assert ProcessIdentity.of(pid) is None
