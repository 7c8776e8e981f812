"""`dytopo serve`: refuses a non-loopback bind without a token before anything starts, says in
one line when the serve extra is missing, and stops on Ctrl-C/SIGTERM with exit 130."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

import pytest

from dytopo.cli import main

ROOT = Path(__file__).resolve().parents[2]
NOWHERE = "http://127.0.0.1:9"  # discard port: nothing listens, and no test asks it anything


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr("sys.argv", ["dytopo", "serve", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code or 0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3"])
def test_a_non_loopback_bind_without_a_token_is_refused_before_listening(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], host: str
) -> None:
    monkeypatch.delenv("DYTOPO_TOKEN", raising=False)
    port = free_port()
    code = run_main(monkeypatch, "--host", host, "--port", str(port), "--backend-url", NOWHERE)
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --host {host} is reachable from other machines: set a token (--token or "
        "$DYTOPO_TOKEN), or bind to 127.0.0.1"
    ]
    with socket.socket() as sock:  # nothing bound it
        sock.bind(("127.0.0.1", port))


def test_a_port_in_use_is_one_line_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # No --backend-url: had the service started, it would have started an embedded stack.
        code = run_main(monkeypatch, "--port", str(port), "--topologies", str(ROOT / "topologies"))
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use (another dytopo "
        "serve? pick another --port)"
    ]


def test_missing_serve_extra_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # what `import uvicorn` meets when missing
    code = run_main(
        monkeypatch,
        "--topologies",
        str(ROOT / "topologies"),
        "--backend-url",
        NOWHERE,
        "--embed-url",
        NOWHERE,
    )
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: dytopo serve needs the serve extra: pip install 'dytopo[serve]'"
    ]


def test_a_missing_topologies_folder_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = run_main(monkeypatch, "--topologies", str(tmp_path / "nope"), "--backend-url", NOWHERE)
    assert code == 2
    assert "no such folder" in capsys.readouterr().err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_serve_answers_then_stops_on_a_signal_with_exit_130(
    tmp_path: Path, sig: signal.Signals
) -> None:
    import httpx2

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dytopo",
        "serve",
        "--port",
        "0",
        "--topologies",
        str(ROOT / "topologies"),
        "--runs",
        str(tmp_path / "runs"),
        "--backend-url",
        NOWHERE,
        "--embed-url",
        NOWHERE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
    )
    assert process.stderr is not None
    try:
        line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        assert line.startswith("dytopo serve: listening on http://127.0.0.1:"), line
        url = line.split()[4]
        async with httpx2.AsyncClient(base_url=url) as client:
            health = (await client.get("/healthz")).json()
        process.send_signal(sig)
        code = await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    rest = (await process.stderr.read()).decode()
    assert health == {
        "status": "ok",
        "backend": f"configured {NOWHERE}",
        "running": 0,
        "queued": 0,
    }
    assert code == 130
    assert rest.strip().splitlines() == ["interrupted"]
