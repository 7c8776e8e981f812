"""`dytopo runs`: runs listed from the traces the library writes, and hostile files in one row."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import after_each_checkpoint, decision, final, goal, make_swarm, step
from rich.console import Console
from typer.testing import CliRunner

from dytopo import runner as library_runner
from dytopo.agents.base import AgentOutput, FunctionAgent, StepContext
from dytopo.cli import app, main
from dytopo.cli import runs as runs_cli
from dytopo.cli.progress import RoundProgress
from dytopo.embedders import HashEmbedder
from dytopo.errors import BackendUnavailable, RunError, RunInUse
from dytopo.runner import aresume
from dytopo.swarm import runlock
from dytopo.swarm.checkpoint import Checkpoint, checkpoint_path, read_checkpoint, write_checkpoint
from dytopo.swarm.loop import Swarm
from dytopo.swarm.result import RunResult
from dytopo.swarm.trace import Trace, read_trace
from dytopo.testing import ScriptedBackend

cli = CliRunner()


def _script(rounds: int) -> dict[str, list[Any]]:
    return {
        "researcher": [step(f"facts {r}", f"F{r}", "draft", "facts") for r in range(rounds)],
        "writer": [step(f"draft {r}", f"D{r}", "facts", "zebra") for r in range(rounds)],
    }


async def _complete(trace: Path, task: str = "compare LRU and LFU") -> RunResult:
    script = _script(2)
    script["manager"] = [goal("go"), decision(False), decision(True, "ANSWER"), final("ANSWER")]
    swarm = make_swarm(ScriptedBackend(by_tag=script), ["researcher", "writer"], max_rounds=2)
    return await swarm.run(task, trace_path=trace)


async def _failed(trace: Path) -> RunResult:
    script = _script(2)
    script["manager"] = [goal("go"), decision(False), BackendUnavailable("gone", url="x")]
    swarm = make_swarm(ScriptedBackend(by_tag=script), ["researcher", "writer"])
    with pytest.raises(RunError) as info:
        await swarm.run("a failing task", trace_path=trace)
    partial: RunResult = info.value.partial
    return partial


async def _interrupted(trace: Path) -> None:
    """Cancelled (what Ctrl-C does to the run) while an agent is busy in round 2."""
    busy = asyncio.Event()

    async def slow(ctx: StepContext) -> AgentOutput:
        if ctx.round == 2:
            busy.set()
            await asyncio.Event().wait()
        return AgentOutput(public="p", private="q", query="facts", key="facts")

    script = _script(1)
    script["manager"] = [goal("go"), decision(False)]
    swarm = make_swarm(
        ScriptedBackend(by_tag=script),
        ["researcher", "writer"],
        extra=[FunctionAgent("slow", slow)],
        max_rounds=3,
    )
    task = asyncio.create_task(swarm.run("an interrupted task", trace_path=trace))
    await busy.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def _listed(folder: Path) -> list[dict[str, Any]]:
    result = cli.invoke(app, ["runs", "--json", "--dir", str(folder)])
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.output)
    return rows


def _age(trace: Path, seconds: float) -> None:
    """Make a trace look written `seconds` ago (its events and the file)."""
    lines = trace.read_text(encoding="utf-8").splitlines()
    shifted = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            shifted.append(line)
            continue
        event["ts"] -= seconds
        shifted.append(json.dumps(event))
    trace.write_text("\n".join(shifted) + "\n", encoding="utf-8")
    then = time.time() - seconds
    os.utime(trace, (then, then))


async def test_lists_library_traces_newest_first_with_status_rounds_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    done = await _complete(tmp_path / "a-complete.jsonl", task="x" * 100)
    failed = await _failed(tmp_path / "b-failed.jsonl")
    await _interrupted(tmp_path / "c-interrupted.jsonl")
    _age(tmp_path / "a-complete.jsonl", 300)  # oldest
    _age(tmp_path / "b-failed.jsonl", 200)

    rows = _listed(tmp_path)

    assert [r["status"] for r in rows] == ["interrupted", "failed", "complete"]
    interrupted, fail_row, complete = rows
    assert complete["run_id"] == done.run_id
    assert complete["rounds"] == len(done.rounds) == 2
    assert complete["prompt_tokens"] == done.usage.prompt_tokens > 0
    assert complete["tokens"] == done.usage.prompt_tokens + done.usage.completion_tokens
    assert complete["task"] == "x" * 100
    assert fail_row["run_id"] == failed.run_id
    assert fail_row["rounds"] == len(failed.rounds) == 1
    assert interrupted["rounds"] == 1
    assert interrupted["task"] == "an interrupted task"
    assert all(r["wall_s"] >= 0 and r["started_at"] for r in rows)

    table = cli.invoke(app, ["runs", "--dir", str(tmp_path)])
    assert table.exit_code == 0
    lines = table.output.splitlines()
    assert lines[0].split()[:4] == ["id", "topology", "task", "status"]
    assert done.run_id in lines[3]
    assert "complete" in lines[3]
    assert "x" * 59 + "…" in lines[3]
    assert "x" * 61 not in lines[3]
    assert lines[-1] == f"continue a stopped run with: dytopo resume ID --dir {tmp_path}"


async def _killed(trace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL as round 2 starts: the trace as it was then, torn last line, and round 1's
    checkpoint (written while round 2 goes on)."""
    kept: dict[Path, bytes] = {}

    def snapshot(event: dict[str, Any]) -> None:
        if event["event"] == "round_start" and event["round"] == 2:
            kept[trace] = trace.read_bytes()

    def landed(cp: Checkpoint, path: Path) -> None:
        if (cp.status, cp.state.round) == ("running", 1):
            kept[path] = path.read_bytes()

    after_each_checkpoint(monkeypatch, landed)

    script = _script(2)
    script["manager"] = [goal("go"), decision(False), decision(True, "A"), final("A")]
    swarm = make_swarm(ScriptedBackend(by_tag=script), ["researcher", "writer"], max_rounds=2)
    await swarm.run("a killed task", trace_path=trace, observers=[snapshot])
    for path, data in kept.items():
        path.write_bytes(data)
    with trace.open("a", encoding="utf-8") as handle:
        handle.write('{"event": "round_st')


