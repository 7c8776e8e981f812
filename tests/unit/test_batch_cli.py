"""`dytopo batch` end to end over fake servers: /props, /health and /slots answered in-process,
the runs' swarms on scripted backends (one per server URL, shared by that server's runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from batch_kit import TOPOLOGY, Server

from dytopo import runner as library_runner
from dytopo.batch import ray_exec, read_records
from dytopo.batch._share import SlotShare
from dytopo.batch.pool import BackendPool, PoolServer
from dytopo.batch.schedule import RunSpec
from dytopo.cli import batch as batch_cli
from dytopo.cli import main
from dytopo.embedders import HashEmbedder
from dytopo.errors import BackendUnavailable, ConfigError
from dytopo.managed.resolve import Endpoints
from dytopo.swarm.build import build_swarm
from dytopo.swarm.loop import Swarm
from dytopo.topology import Topology

A, B = "http://127.0.0.1:18001", "http://127.0.0.1:18002"


@dataclass
class Net:
    """The fake servers by URL, and each run the CLI started: (server URL, its slots)."""

    servers: dict[str, Server] = field(default_factory=dict)
    built: list[tuple[str, int | None]] = field(default_factory=list)


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> Net:
    net = Net({A: Server(), B: Server()})

    async def handle(self: object, request: httpx.Request) -> httpx.Response:
        server = net.servers.get(f"{request.url.scheme}://{request.url.host}:{request.url.port}")
        if server is None or server.dead:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/props":
            gen = {"n_ctx": server.n_ctx_per_slot}
            return httpx.Response(
                200, json={"total_slots": server.slots, "default_generation_settings": gen}
            )
        if request.url.path == "/slots":
            return httpx.Response(200, json=[{"is_processing": False}] * server.slots)
        return httpx.Response(200, json={"status": "ok"})

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", handle)

    @asynccontextmanager
    async def built(topology: Topology, url: str, *args: Any) -> AsyncIterator[Swarm]:
        net.built.append((url, topology.backend.slots))
        server = net.servers[url]
        if server.dead:
            raise BackendUnavailable(f"{url} refused the connection", url=url)
        # As the real client would: at most the topology's backend.slots requests in flight.
        client = SlotShare(server, topology.backend.slots or server.slots)
        yield build_swarm(topology, client, HashEmbedder(), base_dir=args[1], source=args[3])

    monkeypatch.setattr(library_runner, "_built", built)
    return net


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    topology = tmp_path / "pair.yaml"
    topology.write_text(TOPOLOGY, encoding="utf-8")
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('"task one"\n{"task": "task two"}\n{"id": "third", "task": "task three"}\n')
    return tasks, topology


def dytopo(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.argv", ["dytopo", *args])
    code: Any = 0
    try:
        main()
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return (code if isinstance(code, int) else 0), captured.out, captured.err


def batch(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    files: tuple[Path, Path],
    out: Path,
    *args: str,
) -> tuple[int, str, str]:
    tasks, topology = files
    return dytopo(
        capsys, monkeypatch, "batch", str(tasks), "--topology", str(topology),
        "--out", str(out), *args,
    )  # fmt: skip


def test_runs_spread_over_the_servers_with_a_record_and_trace_each(
    net: Net,
    files: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = batch(
        capsys, monkeypatch, files, out,
        "--modes", "dynamic,broadcast", "--backend-url", A, "--backend-url", B, "--json",
    )  # fmt: skip

    assert code == 0, stderr
    assert stderr == ""  # --json: no progress
    summary = json.loads(stdout)
    assert (summary["tasks"], summary["runs"], summary["ran"], summary["skipped"]) == (3, 6, 6, 0)
    assert [(m["mode"], m["runs"], m["ok"]) for m in summary["modes"]] == [
        ("dynamic", 3, 3),
        ("broadcast", 3, 3),
    ]
    servers = {s["server"]: s for s in summary["servers"]}
    assert set(servers) == {A, B}
    assert all(s["runs"] >= 2 and s["max_runs_at_once"] == 1 for s in servers.values())
    assert all(s["per_run"] == s["slots"] == 2 for s in servers.values())
    assert summary["runs_per_minute"] > 0
    assert json.loads((out / "summary.json").read_text()) == summary
    assert sorted(net.built) == sorted(
        [(A, 2)] * servers[A]["runs"] + [(B, 2)] * servers[B]["runs"]
    )
    records = read_records(out / "records.jsonl")
    keys = {(r.item, r.mode) for r in records}
    assert keys == {(i, m) for i in ("line-1", "line-2", "third") for m in ("dynamic", "broadcast")}
    assert all(r.ok and r.rounds == 2 and r.server in (A, B) for r in records)
    assert all(Path(r.trace or "").is_file() for r in records)
    assert all(s.limiter.max_in_use <= 2 for s in net.servers.values())


def test_progress_lines_a_table_and_the_same_command_resumes(
    net: Net,
    files: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = batch(capsys, monkeypatch, files, out, "--backend-url", A)

    assert code == 0, stderr
    lines = stderr.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"[1/3] line-1 dynamic on {A}: ok (2 rounds, ")
    assert "3 tasks; 3 runs in" in stdout
    assert A in stdout
    assert f"records: {out / 'records.jsonl'}" in stdout

    code, stdout, stderr = batch(capsys, monkeypatch, files, out, "--backend-url", A)

    assert code == 0, stderr
    assert stderr.splitlines() == [f"resuming {out}: 3 of 3 runs already done, 0 to run"]
    assert len(net.built) == 3  # nothing ran again
    assert "3 tasks; 0 runs in" in stdout


def test_runs_per_server_shares_each_server_among_runs(
    net: Net,
    files: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, stdout, stderr = batch(
        capsys, monkeypatch, files, tmp_path / "out",
        "--backend-url", A, "--runs-per-server", "2", "--json",
    )  # fmt: skip

    assert code == 0, stderr
    (server,) = json.loads(stdout)["servers"]
    assert (server["per_run"], server["max_runs_at_once"], server["runs"]) == (1, 2, 3)
    assert net.built == [(A, 1)] * 3  # each run's client holds one request at a time
    assert net.servers[A].limiter.max_in_use == 2


def test_the_topologys_backends_are_the_pool_when_no_url_is_given(
    net: Net,
    files: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topology = files[1]
    topology.write_text(TOPOLOGY + f"backends: [{A}, {B}]\n", encoding="utf-8")

    code, stdout, stderr = batch(capsys, monkeypatch, files, tmp_path / "out", "--json")

    assert code == 0, stderr
    assert {s["server"] for s in json.loads(stdout)["servers"]} == {A, B}
    assert {url for url, _ in net.built} == {A, B}


def test_a_dead_server_s_runs_finish_on_the_other_one(
    net: Net,
    files: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net.servers[A].die_after = 4  # dies in its first run's second round
    out = tmp_path / "out"

    code, stdout, stderr = batch(
        capsys, monkeypatch, files, out, "--backend-url", A, "--backend-url", B
    )

    assert code == 0, stderr
    assert f"line-1 dynamic: {A} stopped answering (" in stderr
    records = read_records(out / "records.jsonl")
    assert sorted(r.item for r in records) == ["line-1", "line-2", "third"]
    assert all(r.ok and r.server == B for r in records)
    assert "dead, 1 runs moved off" in stdout


def test_when_no_server_is_left_it_says_how_to_continue_and_exits_1(
    net: Net,
    files: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net.servers[A].die_after = 4
    out = tmp_path / "out"

    code, stdout, stderr = batch(capsys, monkeypatch, files, out, "--backend-url", A)

    assert code == 1
    assert stdout == ""
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: no server of the batch answers any more ({A}): 3 runs not done")
    assert f"kept in {out / 'records.jsonl'}" in last
    assert last.endswith(f"continue with the same command: dytopo batch {files[0]} --topology "
                         f"{files[1]} --out {out} --backend-url {A}")  # fmt: skip


def test_when_every_run_fails_the_exit_is_1_with_each_error_on_record(
    net: Net,
    files: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The server answers /health but its replies end every run (a run's own failure).
    net.servers[A].responder = lambda request: BackendUnavailable("overloaded", url=A)
    out = tmp_path / "out"

    code, stdout, _ = batch(capsys, monkeypatch, files, out, "--backend-url", A, "--json")

    assert code == 1
    records = read_records(out / "records.jsonl")
    assert len(records) == 3
    assert all(not r.ok and "overloaded" in r.error for r in records)
    assert json.loads(stdout)["modes"][0]["failed"] == 3


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--runs-per-server", "0"], "error: --runs-per-server 0: give at least 1"),
        (["--backend-url", "ftp://x"], "error: --backend-url: 'ftp://x' is not an http(s) URL"),
        (["--modes", "dynamic,bogus"], "error: --modes: 'bogus' is not one of"),
    ],
)
def test_bad_options_are_one_line_and_exit_2_before_anything_runs(
    net: Net,
    files: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    problem: str,
) -> None:
    code, _, stderr = batch(capsys, monkeypatch, files, tmp_path / "out", *args)

    assert code == 2
    assert stderr.startswith(problem)
    assert len(stderr.strip().splitlines()) == 1
    assert net.built == []
    assert not (tmp_path / "out").exists()


def test_a_bad_task_line_is_one_line_and_exit_2_before_anything_runs(
    net: Net,
    files: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tasks, _ = files
    tasks.write_text('"fine"\n{"task": "x", "overrides": {"rounds": 0}}\n"fine too"\n')

    code, _, stderr = batch(capsys, monkeypatch, files, tmp_path / "out", "--backend-url", A)

    assert code == 2
    (line,) = stderr.strip().splitlines()
    assert line.startswith(
        f"error: {tasks}:2: overrides: max_rounds 0: Input should be greater than or equal to 1"
    )
    assert net.built == []
    assert not (tmp_path / "out").exists()


INTERRUPTED = """
import os, signal, sys
from contextlib import asynccontextmanager
import httpx
sys.path.insert(0, sys.argv[1])
from batch_kit import Server
from dytopo import runner
from dytopo.swarm.build import build_swarm
from dytopo.cli import main
from dytopo.embedders import HashEmbedder

