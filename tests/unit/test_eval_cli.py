"""`dytopo eval` end to end on the scripted backend: records, table, --json, failures, resume."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eval_kit import IDS, URL, Server, canonical, dytopo, evaluate

from dytopo.batch import read_records
from dytopo.batch.run import trace_name
from dytopo.errors import BackendUnavailable
from dytopo.testing import ScriptItem

ROOT = Path(__file__).resolve().parents[2]


def test_every_answer_is_graded_recorded_and_tabulated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Server(lambda t: canonical(t) if t != "HumanEval/1" else "```python\nreturn []\n```")
    server.install(monkeypatch)

    code, out, err = evaluate(capsys, monkeypatch, tmp_path, "--modes", "single,dynamic")

    assert code == 0, err
    records = read_records(tmp_path / "records.jsonl")
    assert [(r.item, r.mode) for r in records] == [
        (i, m) for i in IDS[:3] for m in ("single", "dynamic")
    ]
    assert all(r.ok and r.rounds == 1 and r.usage.requests > 0 for r in records)
    assert [r.grade["passed"] for r in records] == [True, True, False, False, True, True]
    assert records[0].final_answer == canonical("HumanEval/0")
    assert Path(records[0].trace or "").is_file()
    name = trace_name("HumanEval/0", "single")
    assert records[0].trace == str(tmp_path / "traces" / name)
    # every request a run made is in its usage (single: goal, the developer alone, decision;
    # dynamic: three agents; an agent with a tool asks twice), none of another run's
    assert [r.usage.requests for r in records] == [len(b.requests) for b in server.backends]
    assert records[0].usage.requests < records[1].usage.requests
    assert re.search(r"single +2/3 +66\.7% \[20\.8, 93\.9\] +66\.7% +0 ", out), out
    assert re.search(r"dynamic +2/3 +66\.7% \[20\.8, 93\.9\] ", out), out
    asked = records[0].usage.requests
    assert f"[1/6] HumanEval/0 single: passed; oracle passed; {asked} requests, server work " in err
    assert "(1 rounds, " in err
    assert "[3/6] HumanEval/1 single: failed (exit status 1" in err


def test_json_prints_the_summary_and_no_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    Server().install(monkeypatch)

    code, out, err = evaluate(capsys, monkeypatch, tmp_path, "--modes", "dynamic", "--json")

    assert code == 0, err
    shown = json.loads(out)
    assert (shown["benchmark"], shown["problems"], shown["skipped"]) == ("humaneval", 3, 0)
    assert shown["records"] == str(tmp_path / "records.jsonl")
    (row,) = shown["modes"]
    assert (row["mode"], row["problems"], row["passed"], row["pass_at_1"]) == ("dynamic", 3, 3, 1)
    assert row["rounds"] == 1
    assert row["prompt_tokens"] > 0
    assert row["failures"] == row["no_code"] == 0
    assert "[1/" not in err


def test_a_failing_run_is_a_record_with_its_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = BackendUnavailable("server gone", url=URL)

    def answer(task_id: str) -> ScriptItem:
        return gone if task_id == "HumanEval/1" else canonical(task_id)

    Server(answer).install(monkeypatch)

    code, out, err = evaluate(capsys, monkeypatch, tmp_path, "--modes", "single", "--json")

    assert code == 0, err
    records = read_records(tmp_path / "records.jsonl")
    failed = records[1]
    assert (failed.item, failed.ok, failed.final_answer) == ("HumanEval/1", False, "")
    assert "server gone" in failed.error
    assert "\n" not in failed.error
    assert failed.usage.requests >= 2  # what it had spent before it failed is kept
    assert failed.usage.prompt_tokens > 0
    assert failed.grade["status"] == "no code in the answer"
    assert [r.ok for r in records] == [True, False, True]
    (row,) = json.loads(out)["modes"]
    assert (row["passed"], row["failures"]) == (2, 1)


def test_a_rerun_skips_graded_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = Server()
    first.install(monkeypatch)
    code, _, err = evaluate(capsys, monkeypatch, tmp_path, "--modes", "single", "--limit", "2")
    assert code == 0, err
    second = Server()
    second.install(monkeypatch)

    code, out, err = evaluate(capsys, monkeypatch, tmp_path, "--modes", "single,dynamic")

    assert code == 0, err
    assert f"resuming {tmp_path}: 2 of 6 runs already graded, 4 to run" in err
    assert len(read_records(tmp_path / "records.jsonl")) == 6
    # HumanEval/0 and 1 in dynamic mode, HumanEval/2 in both: their single runs are not redone
    assert second.runs() == ["HumanEval/0", "HumanEval/1", "HumanEval/2", "HumanEval/2"]
    assert [{r.tag for r in b.requests} for b in second.backends][:3] == [
        {"manager", "developer", "tester", "critic"},
        {"manager", "developer", "tester", "critic"},
        {"manager", "developer"},
    ]
    assert "3/3   100.0% [43.9, 100.0]" in out


SIGNALLED = """
import sys
sys.path.insert(0, {tests!r})
import pytest
from eval_kit import Server, hanging
from dytopo.cli import main

mp = pytest.MonkeyPatch()
Server(hanging("HumanEval/2")).install(mp)
sys.argv = ["dytopo", *sys.argv[1:]]
main()
"""


def test_an_eval_killed_midway_resumes_without_rerunning_graded_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real Ctrl-C (SIGINT) to a real process while the third problem runs."""
    records = tmp_path / "records.jsonl"
    args = ["eval", "--limit", "3", "--modes", "single", "--rounds", "1"]
    args += ["--backend-url", URL, "--out", str(tmp_path)]
    script = SIGNALLED.format(tests=str(Path(__file__).parent))
    child = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while len(read_records(records)) < 2 and time.monotonic() < deadline:
            assert child.poll() is None, child.communicate()
            time.sleep(0.05)
        time.sleep(0.3)  # the third run is waiting for its manager
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"graded runs are kept in {records}; resume with the same command: dytopo " + " ".join(args)
    )
    assert [r.item for r in read_records(records)] == ["HumanEval/0", "HumanEval/1"]

    again = Server()
    again.install(monkeypatch)
    code, out, err = dytopo(capsys, monkeypatch, *args)

    assert code == 0, err
    assert again.runs() == ["HumanEval/2"]
    assert "2 of 3 runs already graded, 1 to run" in err
    assert [r.item for r in read_records(records)] == IDS[:3]
    assert "3/3   100.0% [43.9, 100.0]" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["gsm-nope"], "unknown benchmark 'gsm-nope': choose one of humaneval"),
        (["--modes", "dynamic,ring"], "--modes: 'ring' is not a mode"),
        (["--limit", "0"], "--limit 0: give a number of problems of at least 1"),
        (["--rounds", "0"], "--rounds 0: give at least 1"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    args: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, _, err = dytopo(capsys, monkeypatch, "eval", *args, "--out", str(tmp_path))

    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert message in err
    assert not (tmp_path / "records.jsonl").exists()


def test_resuming_with_other_settings_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    Server().install(monkeypatch)
    code, _, err = evaluate(capsys, monkeypatch, tmp_path, "--modes", "single", "--limit", "1")
    assert code == 0, err

    code, _, err = dytopo(
        capsys, monkeypatch, "eval", "--rounds", "2", "--backend-url", URL, "--out", str(tmp_path)
    )

    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "holds eval runs made with other settings (topology.max_rounds (1 -> 2)" in err
