"""`dytopo report` on traces nobody bounded: huge texts, absurd numbers of rounds and agents,
endless lines. The page and the memory stay bounded, every cut says how much and where the
whole text is, and model text stays inert however it is cut."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from report_dom import Page

from dytopo.backends.types import Usage
from dytopo.errors import ConfigError
from dytopo.report import load_run, render_html
from dytopo.report.limits import (
    FIELD_CHARS,
    MAX_AGENTS,
    MAX_EDGES,
    MAX_ROUNDS,
    PAGE_BYTES,
    TEXT_BUDGET,
)

MB = 1 << 20
PAGE_BOUND = PAGE_BYTES + 4 * MB
"""Rounds stop at PAGE_BYTES; the last round drawn, the head and the charts fit in the rest."""
CUT = re.compile(r" … \[([\d,]+) more characters cut here; the whole text is in the trace (\S+)\]")


def usage(n: int) -> dict[str, int]:
    return {"prompt_tokens": n, "completion_tokens": 1, "cached_tokens": 0, "requests": 1}


def step(r: int, agent: str, text: str = "", n: int = 10) -> dict[str, Any]:
    return {
        "event": "agent_output",
        "round": r,
        "agent": agent,
        "ok": True,
        "query": text or f"{agent} needs",
        "key": text or f"{agent} offers",
        "public": text or f"{agent} says",
        "private": text or f"{agent} tells",
        "usage": usage(n),
    }


def write(path: Path, events: Iterable[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for event in events:
            f.write(json.dumps({"run_id": "big", "ts": 1.0, **event}) + "\n")
    return path


def huge_run(text: str, rounds: int = 3) -> Iterator[dict[str, Any]]:
    """Every model-written field of a 3-round, 4-agent run holds `text`."""
    agents = ["a", "b", "c", "d"]
    yield {"event": "run_start", "name": "big", "task": text, "agents": agents}
    yield {"event": "manager_goal", "goal": text}
    for r in range(1, rounds + 1):
        yield {"event": "round_start", "round": r, "goal": text}
        for a in agents:
            yield step(r, a, text)
            yield {"event": "tool_call", "round": r, "agent": a, "tool": "t", "result": text}
        edges = [{"source": "a", "target": "b", "score": 0.9, "forced": False}]
        yield {"event": "routing", "round": r, "agents": agents, "edges": edges, "order": agents}
        decision = {"halt": False, "reason": text, "goal_next": text, "usage": usage(1)}
        yield {"event": "manager_decision", "round": r, **decision}
        yield {"event": "round_end", "round": r}
    yield {"event": "final_answer", "final_answer": text}
    yield {"event": "run_end", "halt_reason": "max_rounds", "final_answer": text}


def test_a_huge_trace_makes_a_bounded_page(tmp_path: Path) -> None:
    text = "<u>x</u> " * (2 * MB // 9)  # 2 MB in each of ~60 fields: ~120 MB of trace
    trace = write(tmp_path / "big.jsonl", huge_run(text))
    assert trace.stat().st_size > 100 * MB
    run = load_run(trace)
    html = render_html(run)
    assert len(html.encode()) < PAGE_BOUND
    # Every field the page shows is cut with a note of how much and where the rest is.
    assert run.final_answer.startswith(text[:FIELD_CHARS])
    cuts = CUT.findall(html)
    assert len(cuts) >= 3 * 4 * 4
    assert {where for _, where in cuts} == {"big.jsonl"}
    first = CUT.search(run.final_answer)
    assert first is not None
    kept = first.start()
    assert kept + int(first.group(1).replace(",", "")) == len(text)
    assert any("long text(s) are cut" in n for n in run.notices)
    # What the page keeps of all texts together is bounded too, not just each one.
    page = Page(html)
    assert len(page.text) < TEXT_BUDGET + 2 * MB
    assert "<u>" not in html  # model text stays text


def test_reading_a_huge_trace_keeps_memory_bounded(tmp_path: Path) -> None:
    trace = write(tmp_path / "big.jsonl", huge_run("y" * (3 * MB)))  # lines up to 12 MB
    assert trace.stat().st_size > 200 * MB
    code = (
        "import re, sys; from pathlib import Path; from dytopo.report import write_report; "
        "write_report(Path(sys.argv[1])); "
        # VmHWM: this process's own peak (getrusage's ru_maxrss keeps the parent's size at fork)
        "peak = re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text()); "
        "print(int(peak[1]) // 1024)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(trace)], capture_output=True, text=True, check=True
    )
    peak_mb = int(done.stdout.split()[-1])
    assert peak_mb < 250, peak_mb  # reading it whole took 0.9 GB
    page = trace.with_suffix(".html")
    assert page.stat().st_size < PAGE_BOUND
    html = page.read_text(encoding="utf-8")
    assert "left out unread" not in html  # every line was read, and cut
    assert len(CUT.findall(html)) >= 3 * 4 * 4


def test_rounds_past_the_limit_count_in_the_totals_only(tmp_path: Path) -> None:
    rounds = 1_000

    def events() -> Iterator[dict[str, Any]]:
        yield {"event": "run_start", "name": "long", "task": "t", "agents": ["a"]}
        for r in range(1, rounds + 1):
            yield {"event": "round_start", "round": r, "goal": "g"}
            yield step(r, "a", n=3)
            yield {"event": "manager_decision", "round": r, "halt": False, "usage": usage(2)}
            yield {"event": "round_end", "round": r}

    run = load_run(write(tmp_path / "long.jsonl", events()))
    assert [r.number for r in run.rounds] == list(range(1, MAX_ROUNDS + 1))
    assert run.more_rounds is not None
    assert (run.more_rounds.first, run.more_rounds.last) == (MAX_ROUNDS + 1, rounds)
    later = rounds - MAX_ROUNDS
    assert run.more_rounds.usage == Usage(
        prompt_tokens=5 * later, completion_tokens=2 * later, requests=2 * later
    )
    # Nothing left out is lost from the totals (the run did not end: they are added up).
    assert run.usage == Usage(
        prompt_tokens=5 * rounds, completion_tokens=2 * rounds, requests=2 * rounds
    )
    assert run.usage_by_agent["a"].prompt_tokens == 3 * rounds
    notes = " ".join(run.notices)
    assert f"rounds {MAX_ROUNDS + 1} to {rounds} are left out but for their tokens" in notes
    html = render_html(run)
    assert len(html.encode()) < PAGE_BOUND
    assert len(Page(html).of("graph")) == MAX_ROUNDS
    assert f"rounds {MAX_ROUNDS + 1} to {rounds}" in html  # their bar in the chart


def test_agents_past_the_limit_count_as_others(tmp_path: Path) -> None:
    many = [f"agent{k}" for k in range(MAX_AGENTS + 44)]
    similarity = [[0.5] * len(many) for _ in many]
    edges = [{"source": a, "target": b, "score": 0.6} for a in many[:100] for b in many[:60]]

    def events() -> Iterator[dict[str, Any]]:
        yield {"event": "run_start", "name": "wide", "task": "t", "agents": many}
        yield {"event": "round_start", "round": 1, "goal": "g"}
        for agent in many:
            yield step(1, agent)
        yield {
            "event": "routing",
            "round": 1,
            "agents": many,
            "similarity": similarity,
            "edges": edges,
            "order": many,
        }
        yield {"event": "round_end", "round": 1}

    run = load_run(write(tmp_path / "wide.jsonl", events()))
    assert run.agents == many[:MAX_AGENTS]
    rnd = run.rounds[0]
    assert [a.agent for a in rnd.agents] == many[:MAX_AGENTS]
    assert rnd.routing is not None
    assert len(rnd.routing.agents) == len(rnd.routing.similarity) == MAX_AGENTS
    assert {len(row) for row in rnd.routing.similarity} == {MAX_AGENTS}
    assert len(rnd.routing.edges) == MAX_EDGES
    assert rnd.routing.edge_count == len(edges)
    assert run.usage_by_agent["others"] == Usage(
        prompt_tokens=10 * 44, completion_tokens=44, requests=44
    )
    assert run.usage.prompt_tokens == 10 * len(many)
    notes = " ".join(run.notices)
    assert "the steps of 44 more are left out but for their tokens (as 'others')" in notes
    assert f"{len(edges) - MAX_EDGES} list item(s) past the report's limits" in notes
    html = render_html(run)
    assert len(html.encode()) < PAGE_BOUND
    assert f"{len(edges)} edge(s)" in html


def test_rounds_past_the_page_size_are_named_not_drawn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dytopo.report.html.PAGE_BYTES", MB)
    # Each round holds ~200 KB of text: the page passes 1 MB after round 5 or so.
    trace = write(tmp_path / "long.jsonl", huge_run("z" * (FIELD_CHARS - 1), rounds=30))
    html = render_html(load_run(trace))
    assert len(html.encode()) < 2 * MB
    page = Page(html)
    drawn = sorted(page.of("graph"))
    assert drawn == list(range(1, len(drawn) + 1))
    assert 3 < len(drawn) < 30
    notice = page.ids["undrawn-notice"]
    assert f"{30 - len(drawn)} more round(s) (rounds {len(drawn) + 1} to 30)" in notice
    assert "the page stops after 1 MB" in notice
    assert "dytopo report --format dot --round N" in notice


def test_a_line_over_the_limit_is_left_out_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dytopo.report.read.MAX_LINE_BYTES", MB)
    events = list(huge_run("short", rounds=2))
    events.insert(4, step(1, "a", "w" * (3 * MB)))  # a's step, as one 12 MB line
    run = load_run(write(tmp_path / "t.jsonl", events))
    assert [r.number for r in run.rounds] == [1, 2]
    assert "1 line(s) longer than 1 MB were left out unread; the trace holds them." in run.notices
    assert run.rounds[0].agent("a") is not None
    only = tmp_path / "only.jsonl"
    only.write_text(json.dumps({"event": "run_start", "task": "v" * (2 * MB)}) + "\n")
    with pytest.raises(ConfigError, match="lines over 1 MB, so not a trace"):
        load_run(only)


@pytest.mark.parametrize("at", [0, 3, FIELD_CHARS - 4, FIELD_CHARS - 1])
def test_model_text_stays_inert_wherever_it_is_cut(tmp_path: Path, at: int) -> None:
    script = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    text = ("q" * at + script) * (3 * FIELD_CHARS // (at + len(script)) + 1)
    run = load_run(write(tmp_path / "h.jsonl", huge_run(text, rounds=1)))
    html = render_html(run)
    page = Page(html)
    assert page.reaches_out() == []
    assert [t for t, _ in page.tags].count("script") == 0
    assert "<script" not in html
    assert "<img" not in html
    assert "<scr" not in html  # nor a fragment of one, cut at the limit
    assert CUT.search(page.text)


def test_names_are_cut_the_same_way_everywhere(tmp_path: Path) -> None:
    long = "n" * 5_000
    events = [
        {"event": "run_start", "name": "x", "task": "t", "agents": [long, "b"]},
        {"event": "round_start", "round": 1, "goal": "g"},
        step(1, long),
        step(1, "b"),
        {
            "event": "routing",
            "round": 1,
            "agents": [long, "b"],
            "edges": [{"source": long, "target": "b", "score": 0.9}],
            "order": [long, "b"],
        },
        {"event": "delivery", "round": 1, "from": long, "to": "b", "score": 0.9},
        {"event": "round_end", "round": 1},
    ]
    run = load_run(write(tmp_path / "n.jsonl", events))
    cut = run.agents[0]
    assert len(cut) == 200
    assert cut.startswith("n" * 199)
    rnd = run.rounds[0]
    assert [a.agent for a in rnd.agents] == [cut, "b"]
    assert rnd.routing is not None
    assert rnd.routing.edges[0].source == cut
    assert rnd.deliveries[0].source == cut
    assert cut in Page(render_html(run)).of("graph")[1].nodes
