"""`dytopo report`: traces of real scripted runs become a self-contained page, dot and Mermaid;
crashed, resumed, old and hostile traces render; a file that is not a trace is one error."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from report_dom import Page
from report_runs import (
    HOSTILE,
    IDS,
    crashed_and_resumed,
    crashed_copy,
    scripted_run,
    wide_run,
)
from typer.testing import CliRunner

from dytopo.backends.types import Usage
from dytopo.cli import app
from dytopo.errors import ConfigError
from dytopo.report import load_run, render_dot, render_html, render_mermaid, write_report
from dytopo.report.graph import MAX_EDGES
from dytopo.swarm.trace import Trace, read_trace

cli = CliRunner()


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-round run: a tool call per round, one re-ask, forced edges in round 3."""
    trace = tmp_path_factory.mktemp("report") / "run.jsonl"
    return asyncio.run(scripted_run(trace, rounds=3))


def of(events: list[dict[str, Any]], kind: str, round: int | None = None) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == kind and (round is None or e.get("round") == round)]


def rewrite(trace: Path, out: Path, change: Any) -> Path:
    """The trace with `change(event)` applied to every event (it returns the new event)."""
    lines = [json.dumps(change(json.loads(line))) for line in trace.read_text().splitlines()]
    out.write_text("\n".join(lines) + "\n")
    return out


