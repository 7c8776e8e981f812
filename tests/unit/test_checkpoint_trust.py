"""A checkpoint is data, not code: what it says cannot move a run's files, change its
topology beyond the run's own options, or break a resume half-way.

The rules (docs/RELIABILITY.md): the trace a resume writes is the one beside the checkpoint
file, whatever its `trace_path` says; the topology is rebuilt from its file under the usual
trust rules, and the checkpoint's snapshot only supplies the run's options (mode, tau, rounds,
seed, slots); a snapshot that differs in anything else from an unchanged file is refused in
one line (with --force the run goes on with the file as it is); a damaged field is refused
when the checkpoint is read."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import decision, final, goal, make_swarm, step

from dytopo import runner
from dytopo.batch.overrides import with_overrides
from dytopo.embedders import HashEmbedder
from dytopo.errors import BackendUnavailable, ConfigError, RunError, RunInUse
from dytopo.loader import load_topology
from dytopo.routing.config import RoutingConfig
from dytopo.runner import aresume
from dytopo.swarm import runlock
from dytopo.swarm.build import build_swarm
from dytopo.swarm.checkpoint import checkpoint_path, read_checkpoint, trace_beside
from dytopo.swarm.loop import Swarm
from dytopo.swarm.trace import read_trace
from dytopo.testing import ScriptedBackend

IDS = ["a", "b"]
GONE = BackendUnavailable("server gone after 6 attempts", url="scripted://")
TOPOLOGY = """\
name: t
routing: {mode: broadcast, tau: 0.5}
max_rounds: 3
min_rounds: 1
structured_reasks: 1
agents:
  - {id: a, card: researcher}
  - {id: b, card: analyst}
