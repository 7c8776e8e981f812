"""`dytopo batch` over two real llama-servers (the session's and a second one): both serve runs,
neither ever has more requests in flight than slots (read from its /slots every 50 ms, and
counted on the client side), every task has a record; the same with --ray on a local Ray
instance; and a server killed mid-batch, whose runs finish on the other one.

Kept cheap for CI on 2 cores: 6 tasks, a two-agent topology with short role cards, one round,
short replies."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from dytopo.backends.llamacpp import LlamaCppBackend
from dytopo.batch import read_records
from dytopo.cli import main
from dytopo.managed import ManagedStack
from dytopo.managed.server import LlamaServerProcess, chat_server

TOPOLOGY = """\
name: pair
routing: {mode: dynamic, tau: 0.3}
embedder: {kind: hash}
backend: {max_attempts: 2}
max_rounds: 1
min_rounds: 1
structured_reasks: 0
manager: {card: m, budget: {max_output_tokens: 64}}
agents:
  - {id: researcher, card: r, text_work: true, budget: {max_output_tokens: 96}}
  - {id: writer, card: w, text_work: true, budget: {max_output_tokens: 96}}
"""
# Text work: the work as plain text, then three short JSON fields. With all four fields in one
# JSON object SmolLM2 ran past 96 tokens in both agents, and a round in which every step fails
# ends the run (RoundFailed): the batch would measure failures, not its spreading.
CARDS = {  # short role cards: short prompts (the shipped cards are ~300 tokens each)
    "r": "You are the Researcher. Reply with one JSON object: public, private, query, key.",
    "w": "You are the Writer. Reply with one JSON object: public, private, query, key.",
    "m": "You are the Manager of a small team. Keep every goal and answer to one sentence.",
}
TASKS = [
    f"In one sentence: name one benefit of cache eviction policy number {k}." for k in range(6)
]
IDS = {f"line-{k}" for k in range(1, 7)}
SLOTS = 2
ROOT = Path(__file__).resolve().parents[2]


class SlotWatch(threading.Thread):
    """Reads each server's /slots every 50 ms: the most slots processing at once, per server;
    `on_poll` is called after each round of reads."""

    def __init__(self, urls: list[str], on_poll: Any = None) -> None:
        super().__init__(daemon=True)
        self.urls, self.on_poll = urls, on_poll
        self.peak = dict.fromkeys(urls, 0)
        self.busy = dict.fromkeys(urls, 0)
        self.polls = 0
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=1.0) as client:
            while not self.done.is_set():
                for url in self.urls:
                    try:
                        slots = client.get(f"{url}/slots").json()
                    except (httpx.HTTPError, ValueError):
                        continue  # a server being killed
                    busy = sum(1 for s in slots if s.get("is_processing"))
                    self.busy[url] = busy
                    self.peak[url] = max(self.peak[url], busy)
                self.polls += 1
                if self.on_poll is not None:
                    self.on_poll()
                time.sleep(0.05)

    def __enter__(self) -> SlotWatch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join(timeout=5)


@pytest.fixture(scope="module")
def second(stack: ManagedStack) -> Iterator[LlamaServerProcess]:
    """A second chat server beside the session's (same model, slots and context; one thread:
    servers that each take a thread per core make each other crawl on 2 cores)."""
    server = chat_server(model=stack.model.name, slots=SLOTS, ctx_per_slot=2048, threads=1)
    try:
        asyncio.run(server.start())
        yield server
    finally:
        server.stop()


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    topology = tmp_path / "pair.yaml"
    topology.write_text(TOPOLOGY, encoding="utf-8")
    for name, text in CARDS.items():
        card = f"---\nname: {name}\ndescription: {name}\n---\n{text}\n"
        (tmp_path / f"{name}.md").write_text(card, encoding="utf-8")
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(t) + "\n" for t in TASKS), encoding="utf-8")
    return tasks, topology


def batch(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    files: tuple[Path, Path],
    out: Path,
    urls: list[str],
    *extra: str,
) -> tuple[int, dict[str, Any], str]:
    tasks, topology = files
    args = ["dytopo", "batch", str(tasks), "--topology", str(topology), "--out", str(out)]
    for url in urls:
        args += ["--backend-url", url]
    monkeypatch.setattr("sys.argv", [*args, "--json", *extra])
    code: Any = 0
    try:
        main()
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    summary = json.loads(captured.out) if captured.out.strip() else {}
    return (code if isinstance(code, int) else 0), summary, captured.err


def client_side_peaks(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """The most requests this process had open at once, per server (local executor only)."""
    real = LlamaCppBackend._open
    open_now: Counter[str] = Counter()
    peaks: Counter[str] = Counter()

    @asynccontextmanager
    async def counting(
        self: LlamaCppBackend, path: str, body: dict[str, Any]
    ) -> AsyncIterator[Any]:
        open_now[self.base_url] += 1
        peaks[self.base_url] = max(peaks[self.base_url], open_now[self.base_url])
        try:
            async with real(self, path, body) as response:
                yield response
        finally:
            open_now[self.base_url] -= 1

    monkeypatch.setattr(LlamaCppBackend, "_open", counting)
    return peaks


def check_spread(out: Path, summary: dict[str, Any], urls: list[str], watch: SlotWatch) -> None:
    records = read_records(out / "records.jsonl")
    assert {r.item for r in records} == IDS
    assert all(r.ok and r.rounds == 1 and r.usage.requests >= 3 for r in records), [
        r.error for r in records
    ]
    served = Counter(r.server for r in records)
    assert set(served) == set(urls)  # both servers served runs
    assert watch.polls > 20
    for url in urls:
        assert 0 < watch.peak[url] <= SLOTS  # busy at some point, never beyond its slots
    for server in summary["servers"]:
        assert server["slots"] == server["per_run"] == SLOTS
        assert server["max_runs_at_once"] == 1
        assert server["max_in_flight"] <= SLOTS
    assert summary["ran"] == 6


def test_a_batch_spreads_over_two_servers_within_their_slots(
    stack: ManagedStack,
    second: LlamaServerProcess,
    files: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    urls = [stack.chat_url, second.url]
    peaks = client_side_peaks(monkeypatch)
    started = time.monotonic()
    with SlotWatch(urls) as watch:
        code, summary, err = batch(capsys, monkeypatch, files, tmp_path, urls)

    assert code == 0, err
    check_spread(tmp_path, summary, urls, watch)
    assert all(0 < peaks[url] <= SLOTS for url in urls), peaks
    print(f"\nbatch local, 6 tasks over 2 servers: {time.monotonic() - started:.1f} s, "
          f"server peaks {watch.peak}, client peaks {dict(peaks)}")  # fmt: skip


def test_the_same_batch_on_ray_gives_the_same_records_within_the_same_limits(
    stack: ManagedStack, second: LlamaServerProcess, files: tuple[Path, Path], tmp_path: Path
) -> None:
    # As a user runs it: its own process starts (and stops) the local Ray instance.
    tasks, topology = files
    urls = [stack.chat_url, second.url]
    command = [sys.executable, "-m", "dytopo", "batch", str(tasks), "--topology", str(topology),
               "--out", str(tmp_path), "--json", "--ray"]  # fmt: skip
    for url in urls:
        command += ["--backend-url", url]
    started = time.monotonic()
    with SlotWatch(urls) as watch:
        done = subprocess.run(command, capture_output=True, text=True, timeout=850, cwd=ROOT)

    assert done.returncode == 0, done.stderr[-3000:]
    check_spread(tmp_path, json.loads(done.stdout), urls, watch)
    assert all(Path(r.trace or "").is_file() for r in read_records(tmp_path / "records.jsonl"))
    raylets = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "raylet"]
    assert raylets == []  # the local Ray instance ended with the batch
    print(f"\nbatch --ray, 6 tasks over 2 servers (Ray start included): "
          f"{time.monotonic() - started:.1f} s, server peaks {watch.peak}")  # fmt: skip


@pytest.mark.timeout(900)
def test_a_server_killed_mid_batch_leaves_every_task_done_on_the_other(
    stack: ManagedStack,
    files: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    victim = chat_server(model=stack.model.name, slots=SLOTS, ctx_per_slot=2048, threads=1)
    asyncio.run(victim.start())
    capsys.readouterr()  # the server's start-up log lines: not the batch's --json output
    killed: list[float] = []

    def kill_mid_run() -> None:
        """Once a record landed, kill the victim while it is generating for a run."""
        records = tmp_path / "records.jsonl"
        if killed or not records.exists() or records.stat().st_size == 0:
            return
        if watch.busy[victim.url] > 0:
            assert victim.process is not None
            victim.process.kill()
            killed.append(time.monotonic())

    urls = [victim.url, stack.chat_url]
    watch = SlotWatch(urls, on_poll=kill_mid_run)
    started = time.monotonic()
    try:
        with watch:
            code, summary, err = batch(capsys, monkeypatch, files, tmp_path, urls)
    finally:
        victim.stop()

    assert killed, "the victim never generated after the first record landed"
    assert code == 0, err
    records = read_records(tmp_path / "records.jsonl")
    assert {r.item for r in records} == IDS  # every task done
    assert all(r.ok for r in records), [r.error for r in records]
    dead, alive = summary["servers"]
    assert (dead["server"], dead["alive"]) == (victim.url, False)
    assert alive["alive"] is True
    moved = dead["moved_off"]
    assert moved >= 1  # killed mid-run: that run continued on the other server
    print(f"\nbatch with a server killed after the first record: {time.monotonic() - started:.1f}"
          f" s, {moved} run(s) moved off it, records per server "
          f"{dict(Counter(r.server for r in records))}")  # fmt: skip