def renamed(value: Any, old: str, new: str) -> Any:
    if value == old:
        return new
    if isinstance(value, list):
        return [renamed(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: renamed(v, old, new) for k, v in value.items()}
    return value


# -- the view -------------------------------------------------------------------------------


def test_the_view_holds_what_the_trace_recorded(traced: Path) -> None:
    run, events = load_run(traced), read_trace(traced)
    end = of(events, "run_end")[-1]
    assert (run.ended, run.partial, run.notices) == (True, False, [])
    assert (run.halt_reason, run.final_answer) == (end["halt_reason"], end["final_answer"])
    assert run.final_answer.startswith("FINAL ANSWER")
    assert (run.name, run.mode, run.tau, run.agents) == ("report-test", "dynamic", 0.3, IDS)
    assert [r.number for r in run.rounds] == [1, 2, 3]
    for r in run.rounds:
        routing = of(events, "routing", r.number)[0]
        assert r.routing is not None
        edges = [(e.source, e.target, e.score, e.forced) for e in r.routing.edges]
        assert edges == [
            (e["source"], e["target"], e["score"], e["forced"]) for e in routing["edges"]
        ]
        assert (r.routing.similarity, r.routing.order) == (routing["similarity"], routing["order"])
        assert r.routing.tau == routing["tau"]
        assert [a.agent for a in r.agents] == IDS
        for output in of(events, "agent_output", r.number):
            agent = r.agent(output["agent"])
            assert agent is not None
            assert agent.finished
            assert agent.ok
            fields = ("query", "key", "public", "private")
            assert [getattr(agent, f) for f in fields] == [output[f] for f in fields]
            assert agent.usage == Usage(**output["usage"])
        researcher = r.agent("researcher")
        assert researcher is not None
        assert [(c.tool, c.ok) for c in researcher.tool_calls] == [("lookup", True)]
        delivered = [(d.source, d.target) for d in r.deliveries]
        assert delivered == [(d["from"], d["to"]) for d in of(events, "delivery", r.number)]
        decision = of(events, "manager_decision", r.number)[0]
        assert r.decision is not None
        assert (r.decision.halt, r.decision.accepted) == (decision["halt"], decision["accepted"])
        round_end = of(events, "round_end", r.number)[0]
        assert (r.usage, r.wall_s, r.complete) == (
            Usage(**round_end["usage"]),
            round_end["wall_s"],
            True,
        )
    assert any(e.forced for e in run.rounds[2].routing.edges)  # type: ignore[union-attr]
    for r in run.rounds:
        critic = r.agent("critic")
        assert critic is not None
        output = next(e for e in of(events, "agent_output", r.number) if e["agent"] == "critic")
        assert (critic.dropped, critic.packing) == (output["dropped"], output["packing"])
    assert run.rounds[1].agent("critic").dropped  # type: ignore[union-attr]
    analyst = run.rounds[0].agent("analyst")
    assert analyst is not None
    assert analyst.reasks == 1
    assert (run.reasks, run.tool_calls) == (1, 3)
    assert run.usage == Usage(**end["usage"])
    assert run.usage_by_agent == {k: Usage(**v) for k, v in end["usage_by_agent"].items()}


# -- the page -------------------------------------------------------------------------------


def test_every_round_has_its_graph_and_heatmap(traced: Path) -> None:
    run = load_run(traced)
    page = Page(render_html(run))
    graphs, heatmaps = page.of("graph"), page.of("heatmap")
    assert sorted(graphs) == sorted(heatmaps) == [1, 2, 3]
    for r in run.rounds:
        assert r.routing is not None
        graph, heat = graphs[r.number], heatmaps[r.number]
        assert sorted(graph.nodes) == sorted(IDS)
        assert sorted(graph.edges) == sorted(
            (e.source, e.target, e.forced) for e in r.routing.edges
        )
        # sigma: each node carries its place in the delivery order.
        assert graph.ranks == {a: str(k) for k, a in enumerate(r.routing.order, start=1)}
        assert (heat.cells, heat.cell_texts) == (16, 16)
        tau = r.routing.tau
        assert tau is not None
        above = sum(
            1
            for i, row in enumerate(r.routing.similarity)
            for j, score in enumerate(row)
            if i != j and score is not None and score > tau
        )
        assert heat.edge_cells == above == sum(not e.forced for e in r.routing.edges)
    assert any(forced for g in graphs.values() for *_, forced in g.edges)
    critic = run.rounds[1].agent("critic")
    assert critic is not None
    assert f"Packing dropped {len(critic.dropped)} item(s)" in page.text


def test_agents_keep_their_place_in_every_round(traced: Path) -> None:
    graphs = Page(render_html(load_run(traced))).of("graph")
    places = [g.nodes for g in graphs.values()]
    assert all(p == places[0] for p in places)
    assert len(set(places[0].values())) == len(IDS)


def test_the_page_is_self_contained(traced: Path) -> None:
    html = render_html(load_run(traced))
    page = Page(html)
    assert page.reaches_out() == []
    assert not re.search(r"url\((?!#)|@import|https?://", html)
    assert "<style>" in html  # styles inline


async def test_hostile_model_text_comes_out_inert(tmp_path: Path) -> None:
    trace = await scripted_run(tmp_path / "run.jsonl", rounds=2, hostile=HOSTILE)
    html = render_html(load_run(trace))
    page = Page(html)
    assert page.reaches_out() == []
    assert [t for t, _ in page.tags].count("style") == 1  # the page's own
    for raw in ("<script", "<svg onload", "<img", "<style>body"):
        assert raw not in html
    # It is shown, as text: task, goal, messages, reason and final answer.
    assert html.count("&lt;/script&gt;&lt;script&gt;alert(") >= 6


def test_hostile_agent_names_stay_in_their_attributes(traced: Path, tmp_path: Path) -> None:
    name = '"><svg onload=alert(1)>'
    trace = rewrite(traced, tmp_path / "names.jsonl", lambda e: renamed(e, "writer", name))
    html = render_html(load_run(trace))
    page = Page(html)
    assert page.reaches_out() == []
    assert name in page.of("graph")[1].nodes
    assert "<svg onload" not in html


def test_a_crashed_run_renders_and_says_it_is_partial(traced: Path, tmp_path: Path) -> None:
    cut = crashed_copy(traced, tmp_path / "crashed.jsonl", round=2)
    assert not cut.read_text().endswith("\n")  # a torn last line
    run = load_run(cut)
    assert run.partial
    assert not run.ended
    assert run.notices[0].startswith("Partial trace: it stops after round 2 without a run_end")
    assert "crashed or was killed" in run.notices[0]
    assert any("cut short" in n for n in run.notices)
    assert [(r.number, r.complete) for r in run.rounds] == [(1, True), (2, False)]
    second = run.rounds[1]
    assert second.routing is not None
    assert second.decision is None
    # Totals are what the trace holds: every agent step and the manager so far.
    events = read_trace(cut)
    charged = ("agent_output", "manager_goal", "manager_decision")
    used = [Usage(**e["usage"]) for e in events if e["event"] in charged]
    assert run.usage == sum(used, Usage())
    page = Page(render_html(run))
    assert "Partial trace" in page.ids["partial-notice"]
    assert sorted(page.of("graph")) == sorted(page.of("heatmap")) == [1, 2]


def test_a_torn_line_after_run_end_is_partial_too(traced: Path, tmp_path: Path) -> None:
    torn = tmp_path / "torn.jsonl"
    torn.write_text(traced.read_text() + '{"event": "run_resumed", "run_id": "x", "fro')
    run = load_run(torn)
    assert run.ended
    assert run.partial
    assert run.notices == ["The last line of the trace is cut short; it was left out."]
    assert 'class="badge partial"' in render_html(run)


def test_a_run_still_being_written_says_so(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    with Trace("live", path) as trace:
        trace.emit("run_start", name="x", agents=["a", "b"])
        trace.emit("round_start", round=1, goal="g")
        run = load_run(path)
    assert run.partial
    assert "a process is still writing it" in run.notices[0]


async def test_a_resumed_run_shows_the_later_copy_of_a_repeated_round(tmp_path: Path) -> None:
    trace = await crashed_and_resumed(tmp_path / "run.jsonl")
    events = read_trace(trace)
    firsts = [e for e in of(events, "agent_output", 2) if "again" not in e["public"]]
    assert len(firsts) == len(IDS)  # the stopped attempt's copy of round 2 is in the file
    run = load_run(trace)
    assert (run.ended, run.notices, run.error) == (True, [], "")
    assert [(r.number, r.repeated) for r in run.rounds] == [(1, False), (2, True), (3, False)]
    assert all("again" in a.public for a in run.rounds[1].agents)
    # Nothing of the stopped copy is added to the later one.
    researcher = run.rounds[1].agent("researcher")
    assert researcher is not None
    assert len(researcher.tool_calls) == 1
    resumed_at = next(k for k, e in enumerate(events) if e["event"] == "run_resumed")
    later = of(events[resumed_at:], "delivery", 2)
    assert len(run.rounds[1].deliveries) == len(later) > 0
    assert [r.from_round for r in run.resumes] == [2]
    assert "run again after resume" in render_html(run)


def test_old_and_unexpected_fields_and_events_do_not_stop_the_report(
    traced: Path, tmp_path: Path
) -> None:
    newer = {"packing", "queued_s", "acyclic", "hub", "phase", "wall_s", "attempts"}

    def older(event: dict[str, Any]) -> dict[str, Any]:
        if event["event"] == "ladder":  # an older writer: ladder without usage, ...
            event.pop("usage", None)
        if event["event"] in ("agent_output", "routing", "delivery", "tool_call"):
            event = {k: v for k, v in event.items() if k not in newer}
        if event["event"] == "run_end":
            event.pop("usage_by_agent")
        return {**event, "field_from_the_future": [1, {"x": None}]}

    trace = rewrite(traced, tmp_path / "old.jsonl", older)
    with trace.open("a") as f:
        f.write(json.dumps({"event": "event_from_the_future", "round": 2, "x": 1}) + "\n")
        f.write(
            json.dumps({"event": "agent_output", "round": 2, "agent": "critic", "usage": "lots"})
            + "\n"
        )
        f.write(json.dumps({"event": "routing", "round": "two"}) + "\n")
    run = load_run(trace)
    assert [r.number for r in run.rounds] == [1, 2, 3]
    assert any("2 event(s) with unexpected fields were left out" in n for n in run.notices)
    # Without usage_by_agent in run_end, the steps' and the manager's usage add up to it.
    assert run.usage_by_agent == load_run(traced).usage_by_agent
    page = Page(render_html(run))
    assert sorted(page.of("graph")) == [1, 2, 3]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "the file is empty"),
        (b"\n\n  \n", "the file is empty"),
        (b"PK\x03\x04\x00\x00binary", "a binary file"),
        (b"caf\xe9 au lait\n", "not UTF-8 text"),
        (b"hello\nworld\n", "not JSON Lines"),
        (b'{"a": 1}\n[1, 2]\n"x"\n', "JSON lines, but no DyTopo run event"),
        (b'{"event": "something_else"}\n', "JSON lines, but no DyTopo run event"),
    ],
)
def test_a_file_that_is_not_a_trace_is_one_config_error(
    tmp_path: Path, content: bytes, says: str
) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_run(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {says}")
    assert "\n" not in message
    assert "dytopo run" in message


def test_a_missing_file_or_a_folder_is_one_config_error(tmp_path: Path) -> None:
    for path, says in ((tmp_path / "nope.jsonl", "no such file"), (tmp_path, "a directory")):
        with pytest.raises(ConfigError, match=re.escape(f"{path}: {says}")):
            load_run(path)


# -- dot and Mermaid ------------------------------------------------------------------------

QUOTED = r'"(?:[^"\\\n]|\\.)*"'
"""A dot quoted string on one line; the escapes render_dot writes (\\" \\\\ \\n) are JSON's."""


def test_dot_quotes_and_escapes_every_name(traced: Path, tmp_path: Path) -> None:
    name = 'wri"ter\\ {x}\n-> "y"; z'
    trace = rewrite(traced, tmp_path / "names.jsonl", lambda e: renamed(e, "writer", name))
    run = load_run(trace)
    for r in run.rounds:
        dot = render_dot(run, r.number)
        lines = dot.splitlines()
        assert lines[0] == f'digraph "round {r.number}" {{'
        assert lines[-1] == "}"
        node = re.compile(rf"^  ({QUOTED}) \[label={QUOTED}\];$")
        edge = re.compile(rf"^  ({QUOTED}) -> ({QUOTED}) \[label=\"-?\d\.\d\d\", [^\]]*\];$")
        nodes = [node.match(x) for x in lines if node.match(x)]
        edges = [edge.match(x) for x in lines if edge.match(x)]
        assert len(lines) == 3 + len(nodes) + len(edges) + 1  # header, label, node style, }
        assert sorted(json.loads(m.group(1)) for m in nodes) == sorted([*IDS[:3], name])
        assert r.routing is not None
        assert [(json.loads(m.group(1)), json.loads(m.group(2))) for m in edges] == [
            (e.source, e.target) for e in r.routing.edges
        ]
        assert ("style=dashed" in dot) == any(e.forced for e in r.routing.edges)


def test_mermaid_uses_safe_ids_and_escaped_labels(traced: Path, tmp_path: Path) -> None:
    name = 'wri"ter]-->x(("<b>#1</b>|'
    trace = rewrite(traced, tmp_path / "names.jsonl", lambda e: renamed(e, "writer", name))
    run = load_run(trace)
    for r in run.rounds:
        text = render_mermaid(run, r.number)
        lines = text.splitlines()
        assert lines[:2] == ["flowchart LR", f"  %% round {r.number}"]
        node = re.compile(r'^  (n\d+)\["([^"\[\]<>|#]|#\d+;)*"\]$')
        edge = re.compile(r"^  n\d+ (-->|-\.->)\|-?\d\.\d\d( forced)?\| n\d+$")
        body = lines[2:]
        assert all(node.match(x) or edge.match(x) for x in body), body
        assert sum(bool(node.match(x)) for x in body) == 4
        assert r.routing is not None
        assert sum(bool(edge.match(x)) for x in body) == len(r.routing.edges)
    assert "wri#34;ter#93;--#62;x#40;#40;#34;#60;b#62;#35;1#60;/b#62;#124;" in text


def test_an_unknown_round_is_a_config_error(traced: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"round 9: the trace has no such round \(rounds: 1, 2, 3\)"
    ):
        render_dot(load_run(traced), 9)


# -- size -----------------------------------------------------------------------------------


async def test_a_256_agent_round_stays_small(tmp_path: Path) -> None:
    trace = await wide_run(tmp_path / "wide.jsonl", agents=256)
    started = time.monotonic()
    out = write_report(trace)
    took = time.monotonic() - started
    size = out.stat().st_size
    page = Page(out.read_text())
    heat, graph = page.of("heatmap")[1], page.of("graph")[1]
    # The matrix is one inline image, not 65,536 shapes with labels; the graph keeps the
    # strongest edges and says how many it left out.
    assert (heat.images, heat.cells, heat.cell_texts) == (1, 0, 0)
    assert len(graph.nodes) == 256
    assert len(graph.edges) == MAX_EDGES
    assert f"the {MAX_EDGES} strongest drawn" in out.read_text()
    assert size < 3_000_000, size
    assert took < 5, took


# -- the command ----------------------------------------------------------------------------


def test_report_command_writes_the_page_beside_the_trace(traced: Path, tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    trace.write_bytes(traced.read_bytes())
    result = cli.invoke(app, ["report", str(trace)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(tmp_path / "run.html")
    assert (tmp_path / "run.html").read_text().startswith("<!doctype html>")
    other = tmp_path / "out" / "page.html"
    result = cli.invoke(app, ["report", str(trace), "-o", str(other)])
    assert (result.exit_code, result.output.strip()) == (0, str(other))
    assert len(Page(other.read_text()).of("graph")) == 3


def test_report_command_prints_dot_and_mermaid(traced: Path, tmp_path: Path) -> None:
    every = cli.invoke(app, ["report", str(traced), "--format", "dot"])
    assert every.exit_code == 0
    assert every.output.count("digraph ") == 3
    one = cli.invoke(app, ["report", str(traced), "--format", "dot", "--round", "2"])
    assert one.output == render_dot(load_run(traced), 2)
    out = tmp_path / "graph.mmd"
    written = cli.invoke(app, ["report", str(traced), "-f", "mermaid", "-r", "3", "-o", str(out)])
    assert (written.exit_code, written.output.strip()) == (0, str(out))
    assert out.read_text() == render_mermaid(load_run(traced), 3)


def test_report_command_errors_are_one_line_and_exit_2(traced: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.jsonl"
    junk.write_text("not a trace\n")
    cases = [
        (["report", str(tmp_path / "nope.jsonl")], "no such file"),
        (["report", str(junk)], "not JSON Lines"),
        (["report", str(traced), "--round", "9"], "--round 9: "),
        (["report", str(traced), "-f", "dot", "-r", "0"], "has rounds 1, 2, 3"),
        (["report", str(traced), "--format", "pdf"], "--format 'pdf': use one of"),
    ]
    for args, says in cases:
        result = cli.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("error: ")
        assert says in lines[0]