"""


def replies(rounds: range) -> dict[str, list[Any]]:
    return {i: [step(f"{i} pub {t}", f"{i}-{t}", "q", "k") for t in rounds] for i in IDS}


def stopping_after_round_1() -> ScriptedBackend:
    script = replies(range(1, 3))
    script["manager"] = [goal("goal 1"), decision(False, goal_next="goal 2"), GONE]
    return ScriptedBackend(by_tag=script)


def rest_of_run() -> ScriptedBackend:
    script = replies(range(2, 4))
    script["manager"] = [decision(False, goal_next="goal 3"), decision(False), final("ANSWER")]
    return ScriptedBackend(by_tag=script)


def swarm(backend: ScriptedBackend, **options: Any) -> Swarm:
    return make_swarm(backend, IDS, max_rounds=3, min_rounds=1, **options)


def edit(path: Path, change: Any) -> None:
    """Edit a checkpoint file as an attacker (or a careless hand) would: as JSON."""
    data = json.loads(path.read_bytes())
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def rounds_ended(trace: Path) -> list[int]:
    return [e["round"] for e in read_trace(trace) if e["event"] == "round_end"]


# --- the trace path ------------------------------------------------------------------------


async def test_a_resume_from_another_folder_goes_on_in_the_runs_own_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cd elsewhere && dytopo resume /abs/x.checkpoint.json`: the checkpoint of an older
    version says `runs/x.jsonl` (relative); the run must not fork into ./runs there."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(home)
    with pytest.raises(RunError):
        await swarm(stopping_after_round_1()).run("task", trace_path="runs/x.jsonl")
    cp_file = (home / "runs" / "x.checkpoint.json").resolve()
    edit(cp_file, lambda d: d.update(trace_path="runs/x.jsonl"))  # as older versions wrote it

    monkeypatch.chdir(elsewhere)
    assert read_checkpoint(cp_file).trace_path == str(home / "runs" / "x.jsonl")
    result = await swarm(rest_of_run()).resume(cp_file)
    assert len(result.rounds) == 3
    assert list(elsewhere.iterdir()) == []  # no second trace, no second checkpoint
    assert rounds_ended(home / "runs" / "x.jsonl") == [1, 2, 3]
    assert read_checkpoint(cp_file).status == "complete"


async def test_a_resume_from_another_folder_sees_the_live_writers_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(home)
    with pytest.raises(RunError):
        await swarm(stopping_after_round_1()).run("task", trace_path="runs/x.jsonl")
    trace = (home / "runs" / "x.jsonl").resolve()
    edit(checkpoint_path(trace), lambda d: d.update(trace_path="runs/x.jsonl"))

    monkeypatch.chdir(elsewhere)
    with trace.open("a", encoding="utf-8") as writer:
        runlock.hold(writer, trace)  # the original process, still writing the run
        with pytest.raises(RunInUse, match=str(trace)):
            await aresume(checkpoint_path(trace))
    assert list(elsewhere.iterdir()) == []


async def test_a_checkpoints_trace_path_cannot_make_a_resume_write_elsewhere(
    tmp_path: Path,
) -> None:
    trace = tmp_path / "runs" / "x.jsonl"
    victim = tmp_path / "elsewhere" / "notes.txt"
    victim.parent.mkdir()
    victim.write_text("mine\n", encoding="utf-8")
    with pytest.raises(RunError):
        await swarm(stopping_after_round_1()).run("task", trace_path=trace)
    edit(checkpoint_path(trace), lambda d: d.update(trace_path=str(victim)))

    await swarm(rest_of_run()).resume(checkpoint_path(trace))
    assert victim.read_text(encoding="utf-8") == "mine\n"
    assert sorted(p.name for p in victim.parent.iterdir()) == ["notes.txt"]
    assert rounds_ended(trace) == [1, 2, 3]


@pytest.mark.parametrize(
    ("recorded", "trace"),
    [
        (None, "/runs/x.jsonl"),
        ("runs/x.jsonl", "/runs/x.jsonl"),
        ("/old/place/x.log", "/runs/x.log"),  # its own suffix, in the checkpoint's folder
        ("/home/me/.bashrc", "/runs/x.jsonl"),  # not this checkpoint's trace: ignored
        ("..", "/runs/x.jsonl"),
        ("", "/runs/x.jsonl"),
    ],
)
def test_the_trace_is_the_one_beside_the_checkpoint(recorded: str | None, trace: str) -> None:
    assert trace_beside(Path("/runs/x.checkpoint.json"), recorded) == Path(trace)


def test_a_relative_checkpoint_path_gives_an_absolute_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert trace_beside(Path("runs/x.checkpoint.json")) == tmp_path / "runs" / "x.jsonl"


# --- the topology snapshot -----------------------------------------------------------------


@pytest.fixture
def from_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, list[tuple[dict[str, Any], Swarm]]]:
    """A topology file (with a tool module beside it that leaves a mark when imported), and
    `dytopo.resume` building its swarm on scripted backends; each build is recorded."""
    path = tmp_path / "t.yaml"
    path.write_text(TOPOLOGY, encoding="utf-8")
    mark = tmp_path / "imported"
    (tmp_path / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(mark)!r}).write_text('x')\n", encoding="utf-8"
    )
    built: list[tuple[dict[str, Any], Swarm]] = []

    @asynccontextmanager
    async def scripted(topology: Any, *args: Any) -> AsyncIterator[Swarm]:
        _, _, base_dir, trust, source, _ = args
        swarm = build_swarm(
            topology,
            rest_of_run(),
            HashEmbedder(),
            base_dir=base_dir,
            trust_topology=trust,
            source=source,
        )
        built.append((topology.model_dump(mode="json"), swarm))
        yield swarm

    monkeypatch.setattr(runner, "_built", scripted)
    return path, built


async def stopped_run(path: Path, trace: Path, **overrides: Any) -> None:
    topology = with_overrides(load_topology(path), None, overrides)
    swarm = build_swarm(topology, stopping_after_round_1(), HashEmbedder(), source=path)
    with pytest.raises(RunError):
        await swarm.run("task", trace_path=trace)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda t: t.update(tool_modules=["evil.py"]), "tool_modules"),
        (lambda t: t["tool_settings"].update(workspace="/"), "tool_settings.workspace"),
        (lambda t: t["backend"].update(base_url="http://10.9.9.9:8080"), "backend.base_url"),
        (lambda t: t.update(backends=["http://10.9.9.9:8080"]), "backends"),
        (lambda t: t["agents"][0].update(tools=["read_file"]), "agents[0].tools"),
    ],
)
async def test_a_snapshot_edited_beside_an_unchanged_file_is_refused_in_one_line(
    tmp_path: Path,
    from_file: tuple[Path, list[tuple[dict[str, Any], Swarm]]],
    change: Any,
    named: str,
) -> None:
    path, built = from_file
    trace = tmp_path / "run.jsonl"
    await stopped_run(path, trace)
    edit(checkpoint_path(trace), lambda d: change(d["topology"]))

    with pytest.raises(ConfigError) as info:
        await aresume(trace)
    message = str(info.value)
    assert "\n" not in message
    assert "has not changed since the run started" in message
    assert named in message
    assert "--force" in message
    assert built == []  # refused before any swarm was built or server asked
    assert not (tmp_path / "imported").exists()

    # --force: the run goes on with the file as it is, none of the snapshot's changes.
    result = await aresume(trace, force=True)
    assert len(result.rounds) == 3
    assert built[0][0] == load_topology(path).model_dump(mode="json")
    assert not (tmp_path / "imported").exists()
    resumed = next(e for e in read_trace(trace) if e["event"] == "run_resumed")
    assert resumed["forced"] is True


async def test_the_runs_own_options_come_back_from_the_snapshot(
    tmp_path: Path, from_file: tuple[Path, list[tuple[dict[str, Any], Swarm]]]
) -> None:
    """What `dytopo run --tau/--rounds/--seed` and a batch item's overrides set is the run's:
    a resume keeps it (the file does not say it)."""
    path, built = from_file
    trace = tmp_path / "run.jsonl"
    await stopped_run(path, trace, tau=0.3, rounds=3, seed=9)
    result = await aresume(trace)
    assert len(result.rounds) == 3
    topology = built[0][0]
    assert (topology["routing"]["tau"], topology["seed"]) == (0.3, 9)
    assert result.rounds[-1].routing.tau == 0.3


async def test_an_invalid_option_in_the_snapshot_is_one_line(
    tmp_path: Path, from_file: tuple[Path, list[tuple[dict[str, Any], Swarm]]]
) -> None:
    path, built = from_file
    trace = tmp_path / "run.jsonl"
    await stopped_run(path, trace)
    edit(checkpoint_path(trace), lambda d: d["topology"].update(max_rounds=10**9))
    with pytest.raises(ConfigError, match=r"^run \w+: the checkpoint's topology has an invalid"):
        await aresume(trace)
    assert built == []


# --- damaged state -------------------------------------------------------------------------


@pytest.mark.parametrize("rng", [[1], [3, "x", None], [3, [0] * 624 + [999], None], [3, [], "g"]])
async def test_a_damaged_rng_is_refused_when_the_checkpoint_is_read(
    tmp_path: Path, rng: list[Any]
) -> None:
    trace = tmp_path / "run.jsonl"
    routing = RoutingConfig(mode="random", tau=0.5)
    with pytest.raises(RunError):
        await swarm(stopping_after_round_1(), routing=routing).run("task", trace_path=trace)
    edit(checkpoint_path(trace), lambda d: d["state"].update(rng=rng))
    with pytest.raises(ConfigError) as info:
        read_checkpoint(checkpoint_path(trace))
    assert "\n" not in str(info.value)
    assert "state.rng: Value error, not a random-number state" in str(info.value)
    nothing = ScriptedBackend()
    with pytest.raises(ConfigError, match=r"state\.rng"):
        await swarm(nothing, routing=routing).resume(trace)
    assert nothing.requests == []
