"""`dytopo serve` as a subprocess on the real llama-server: one small run over HTTP, answered."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import httpx2

from dytopo.managed import ManagedStack

ROOT = Path(__file__).resolve().parents[2]
SHORT = {"budget": {"max_output_tokens": 256}}
# Small: 2 shared cores give the model ~5 tokens/s when other work runs.
# What a service caller may set (an allow-list): one round of the research team.
OVERRIDES = {"max_rounds": 1, "min_rounds": 1}


async def test_a_run_through_the_service_answers(stack: ManagedStack, tmp_path: Path) -> None:
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
        stack.chat_url,
        *(["--embed-url", stack.embed_url] if stack.embed_url else []),
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
    )
    assert process.stderr is not None
    try:
        line = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
        url = line.split()[4]
        async with httpx2.AsyncClient(base_url=url, timeout=840) as client:
            reply = await client.post(
                "/v1/runs?wait=true",
                json={
                    "task": "Name one advantage of LRU cache eviction, in one sentence.",
                    "topology": "research",
                    "overrides": OVERRIDES,
                },
            )
            info = reply.json()
            events = (await client.get(f"/v1/runs/{info['id']}/events")).text
        process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert reply.status_code == 200, info
    assert info["status"] == "succeeded", info
    assert info["final_answer"].strip()
    assert [r["round"] for r in info["rounds"]] == [1]
    assert info["rounds"][0]["finished"]
    assert info["usage"]["requests"] > 0
    assert "event: run_start" in events
    assert events.rstrip().endswith('data: {"status": "succeeded"}')
    assert code == 130
