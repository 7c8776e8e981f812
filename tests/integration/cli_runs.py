"""Running `dytopo run` as a user would, against the session's real servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from dytopo.managed import ManagedStack
from dytopo.swarm.trace import read_trace

ROOT = Path(__file__).resolve().parents[2]


def dytopo_run(
    stack: ManagedStack, tmp_path: Path, *args: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`dytopo run topologies/research.yaml --json ...`; returns its JSON and its trace."""
    trace = tmp_path / "trace.jsonl"
    assert stack.embed_url is not None
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dytopo",
            "run",
            str(ROOT / "topologies" / "research.yaml"),
            "--json",
            "--backend-url",
            stack.chat_url,
            "--embed-url",
            stack.embed_url,
            "--trace",
            str(trace),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout), read_trace(trace)
