"""`dytopo eval --limit 3` end to end on the real llama-server (SmolLM2-135M) and MiniLM: every
run recorded and graded (the plain call as one request, with the server's cache count), the
table printed, and a rerun skips them all. The accuracy of a 135M model is not asserted (it is
near zero)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dytopo.batch import read_records
from dytopo.managed import ManagedStack

ROOT = Path(__file__).resolve().parents[2]
PROBLEMS = ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
MODES = ["plain", "single", "dynamic"]


def dytopo_eval(stack: ManagedStack, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert stack.embed_url is not None
    args = ["--limit", "3", "--modes", ",".join(MODES), "--rounds", "1", "--out", str(out)]
    args += ["--backend-url", stack.chat_url, "--embed-url", stack.embed_url, *extra]
    return subprocess.run(
        [sys.executable, "-m", "dytopo", "eval", *args],
        capture_output=True,
        text=True,
        timeout=1700,
        cwd=ROOT,
    )


@pytest.mark.timeout(1800)  # six real runs on 2 shared cores: minutes, more under load
def test_eval_limit_3_end_to_end(stack: ManagedStack, tmp_path: Path) -> None:
    started = time.monotonic()
    done = dytopo_eval(stack, tmp_path)
    wall = time.monotonic() - started

    assert done.returncode == 0, done.stderr[-3000:]
    records = read_records(tmp_path / "records.jsonl")
    assert [(r.item, r.mode) for r in records] == [(p, m) for p in PROBLEMS for m in MODES]
    for record in records:
        assert record.usage.requests > 0
        assert record.ok or record.error  # a failed run says why
        assert Path(record.trace or "").is_file()
        assert record.grade["kind"] in ("function", "body", "code", "none")
        assert isinstance(record.grade["passed"], bool)
        assert record.grade["status"]
        assert isinstance(record.grade["oracle"]["passed"], bool)
    plain = [r for r in records if r.mode == "plain"]
    assert all(r.ok and r.usage.requests == 1 and r.usage.completion_tokens > 0 for r in plain)
    assert all(r.grade["oracle"]["passed"] == r.grade["passed"] for r in plain)
    assert all(r.rounds == 1 for r in records if r.ok)
    assert "Traceback" not in done.stderr
    assert "[9/9] HumanEval/2 dynamic: " in done.stderr
    table = done.stdout
    assert "humaneval: 3 problems" in table
    for mode in MODES:
        assert f"  {mode} " in table
    print(f"dytopo eval --limit 3 (plain, single, dynamic, 1 round): {wall:.0f} s")  # BENCHMARKS

    again = dytopo_eval(stack, tmp_path, "--json")

    assert again.returncode == 0, again.stderr[-3000:]
    shown = json.loads(again.stdout)
    assert (shown["problems"], shown["skipped"]) == (3, 9)
    assert [row["mode"] for row in shown["modes"]] == MODES
    assert [row["problems"] for row in shown["modes"]] == [3, 3, 3]
    assert shown["modes"][0]["requests"] == 1.0
    assert len(read_records(tmp_path / "records.jsonl")) == 9  # nothing ran again