HOLD_LOCK = """
import fcntl, sys, time
f = open(sys.argv[1], "a")
fcntl.flock(f.fileno(), fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


async def test_a_run_is_running_while_its_writer_lives_then_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Running while a process holds the trace's lock; interrupted once it was SIGKILLed."""
    trace = tmp_path / "killed.jsonl"
    await _killed(trace, monkeypatch)
    cp = read_checkpoint(checkpoint_path(trace))
    assert cp.status == "running"
    with _writer(trace):
        live = runs_cli.list_runs(tmp_path)
        with pytest.raises(RunInUse, match="being written by another dytopo process"):
            await aresume(trace)
    dead = runs_cli.list_runs(tmp_path)

    assert [(r.status, r.rounds, r.run_id) for r in live] == [("running", 1, cp.run_id)]
    assert [(r.status, r.rounds) for r in dead] == [("interrupted", 1)]
    assert live[0].problem == "1 unreadable line(s) skipped"
    assert live[0].checkpoint == str(checkpoint_path(trace))


@contextmanager
def _writer(trace: Path) -> Iterator[None]:
    """Another process holding the trace's lock, SIGKILLed on exit."""
    writer = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(trace)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == "locked\n"
        yield
    finally:
        writer.kill()
        writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()


async def test_a_second_writer_of_a_run_is_refused(tmp_path: Path) -> None:
    """Two processes (or two runs) never append to one trace at once."""
    trace = tmp_path / "busy.jsonl"
    first = Trace("r1", trace)
    try:
        with pytest.raises(RunInUse, match="being written by another dytopo process"):
            Trace("r2", trace)
        assert runlock.in_use(trace)
    finally:
        first.close()
    assert not runlock.in_use(trace)
    Trace("r3", trace).close()


