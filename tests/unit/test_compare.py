"""`dytopo compare` on scripted backends: rows per mode, the table, --json, the index page, a
failing mode, bad --modes, Ctrl-C."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import decision, goal, step

from dytopo import report as report_package
from dytopo import runner as library_runner
from dytopo.cli import main
from dytopo.embedders import HashEmbedder
from dytopo.errors import BackendUnavailable
from dytopo.swarm.loop import Swarm
from dytopo.swarm.trace import read_trace
from dytopo.testing import ScriptedBackend
from dytopo.topology import Topology

TOPOLOGY = """\
name: pair
task: compare caches
routing: {mode: dynamic, tau: 0.5}
max_rounds: 4
min_rounds: 1
seed: 3
structured_reasks: 1
agents:
  - {id: researcher}
  - {id: writer}
"""
URL = "http://127.0.0.1:9"  # configured, so no server is started; never reached (scripted)
GONE = BackendUnavailable("server gone after 6 attempts", url="scripted://")


def one_round(answer: str) -> ScriptedBackend:
    """A server for one 1-round run of the pair: both agents step, the manager halts."""
    return ScriptedBackend(
        by_tag={
            "researcher": [step("facts", "F", "draft", "facts")],
            "writer": [step("draft", "D", "facts", "a draft")],
            "manager": [goal("go"), decision(True, answer, goal_next="")],
        }
    )


@dataclass
class Servers:
    """The scripted servers the runs use, in order (one per mode), and each mode's topology as
    it was built."""

    queue: list[ScriptedBackend] = field(default_factory=list)
    built: list[Topology] = field(default_factory=list)


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Servers:
    servers = Servers()

    @asynccontextmanager
    async def built(topology: Topology, *args: Any) -> AsyncIterator[Swarm]:
        servers.built.append(topology)
        backend = servers.queue.pop(0)
        yield library_runner.build_swarm(topology, backend, HashEmbedder(), source=args[4])

    monkeypatch.setattr(library_runner, "_built", built)
    return servers


@pytest.fixture
def topology(tmp_path: Path) -> Path:
    path = tmp_path / "pair.yaml"
    path.write_text(TOPOLOGY, encoding="utf-8")
    return path


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


def test_json_has_one_row_per_mode_with_the_same_seed_and_fixed_rounds(
    topology: Path,
    tmp_path: Path,
    servers: Servers,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    servers.queue += [one_round("A1"), one_round("answer two"), one_round("A3")]
    backends = list(servers.queue)
    out = tmp_path / "cmp"

    code, stdout, stderr = dytopo(
        capsys, monkeypatch, "compare", str(topology), "--modes", "dynamic,broadcast,chain",
        "--rounds", "1", "--seed", "11", "--backend-url", URL, "--json", "--out", str(out),
    )  # fmt: skip

    assert code == 0, stderr
    assert stderr == ""  # --json: no progress
    data = json.loads(stdout)
    assert [r["mode"] for r in data["rows"]] == ["dynamic", "broadcast", "chain"]
    assert (data["seed"], data["rounds"], data["task"]) == (11, 1, "compare caches")
    for row, backend in zip(data["rows"], backends, strict=True):
        backend.assert_complete()
        assert row["ok"] is True
        assert row["rounds"] == 1
        assert row["halt_reason"] == "manager"
        assert row["prompt_tokens"] == backend.usage.prompt_tokens > 0
        assert row["completion_tokens"] == backend.usage.completion_tokens > 0
        assert row["trace"] == str(out / f"{row['mode']}.jsonl")
        assert row["report"] == str(out / f"{row['mode']}.html")
    assert [r["answer_chars"] for r in data["rows"]] == [2, 10, 2]
    assert data["rows"][0]["tokens_vs_first"] == 1.0
    broadcast = data["rows"][1]
    assert broadcast["edges_per_round"] == [2]  # both directions between the two agents
    for mode in ("dynamic", "broadcast", "chain"):
        start = read_trace(out / f"{mode}.jsonl")[0]
        assert start["event"] == "run_start"
        assert start["mode"] == mode
        assert start["max_rounds"] == 1
    assert [(t.seed, t.min_rounds, t.max_rounds) for t in servers.built] == [(11, 1, 1)] * 3
    assert json.loads((out / "compare.json").read_text()) == data


def test_the_table_and_progress_and_the_index_page(
    topology: Path,
    tmp_path: Path,
    servers: Servers,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    servers.queue += [one_round("A1"), one_round("A2")]
    out = tmp_path / "cmp"

    code, stdout, stderr = dytopo(
        capsys, monkeypatch, "compare", str(topology), "--modes", "single,broadcast",
        "--task", "a <b>bold</b> task", "--backend-url", URL, "--out", str(out),
    )  # fmt: skip

    assert code == 0, stderr
    assert "mode 1/2: single" in stderr
    assert "mode 2/2: broadcast" in stderr
    assert re.search(r"^single: 1 rounds, \d+ tokens, [\d.]+s, halt: manager$", stderr, re.M)
    header = next(line for line in stdout.splitlines() if "mode" in line and "rounds" in line)
    for column in ("edges/round", "prompt", "cached", "generated", "wall s", "halt", "answer"):
        assert column in header
    assert re.search(r"│ single\s+│\s+1 │ 0\s+│", stdout)  # one agent: no edges
    assert re.search(r"│ broadcast\s+│\s+1 │ 2\s+│", stdout)
    assert stdout.strip().endswith(f"traces, reports and index: {out / 'index.html'}")

    page = (out / "index.html").read_text()
    assert re.findall(r'<a href="([^"]+)"', page) == [
        "single.html",
        "broadcast.html",
        "single.html",
        "broadcast.html",
    ]
    assert (out / "single.html").is_file()
    assert (out / "broadcast.html").is_file()
    assert "a &lt;b&gt;bold&lt;/b&gt; task" in page  # the task is text, not markup
    assert "http://" not in page
    assert "https://" not in page
    assert "<script" not in page


def test_a_failing_mode_is_a_row_with_its_error_and_the_next_mode_runs(
    topology: Path,
    tmp_path: Path,
    servers: Servers,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failing = ScriptedBackend(
        by_tag={
            "researcher": [step("facts", "F", "draft", "facts")],
            "writer": [step("draft", "D", "facts", "a draft")],
            "manager": [goal("go"), GONE],
        }
    )
    servers.queue += [failing, one_round("A2")]
    out = tmp_path / "cmp"

    code, stdout, stderr = dytopo(
        capsys, monkeypatch, "compare", str(topology), "--modes", "dynamic,star",
        "--rounds", "1", "--backend-url", URL, "--json", "--out", str(out),
    )  # fmt: skip

    assert code == 0, stderr
    failed, star = json.loads(stdout)["rows"]
    assert failed["mode"] == "dynamic"
    assert failed["ok"] is False
    assert failed["halt_reason"] == "error"
    assert "server gone after 6 attempts" in failed["error"]
    assert failed["prompt_tokens"] > 0  # the partial run's usage is kept
    assert failed["report"] == str(out / "dynamic.html")  # a partial trace still has a report
    assert failed["tokens_vs_first"] is None  # a partial run compares with nothing
    assert star["tokens_vs_first"] == 1.0  # the first finished mode is the base
    assert (star["mode"], star["ok"], star["error"]) == ("star", True, "")
    page = (out / "index.html").read_text()
    assert "failed: " in page
    assert "server gone after 6 attempts" in page


def test_when_every_mode_fails_the_table_shows_why_and_the_exit_is_1(
    topology: Path,
    tmp_path: Path,
    servers: Servers,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    servers.queue += [ScriptedBackend(by_tag={"manager": [GONE]})]

    code, stdout, stderr = dytopo(
        capsys, monkeypatch, "compare", str(topology), "--modes", "random",
        "--backend-url", URL, "--out", str(tmp_path / "cmp"),
    )  # fmt: skip

    assert code == 1
    assert "random failed: " in stderr
    assert "error" in stdout
    assert "server gone after 6 attempts" in stdout
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("modes", "message"),
    [
        ("dynamic,ring", "--modes: 'ring' is not one of dynamic, broadcast, chain, star, random, "
         "single"),
        ("dynamic,,star", "--modes: an empty name is not one of dynamic, broadcast, chain, star, "
         "random, single"),
        ("star,dynamic,star", "--modes names star twice; give each mode once"),
    ],
)  # fmt: skip
def test_bad_modes_are_one_line_and_exit_2_before_anything_runs(
    topology: Path,
    tmp_path: Path,
    servers: Servers,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    modes: str,
    message: str,
) -> None:
    out = tmp_path / "cmp"
    code, stdout, stderr = dytopo(
        capsys, monkeypatch, "compare", str(topology), "--modes", modes, "--backend-url", URL,
        "--out", str(out),
    )  # fmt: skip
    assert (code, stdout) == (2, "")
    assert stderr.strip().splitlines() == [f"error: {message}"]
    assert not out.exists()


def test_rounds_beyond_the_limit_and_an_old_trace_are_refused_before_anything_runs(
    topology: Path,
    tmp_path: Path,
    servers: Servers,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "cmp"
    args = ["compare", str(topology), "--modes", "dynamic", "--backend-url", URL, "--out", str(out)]
    code, _, stderr = dytopo(capsys, monkeypatch, *args, "--rounds", "51")
    assert code == 2
    assert stderr.strip().splitlines() == [
        "error: --rounds 51: Input should be less than or equal to 50"
    ]
    out.mkdir()
    (out / "dynamic.jsonl").write_text("{}\n")
    code, _, stderr = dytopo(capsys, monkeypatch, *args)
    assert code == 2
    assert stderr.strip().splitlines() == [
        f"error: {out / 'dynamic.jsonl'} exists: give --out a new folder (a trace is appended "
        "to, and two runs in one would be unreadable)"
    ]


INTERRUPTED = """
import os, signal, sys
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from dytopo import runner
from dytopo.cli import main
from dytopo.embedders import HashEmbedder
from dytopo.testing import Reply, ScriptedBackend
sys.path.insert(0, sys.argv[1])
from helpers import decision, final, goal, step

