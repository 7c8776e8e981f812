import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dytopo.cli import app, main

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_validate_ok_for_shipped_topologies() -> None:
    files = sorted(str(p) for p in (ROOT / "topologies").glob("*.yaml"))
    assert {Path(f).name for f in files} >= {"research.yaml", "code.yaml", "math.yaml"}
    result = runner.invoke(app, ["validate", *files])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"{f}: OK" for f in files]


def test_validate_reports_file_line_field_and_fix(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\n"
        "agents:\n"
        "  - id: a\n"
        "    tools: [no_such_tool]\n"
        "  - id: b\n"
        "    budgt: 3\n"
        "routing:\n"
        "  mode: ring\n"
    )
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert f"{bad}:8: routing.mode:" in lines[0] or any(
        f"{bad}:8: routing.mode" in x for x in lines
    )
    assert any(f"{bad}:6: agents.1.budgt: unknown key" in x and "budget" in x for x in lines)


def test_validate_reports_unknown_tools_and_cards(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nagents:\n  - id: a\n    card: nope\n    tools: [nothing_here]\n")
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:4: agents.0.card: no role card 'nope'" in result.output
    assert f"{bad}:5: agents.0.tools.0: unknown tool 'nothing_here'" in result.output


def test_validate_broken_yaml_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nagents:\n  - id: [a\n")
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    assert result.output.strip().startswith(f"{bad}:")
    assert "YAML syntax" in result.output


def test_schema_is_json_schema_of_the_topology() -> None:
    result = runner.invoke(app, ["schema"])
    schema = json.loads(result.output)
    assert schema["title"] == "Topology"
    assert "agents" in schema["properties"]


def test_run_with_a_broken_file_prints_one_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nagents: []\n")
    monkeypatch.setattr("sys.argv", ["dytopo", "run", str(bad)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{bad}:2: agents" in err


def test_run_rejects_an_unknown_mode() -> None:
    result = runner.invoke(
        app, ["run", str(ROOT / "topologies" / "research.yaml"), "--mode", "ring"]
    )
    assert result.exit_code == 2


def test_tools_list_json_has_schemas() -> None:
    result = runner.invoke(app, ["tools", "list", "--json"])
    assert result.exit_code == 0, result.output
    tools = json.loads(result.output)
    names = {entry["function"]["name"] for entry in tools}
    assert {"calculator", "read_file", "list_files", "search_docs", "http_get"} <= names
    for entry in tools:
        assert entry["type"] == "function"
        assert entry["function"]["parameters"]["type"] == "object"
    calculator = next(e for e in tools if e["function"]["name"] == "calculator")
    assert calculator["function"]["parameters"]["required"] == ["expression"]


def test_tools_call_runs_a_tool_with_json_arguments() -> None:
    result = runner.invoke(
        app, ["tools", "call", "calculator", "--args", '{"expression": "2 * (3 + 4)"}']
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "14"


def test_progress_shows_rounds_graph_and_failures() -> None:
    from rich.console import Console

    from dytopo.cli.progress import RoundProgress

    console = Console(record=True, width=120)
    view = RoundProgress(console)
    view(
        {
            "event": "run_start",
            "agents": ["a", "b"],
            "name": "x",
            "mode": "dynamic",
            "tau": 0.3,
            "max_rounds": 2,
            "run_id": "r1",
        }
    )
    view({"event": "round_start", "round": 1, "goal": "find facts"})
    view({"event": "agent_output", "agent": "b", "ok": False})
    view({"event": "routing", "edges": [{"source": "a", "target": "b", "score": 0.5}]})
    view(
        {
            "event": "manager_decision",
            "halt": True,
            "accepted": False,
            "rejected_because": "halt before min_rounds=2",
            "reason": "done",
        }
    )
    view(
        {
            "event": "round_end",
            "round": 1,
            "edges": 1,
            "usage": {"completion_tokens": 5},
            "wall_s": 1.0,
            "failed": ["b"],
        }
    )
    view({"event": "run_end"})
    text = console.export_text()
    assert "round 1 goal: find facts" in text
    assert "graph: a->b (0.50)" in text
    assert "not accepted (halt before min_rounds=2)" in text
    assert "failed: b" in text