async def test_checkpoint_status_decides_a_run_without_run_end(tmp_path: Path) -> None:
    """A run_end that never reached the disk, but a checkpoint that says how the run ended."""
    trace = tmp_path / "r.jsonl"
    await _failed(trace)
    lines = trace.read_text(encoding="utf-8").splitlines()
    trace.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")  # drop run_end
    cp = read_checkpoint(checkpoint_path(trace))
    assert cp.status == "failed"

    (row,) = runs_cli.list_runs(tmp_path)
    assert row.status == "failed"  # the checkpoint says how it ended

    write_checkpoint(cp.model_copy(update={"status": "running"}), checkpoint_path(trace))
    # No process writes it: it died while running.
    assert [r.status for r in runs_cli.list_runs(tmp_path)] == ["interrupted"]


async def test_checkpoint_without_its_trace_is_listed(tmp_path: Path) -> None:
    trace = tmp_path / "gone.jsonl"
    failed = await _failed(trace)
    cp = read_checkpoint(checkpoint_path(trace))
    trace.unlink()

    (row,) = _listed(tmp_path)
    assert (row["run_id"], row["status"], row["rounds"], row["task"]) == (
        failed.run_id,
        "failed",
        1,
        "a failing task",
    )
    assert row["started_at"] == cp.started_at
    assert row["problem"] == "trace not in this folder"


HOSTILE: dict[str, bytes] = {
    "garbage.jsonl": bytes(range(256)) * 40,
    "latin1.jsonl": '{"event": "run_start", "run_id": "é", "task": "café"}\n'.encode("latin-1"),
    "empty.jsonl": b"",
    "nested.jsonl": b"[" * 100_000 + b"]" * 100_000 + b"\n",
    "not-events.jsonl": b'[1, 2]\n"text"\n{"no": "event"}\n',
    "bad.checkpoint.json": b"\xff\xfe{",
}