server = Server()
runs = []

async def handle(self, request):
    props = {"total_slots": 2, "default_generation_settings": {"n_ctx": 4096}}
    return httpx.Response(200, json=props)

@asynccontextmanager
async def built(topology, url, *args):
    runs.append(url)
    if len(runs) == 2:  # Ctrl-C during the second run
        os.kill(os.getpid(), signal.SIGINT)
    yield build_swarm(topology, server, HashEmbedder(), base_dir=args[1], source=args[3])

httpx.AsyncHTTPTransport.handle_async_request = handle
runner._built = built
sys.argv = ["dytopo", *sys.argv[2:]]
main()
"""


def test_ctrl_c_exits_130_naming_the_command_that_continues(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    tasks, topology = files
    out = tmp_path / "out"
    args = ["batch", str(tasks), "--topology", str(topology), "--out", str(out),
            "--backend-url", A]  # fmt: skip

    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED, str(Path(__file__).parent), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines()[-2:] == [
        "interrupted",
        f"finished runs are kept in {out / 'records.jsonl'}; continue with the same command: "
        f"dytopo {' '.join(args)}",
    ]
    assert [r.item for r in read_records(out / "records.jsonl")] == ["line-1"]


async def test_a_ray_cluster_without_the_servers_resources_says_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    ray = pytest.importorskip("ray")
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(f"init {kw['address']}"))
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0, "dytopo_server_0": 4.0})
    pool = BackendPool(
        [PoolServer(k, u, url=u, slots=k + 2, per_run=k + 2) for k, u in enumerate((A, B))]
    )
    spec = RunSpec(topology=Topology(name="t", agents=[{"id": "a"}]), traces_dir=tmp_path)

    with pytest.raises(ConfigError) as error:
        async with ray_exec.RayExecutor(spec, pool, address="head:6379"):
            pass

    assert str(error.value) == (
        "the Ray cluster at head:6379 has no dytopo_server_1: on the node next to each server "
        "run `ray start --address head:6379 --resources '{\"dytopo_server_1\": 3}'` "
        "(units: the server's slots)"
    )
    assert calls == ["init head:6379", "shutdown"]
    await pool.aclose()


def test_eval_spreads_its_runs_over_several_backend_urls(
    net: Net,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    eval_kit = pytest.importorskip("eval_kit")
    server = eval_kit.Server()
    server.install(monkeypatch)  # the runs' swarms answer HumanEval canonically
    out = tmp_path / "eval"

    code, stdout, stderr = dytopo(
        capsys, monkeypatch, "eval", "--limit", "4", "--modes", "single", "--rounds", "1",
        "--backend-url", A, "--backend-url", B, "--out", str(out), "--json",
    )  # fmt: skip

    assert code == 0, stderr
    records = read_records(out / "records.jsonl")
    assert sorted(r.item for r in records) == eval_kit.IDS[:4]
    assert all(r.ok and r.grade["passed"] for r in records)
    assert {r.server for r in records} == {A, B}
    assert json.loads(stdout)["modes"][0]["passed"] == 4


def test_a_server_down_from_the_start_is_left_out_with_one_line(
    net: Net,
    files: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    down = "http://127.0.0.1:18009"
    out = tmp_path / "out"

    code, stdout, stderr = batch(
        capsys, monkeypatch, files, out, "--backend-url", down, "--backend-url", A, "--json"
    )

    assert code == 0, stderr
    last = stderr.strip().splitlines()[-1]  # after the client's visible retry of /props
    assert last.startswith(f"left out of this batch: {down}: LLM server at {down} did not answer")
    servers = json.loads(stdout)["servers"]
    assert [(s["server"], s["alive"], s["runs"]) for s in servers] == [
        (down, False, 0),
        (A, True, 3),
    ]


def test_without_any_server_the_embedded_one_is_started_for_the_batch(
    net: Net,
    files: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[tuple[str | None, str | None, str | None]] = []

    @asynccontextmanager
    async def embedded(
        chat: str | None, embed: str | None, *, model: str | None = None
    ) -> AsyncIterator[Endpoints]:
        started.append((chat, embed, model))
        yield Endpoints(chat_url=A, embed_url="http://127.0.0.1:18005", source="embedded")

    monkeypatch.setattr(batch_cli, "endpoints", embedded)

    code, stdout, stderr = batch(
        capsys, monkeypatch, files, tmp_path / "out", "--json", "--model", "smollm2-135m"
    )

    assert code == 0, stderr
    assert started == [(None, None, "smollm2-135m")]  # once for the whole batch
    assert [s["server"] for s in json.loads(stdout)["servers"]] == [A]
    assert net.built == [(A, 2)] * 3
