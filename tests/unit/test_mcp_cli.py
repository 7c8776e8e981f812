"""`dytopo mcp`: one line when the serve extra is missing, and a real stdio server (a subprocess
driven by the mcp SDK's stdio client) that lists its tools without calling any LLM."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dytopo.cli import main

ROOT = Path(__file__).resolve().parents[2]
NOWHERE = "http://127.0.0.1:9"  # discard port: nothing listens, and no test asks it anything


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr("sys.argv", ["dytopo", "mcp", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code or 0)


def test_missing_serve_extra_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in sys.modules if n == "mcp" or n.startswith("mcp.")] or ["mcp"]:
        monkeypatch.setitem(sys.modules, name, None)  # what `import mcp...` meets when missing
    monkeypatch.delitem(sys.modules, "dytopo.service.mcp", raising=False)
    assert run_main(monkeypatch, "--backend-url", NOWHERE, "--embed-url", NOWHERE) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "error: dytopo mcp needs the serve extra: pip install 'dytopo[serve]'"
    ]


def test_reply_within_must_be_seconds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(monkeypatch, "--reply-within", "-1") == 2
    assert "--reply-within -1.0: give a number of seconds" in capsys.readouterr().err


async def test_stdio_server_lists_its_tools(tmp_path: Path) -> None:
    from mcp import Client, StdioServerParameters

    server = StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "dytopo",
            "mcp",
            "--topologies",
            str(ROOT / "topologies"),
            "--runs",
            str(tmp_path / "runs"),
            "--backend-url",
            NOWHERE,
            "--embed-url",
            NOWHERE,
        ],
        cwd=tmp_path,  # as a client starts it: anywhere, so the paths are absolute
    )
    async with Client(server, read_timeout_seconds=60) as mcp:
        tools = {tool.name for tool in (await mcp.list_tools()).tools}
        topologies = await mcp.call_tool("list_topologies", {})
    assert tools == {"run_swarm", "list_topologies", "get_run"}
    assert not topologies.is_error, topologies
    names = {item["name"] for item in topologies.structured_content["result"]}  # type: ignore[index]
    assert {"research", "code", "math"} <= names


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(x for x in status if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def test_an_oversized_stdio_message_is_dropped_without_holding_it(tmp_path: Path) -> None:
    """A 64 MB JSON-RPC line (the red team's was 200 MB: 1.4 GB held) is skipped as it
    arrives; the next message is answered, and the server's memory stays small."""
    import json
    import subprocess

    args = ["--topologies", str(ROOT / "topologies"), "--runs", str(tmp_path / "runs")]
    args += ["--backend-url", NOWHERE, "--embed-url", NOWHERE]
    with subprocess.Popen(
        [sys.executable, "-m", "dytopo", "mcp", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    ) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        huge = b'{"jsonrpc": "2.0", "id": 0, "method": "ping", "params": {"x": "'
        child.stdin.write(huge + b"a" * (64 * 1024 * 1024) + b'"}}\n')
        ping = {"jsonrpc": "2.0", "id": 7, "method": "ping"}
        child.stdin.write(json.dumps(ping).encode() + b"\n")
        child.stdin.flush()
        reply = json.loads(child.stdout.readline())
        peak = _peak_rss_mb(child.pid)
        child.kill()
    assert reply["id"] == 7
    assert "result" in reply
    assert peak < 200, f"{peak:.0f} MB"
