"""The report in a real browser: Debian's headless Chromium opens the generated file, its DOM
holds every round's graph and heatmap and nothing that loads or runs code, and a screenshot is
saved.

`make browser` installs chromium; without it these tests fail (a skip would hide that the
report was never looked at in a browser). DYTOPO_SAVE_SCREENSHOT=1 also copies the screenshot
to benchmarks/report_screenshot.png.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from report_dom import Page
from report_runs import IDS, crashed_copy, scripted_run

from dytopo.report import load_run, write_report

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "benchmarks" / "report_screenshot.png"
TIMEOUT_S = 20
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium(page: Path, profile: Path, *args: str) -> str:
    """Run headless Chromium on `page`; its stdout. Fails (not skips) without chromium."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: run `make browser` (Debian's chromium package)")
    command = [exe, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()]
    # Its own session: on a timeout the whole process group (renderer, zygote) is killed.
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"chromium did not finish within {TIMEOUT_S} s: {' '.join(command)}")
    assert proc.returncode == 0, err[-2000:]
    return out


async def test_every_round_has_its_graph_and_heatmap_in_chromium(tmp_path: Path) -> None:
    trace = await scripted_run(tmp_path / "run.jsonl", rounds=3)
    report, run = write_report(trace), load_run(trace)

    dom = Page(chromium(report, tmp_path / "profile", "--dump-dom"))
    graphs, heatmaps = dom.of("graph"), dom.of("heatmap")
    assert sorted(graphs) == sorted(heatmaps) == [r.number for r in run.rounds] == [1, 2, 3]
    for r in run.rounds:
        assert r.routing is not None
        graph, heat = graphs[r.number], heatmaps[r.number]
        assert sorted(graph.nodes) == sorted(IDS)
        assert len(graph.edges) == len(r.routing.edges) > 0
        assert sum(forced for *_, forced in graph.edges) == sum(e.forced for e in r.routing.edges)
        assert heat.cells == len(IDS) ** 2
        assert heat.edge_cells == sum(not e.forced for e in r.routing.edges)
    # No script, no link, no external source: it reads the same with JS off and offline.
    # (Headless Chromium cannot dump or shoot a page with scripts disabled, so this is the check.)
    assert dom.reaches_out() == []

    shot = tmp_path / "report.png"
    chromium(report, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2400")
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 50_000  # a drawn page, not a blank one
    if os.environ.get("DYTOPO_SAVE_SCREENSHOT"):
        shutil.copyfile(shot, SCREENSHOT)


async def test_a_crashed_runs_report_says_partial_in_chromium(tmp_path: Path) -> None:
    trace = await scripted_run(tmp_path / "run.jsonl", rounds=3)
    cut = crashed_copy(trace, tmp_path / "crashed.jsonl", round=2)
    report = write_report(cut)

    dom = Page(chromium(report, tmp_path / "profile", "--dump-dom"))
    notice = dom.ids["partial-notice"]
    assert "Partial trace: it stops after round 2 without a run_end" in notice
    assert "cut short" in notice
    assert sorted(dom.of("graph")) == sorted(dom.of("heatmap")) == [1, 2]
