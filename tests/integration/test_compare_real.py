"""`dytopo compare` on the real llama-server: two modes, one round each, a small 2-agent swarm."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from dytopo.managed import ManagedStack
from dytopo.swarm.trace import read_trace

# Short replies: 2 shared cores give the model ~5 tokens/s when other work runs.
SHORT = "instructions: Keep every field under 15 words., budget: {max_output_tokens: 128}"
MANAGER = "instructions: Keep every field under 15 words., budget: {max_output_tokens: 160}"
TOPOLOGY = f"""\
name: pair
task: Name one advantage of LRU cache eviction over LFU, in one sentence.
routing: {{mode: dynamic, tau: 0.3}}
max_rounds: 3
min_rounds: 1
seed: 7
structured_reasks: 1
manager: {{card: manager, {MANAGER}}}
agents:
  - {{id: researcher, card: researcher, text_work: true, {SHORT}}}
  - {{id: writer, card: writer, text_work: true, {SHORT}}}
"""


def test_compare_two_modes_gives_a_row_each_with_tokens_and_reports(
    stack: ManagedStack, tmp_path: Path
) -> None:
    topology = tmp_path / "pair.yaml"
    topology.write_text(TOPOLOGY, encoding="utf-8")
    out = tmp_path / "cmp"
    assert stack.embed_url is not None
    done = subprocess.run(
        [sys.executable, "-m", "dytopo", "compare", str(topology),
         "--modes", "dynamic,broadcast", "--rounds", "1", "--json", "--out", str(out),
         "--backend-url", stack.chat_url, "--embed-url", stack.embed_url],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(done.stdout)
    rows = data["rows"]
    assert [r["mode"] for r in rows] == ["dynamic", "broadcast"]
    for row in rows:
        assert row["ok"] is True, row["error"]
        assert row["rounds"] == 1
        assert row["prompt_tokens"] > 0
        assert row["completion_tokens"] > 0
        assert len(row["edges_per_round"]) == 1
        report = Path(row["report"])
        assert report == out / f"{row['mode']}.html"
        assert "<svg" in report.read_text(encoding="utf-8")
        start = read_trace(Path(row["trace"]))[0]
        assert (start["mode"], start["max_rounds"], start["seed"]) == (row["mode"], 1, 7)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert re.findall(r'<a href="([^"]+)"', page)[:2] == ["dynamic.html", "broadcast.html"]
    print(
        "broadcast/dynamic tokens:",
        rows[1]["tokens_vs_first"],
        {r["mode"]: (r["prompt_tokens"], r["completion_tokens"], r["wall_s"]) for r in rows},
    )