runs = []

def responder(request):
    if len(runs) == 2:  # the second mode: Ctrl-C while its agents are at work
        os.kill(os.getpid(), signal.SIGINT)
        return Reply(content="{}", delay_s=60)
    tag = request.tag
    if tag == "manager":
        replies = runs[-1].setdefault("manager", [goal("go"), decision(True, "A", goal_next=""),
                                                 final("A")])
        return replies.pop(0)
    return step("p", "q", "need " + tag, "offer " + tag)

@asynccontextmanager
async def built(topology, *args):
    runs.append({})
    yield runner.build_swarm(topology, ScriptedBackend(responder=responder), HashEmbedder(),
                             source=args[4])

runner._built = built
sys.argv = ["dytopo", *sys.argv[2:]]
main()
"""


def test_ctrl_c_stops_with_one_line_and_exit_130_keeping_the_finished_rows(
    topology: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cmp"
    helpers = Path(__file__).parent
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED, str(helpers), "compare", str(topology),
         "--modes", "dynamic,broadcast,chain", "--rounds", "1", "--backend-url", URL,
         "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip

    assert done.returncode == 130, done.stderr
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"interrupted: 1 of 3 modes finished; their rows: {out / 'index.html'}"
    ]
    rows = json.loads((out / "compare.json").read_text())["rows"]
    assert [(r["mode"], r["ok"]) for r in rows] == [("dynamic", True)]
    assert 'href="dynamic.html"' in (out / "index.html").read_text()


def test_a_report_that_fails_to_render_is_noted_and_the_runs_are_kept(
    topology: Path,
    tmp_path: Path,
    servers: Servers,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not only DyTopoError: a bug in rendering (here a KeyError) must not cost the runs."""
    monkeypatch.setenv("COLUMNS", "250")
    servers.queue += [one_round("A1"), one_round("A2")]
    calls: list[Path] = []

    def broken(trace: Path, out: Path | None = None) -> Path:
        calls.append(trace)
        raise KeyError("width")

    monkeypatch.setattr(report_package, "write_report", broken)
    out = tmp_path / "cmp"

    code, stdout, stderr = dytopo(
        capsys, monkeypatch, "compare", str(topology), "--modes", "dynamic,broadcast",
        "--backend-url", URL, "--out", str(out),
    )  # fmt: skip

    assert code == 0, stderr
    assert calls == [out / "dynamic.jsonl", out / "broadcast.jsonl"]
    assert "dynamic: 1 rounds" in stderr
    assert "(report not written: KeyError: 'width')" in stderr
    assert "Traceback" not in stderr
    assert stdout.count("report not written: KeyError: 'width'") == 2
    rows = json.loads((out / "compare.json").read_text())["rows"]
    assert [(r["ok"], r["report"], r["report_error"]) for r in rows] == [
        (True, None, "KeyError: 'width'")
    ] * 2
    assert "report not written: KeyError" in (out / "index.html").read_text()