def test_hostile_files_are_one_unreadable_row_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, data in HOSTILE.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "folder.jsonl").mkdir()
    os.mkfifo(tmp_path / "fifo.jsonl")  # opening it would block forever
    monkeypatch.setattr(runs_cli, "MAX_FILE_BYTES", 300_000)
    (tmp_path / "huge.jsonl").write_bytes(b"{}\n" * 200_000)

    rows = _listed(tmp_path)
    problems = {Path(r["trace"] or r["checkpoint"]).name: r["problem"] for r in rows}
    assert all(r["status"] == "unreadable" for r in rows)
    assert problems == {
        "garbage.jsonl": "not UTF-8 text",
        "latin1.jsonl": "not UTF-8 text",
        "empty.jsonl": "empty",
        "nested.jsonl": "no DyTopo trace events",
        "not-events.jsonl": "no DyTopo trace events",
        "bad.checkpoint.json": "not UTF-8 text",
        "folder.jsonl": "not a regular file",
        "fifo.jsonl": "not a regular file",
        "huge.jsonl": "too large to list (0.6 MB)",
    }
    monkeypatch.setattr("sys.argv", ["dytopo", "runs", "--dir", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert captured.out.count("unreadable") == len(HOSTILE) + 3


def test_overlong_line_is_skipped_without_losing_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs_cli, "MAX_LINE_BYTES", 64)
    (tmp_path / "t.jsonl").write_text(
        '{"event": "run_start", "run_id": "r1"}\n'
        + "x" * 1000
        + '\n{"event": "round_end", "run_id": "r1", "round": 1}\n'
    )
    (row,) = runs_cli.list_runs(tmp_path)
    assert (row.run_id, row.rounds, row.problem) == ("r1", 1, "1 unreadable line(s) skipped")


def test_hostile_fields_are_shown_as_text(tmp_path: Path) -> None:
    events = [
        {
            "event": "run_start",
            "run_id": "r\x1b[31m1",
            "ts": float("nan"),
            "name": ["not", "a", "name"],
            "task": "[bold red]markup[/] \x1b]0;title\x07 \u202eevil\ud800",
        },
        {"event": "round_end", "run_id": "r\x1b[31m1", "round": "two", "usage": None},
        {"event": "round_end", "run_id": "r\x1b[31m1", "round": 1, "usage": {"prompt_tokens": -5}},
        {"event": "run_end", "run_id": "r\x1b[31m1", "usage": [], "error": 7},
    ]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n")

    (row,) = _listed(tmp_path)
    assert (row["rounds"], row["tokens"], row["started_at"], row["topology"]) == (1, 0, None, None)
    assert row["status"] == "complete"
    table = cli.invoke(app, ["runs", "--dir", str(tmp_path)])
    assert table.exit_code == 0
    assert "[bold red]markup[/]" in table.output
    assert not any(c in table.output for c in "\x1b\x07\u202e")


def test_empty_missing_and_non_folder(tmp_path: Path) -> None:
    empty = cli.invoke(app, ["runs", "--dir", str(tmp_path)])
    assert empty.exit_code == 0
    assert empty.output.strip().splitlines() == [
        f"no runs in {tmp_path}/ (`dytopo run TOPOLOGY` writes its trace there)"
    ]
    missing = cli.invoke(app, ["runs", "--dir", str(tmp_path / "nope"), "--json"])
    assert (missing.exit_code, missing.output.strip()) == (0, "[]")
    (tmp_path / "file").write_text("x")
    not_folder = cli.invoke(app, ["runs", "--dir", str(tmp_path / "file")])
    assert not_folder.exit_code == 2
    assert len(not_folder.output.strip().splitlines()) == 1


# --- dytopo resume ------------------------------------------------------------------------------

TOPOLOGY = """\
name: t
task: compare caches
routing: {mode: dynamic, tau: 0.5}
max_rounds: 2
min_rounds: 2
seed: 3
structured_reasks: 1
agents:
  - {id: researcher}
  - {id: writer}
"""


def _round(r: int) -> dict[str, list[Any]]:
    return {
        "researcher": [step(f"facts {r}", f"F{r}", "draft", "facts")],
        "writer": [step(f"draft {r}", f"D{r}", "facts", "zebra")],
    }


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> list[ScriptedBackend]:
    """The scripted servers the runs will use, in order: the test appends one per run."""
    queue: list[ScriptedBackend] = []

    @asynccontextmanager
    async def built(topology: Any, *args: Any) -> AsyncIterator[Swarm]:
        yield library_runner.build_swarm(topology, queue.pop(0), HashEmbedder(), source=args[4])

    monkeypatch.setattr(library_runner, "_built", built)
    return queue


def _server(**by_tag: list[Any]) -> ScriptedBackend:
    return ScriptedBackend(by_tag=by_tag)


def dytopo(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int, str, str]:
    """`dytopo ARGS` as the entry point runs it: exit code, stdout, stderr."""
    monkeypatch.setattr("sys.argv", ["dytopo", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    code = exit_info.value.code
    assert isinstance(code, int)
    return code, captured.out, captured.err


@pytest.fixture
def stopped(
    tmp_path: Path,
    servers: list[ScriptedBackend],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Path, str]:
    """`dytopo run` whose server dies after round 1: its trace and its one-line error."""
    topology, trace = tmp_path / "t.yaml", tmp_path / "t.jsonl"
    topology.write_text(TOPOLOGY, encoding="utf-8")
    first = {who: [*replies, GONE] for who, replies in _round(1).items()}
    servers.append(_server(**first, manager=[goal("g1"), decision(False), GONE]))
    code, _, err = dytopo(capsys, monkeypatch, "run", str(topology), "--trace", str(trace))
    assert code == 1, err
    return trace, err


GONE = BackendUnavailable("server gone after 6 attempts", url="scripted://")


def test_a_dead_server_names_the_exact_resume_command_and_resume_finishes(
    stopped: tuple[Path, str],
    servers: list[ScriptedBackend],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trace, err = stopped
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "stopped after 1 complete round(s)" in errors[0]
    assert errors[0].endswith(f"continue it with: dytopo resume {trace}")
    servers.append(
        _server(**_round(2), manager=[decision(True, "ANSWER", goal_next=""), final("ANSWER")])
    )
    monkeypatch.setenv("COLUMNS", "200")

    code, out, err = dytopo(capsys, monkeypatch, "resume", str(trace))

    assert code == 0, err
    assert "ANSWER" in out
    assert "(halt: manager, 2 rounds" in out
    assert "from round 2 (1 complete round(s) kept)" in err
    events = read_trace(trace)
    assert [e["round"] for e in events if e["event"] == "round_end"] == [1, 2]
    (row,) = runs_cli.list_runs(trace.parent)
    assert (row.status, row.rounds) == ("complete", 2)

    code, _, err = dytopo(capsys, monkeypatch, "resume", str(trace))
    assert code == 2
    assert err.count("\n") == 1
    assert "is complete: nothing to resume" in err


def test_resume_by_run_id_prints_json(
    stopped: tuple[Path, str],
    servers: list[ScriptedBackend],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trace, _ = stopped
    run_id = read_trace(trace)[0]["run_id"]
    servers.append(
        _server(**_round(2), manager=[decision(True, "ANSWER", goal_next=""), final("ANSWER")])
    )
    args = ["resume", run_id, "--dir", str(trace.parent), "--json"]

    code, out, err = dytopo(capsys, monkeypatch, *args)

    assert code == 0, err
    result = json.loads(out)
    assert (result["run_id"], result["rounds"], result["final_answer"]) == (run_id, 2, "ANSWER")
    assert err == ""  # --json: no progress view


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("0123456789ab", "no run '0123456789ab' in"),
        ("{dir}/nothing.checkpoint.json", "no such file"),
        ("{dir}/bad.checkpoint.json", "not a DyTopo checkpoint"),
        ("{dir}/t.yaml", "no checkpoint beside this trace"),
    ],
)
def test_resume_refusals_are_one_line_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    message: str,
) -> None:
    (tmp_path / "bad.checkpoint.json").write_bytes(b'{"format": 1, "run_id": "x"')
    (tmp_path / "t.yaml").write_text(TOPOLOGY, encoding="utf-8")
    args = ["resume", source.format(dir=tmp_path), "--dir", str(tmp_path)]

    code, out, err = dytopo(capsys, monkeypatch, *args)

    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert message in err
    assert "Traceback" not in err


def test_a_changed_topology_is_refused_naming_the_change_unless_forced(
    stopped: tuple[Path, str],
    servers: list[ScriptedBackend],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trace, _ = stopped
    topology = trace.with_name("t.yaml")
    topology.write_text(TOPOLOGY.replace("tau: 0.5", "tau: 0.4"), encoding="utf-8")

    code, _, err = dytopo(capsys, monkeypatch, "resume", str(trace))
    assert code == 2
    assert err.count("\n") == 1
    assert "routing.tau (0.5 -> 0.4)" in err
    assert "--force" in err

    servers.append(
        _server(**_round(2), manager=[decision(True, "ANSWER", goal_next=""), final("ANSWER")])
    )
    code, out, err = dytopo(capsys, monkeypatch, "resume", str(trace), "--force", "--quiet")
    assert code == 0, err
    assert "ANSWER" in out
    assert err == ""  # --quiet: no progress view


SIGNALLED = """
import os, signal, sys
from contextlib import asynccontextmanager
from dytopo import runner
from dytopo.cli import main
from dytopo.embedders import HashEmbedder
from dytopo.testing import Reply, ScriptedBackend

sig, times = getattr(signal, sys.argv[1]), int(sys.argv[2])
sent = []

def responder(request):
    if len(sent) < times:  # while agent requests are in flight
        sent.append(os.kill(os.getpid(), sig))
    return Reply(content="{}", delay_s=60)

@asynccontextmanager
async def built(topology, *args):
    backend = ScriptedBackend(responder=responder)
    yield runner.build_swarm(topology, backend, HashEmbedder(), source=args[4])

runner._built = built
sys.argv = ["dytopo", *sys.argv[3:]]
main()
"""


@pytest.mark.parametrize(("sig", "times"), [("SIGINT", 1), ("SIGTERM", 1), ("SIGINT", 2)])
def test_ctrl_c_or_sigterm_exits_130_naming_the_resume_command(
    stopped: tuple[Path, str], sig: str, times: int
) -> None:
    """In a process of its own, as a real signal arrives: after it the CLI exits, and this test
    process should not live on with what an interrupted event loop leaves behind."""
    trace, _ = stopped
    done = subprocess.run(
        [sys.executable, "-c", SIGNALLED, sig, str(times), "resume", str(trace)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr  # SIGTERM and a second Ctrl-C included
    assert done.stderr.strip().splitlines()[-2:] == [
        "interrupted",
        f"continue it with: dytopo resume {trace}",
    ]
    cp = read_checkpoint(checkpoint_path(trace))
    assert (cp.status, cp.state.round) == ("interrupted", 1)
    assert read_trace(trace)[-1]["error"] == "interrupted"


def test_progress_shows_model_text_as_text_and_a_resumed_run() -> None:
    """A goal or reason with "[/x]" is model output: shown as is, never read as markup (which
    raised MarkupError inside the run's observer and ended the run)."""
    console = Console(record=True, width=200)
    view = RoundProgress(console, agents=["a", "b"])
    view({"event": "run_resumed", "run_id": "r1", "from_round": 3, "completed_rounds": 2})
    view({"event": "round_start", "round": 3, "goal": "use [/x] and [bold]tags[/bold]"})
    view(
        {
            "event": "manager_decision",
            "halt": True,
            "accepted": False,
            "rejected_because": "[/y] early",
            "reason": "done [/z]",
        }
    )
    view.stop()
    text = console.export_text()
    assert "resuming run r1 from round 3 (2 complete round(s) kept)" in text
    assert "round 3 goal: use [/x] and [bold]tags[/bold]" in text
    assert "manager: halt not accepted ([/y] early): done [/z]" in text


# --- dytopo run --report ------------------------------------------------------------------------


def test_run_with_report_writes_the_html_beside_the_trace(
    tmp_path: Path,
    servers: list[ScriptedBackend],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topology, trace = tmp_path / "t.yaml", tmp_path / "t.jsonl"
    topology.write_text(TOPOLOGY, encoding="utf-8")
    servers.append(
        _server(
            **{who: _round(1)[who] + _round(2)[who] for who in ("researcher", "writer")},
            manager=[goal("g1"), decision(False), decision(True, "ANSWER", goal_next="")],
        )
    )
    code, out, err = dytopo(
        capsys, monkeypatch, "run", str(topology), "--trace", str(trace), "--report", "--json"
    )
    assert code == 0, err
    shown = json.loads(out)
    assert shown["report"] == str(trace.with_suffix(".html"))
    page = trace.with_suffix(".html").read_text(encoding="utf-8")
    assert page.count('data-round="2"') >= 1
    assert "ANSWER" in page


def test_without_report_no_report_is_written(stopped: tuple[Path, str]) -> None:
    trace, _ = stopped
    assert not trace.with_suffix(".html").exists()


def test_report_of_a_dead_run_says_it_is_partial(
    tmp_path: Path,
    servers: list[ScriptedBackend],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topology, trace = tmp_path / "t.yaml", tmp_path / "t.jsonl"
    topology.write_text(TOPOLOGY, encoding="utf-8")
    first = {who: [*replies, GONE] for who, replies in _round(1).items()}
    servers.append(_server(**first, manager=[goal("g1"), decision(False), GONE]))
    out_html = tmp_path / "r.html"
    code, _, err = dytopo(
        capsys,
        monkeypatch,
        "run",
        str(topology),
        "--trace",
        str(trace),
        "--report-to",
        str(out_html),
    )
    assert code == 1
    assert f"report: {out_html}" in err
    assert "partial" in out_html.read_text(encoding="utf-8").lower()
