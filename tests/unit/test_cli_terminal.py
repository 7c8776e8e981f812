"""Model text, ids and tool output reach the terminal as text, never as escape codes: an answer
holding OSC 52 (clipboard), ESC [2J (clear) or OSC 0 (window title) is printed with those codes
shown as `\\x1b`, by `dytopo run` (live view, final answer, JSON) and by `dytopo runs`."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import decision, goal, step
from rich.table import Table

from dytopo import runner as library_runner
from dytopo.cli import doctor as doctor_cli
from dytopo.cli import main
from dytopo.cli._terminal import SafeConsole, json_text, visible
from dytopo.doctor import Check, DoctorReport
from dytopo.embedders import HashEmbedder
from dytopo.swarm.loop import Swarm
from dytopo.testing import ScriptedBackend

HOSTILE = "\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J\x1b]0;pwned\x07\x9b31m\x7f\rdone"
# ESC, the C1 range and DEL: what a terminal obeys. (rich drops BEL and CR itself.)
OBEYED = re.compile(r"[\x1b\x7f-\x9f]")
TOPOLOGY = """\
name: t
max_rounds: 1
min_rounds: 1
agents:
  - {id: researcher}
  - {id: writer}
"""


def test_visible_escapes_controls_but_keeps_newlines_and_tabs() -> None:
    assert visible("a\x1b[2Jb\tc\nd\x9be\x00") == "a\\x1b[2Jb\tc\nd\\x9be\\x00"


def test_the_console_escapes_text_in_strings_and_tables_not_its_own_styles() -> None:
    buffer = io.StringIO()
    console = SafeConsole(file=buffer, force_terminal=True, width=80)
    console.print(f"[bold]goal:[/] {HOSTILE}", highlight=False)
    table = Table("id")
    table.add_row(HOSTILE)
    console.print(table)
    text = buffer.getvalue()
    assert "\x1b[1m" in text  # rich's own bold is still there
    assert "]52;" in text
    assert not re.search(r"\x1b\]|\x1b\[2J|[\x7f-\x9f]", text)
    assert "\\x1b]52;c;" in text


def test_json_text_is_the_same_json_without_c1() -> None:
    value = {"answer": HOSTILE}
    text = json_text(value)
    assert not OBEYED.search(text)
    assert json.loads(text) == value


def _dytopo(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.argv", ["dytopo", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 0), captured.out, captured.err


@pytest.fixture
def hostile_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run gets a scripted server whose goal and final answer carry escape codes."""
    script: dict[str, list[Any]] = {
        "researcher": [step(f"facts {HOSTILE}", "F", "draft", "facts")],
        "writer": [step("draft", "D", "facts", "zebra")],
        "manager": [goal(f"find {HOSTILE}"), decision(True, f"answer {HOSTILE}")],
    }

    @asynccontextmanager
    async def built(topology: Any, *args: Any) -> AsyncIterator[Swarm]:
        backend = ScriptedBackend(by_tag=script)
        yield library_runner.build_swarm(topology, backend, HashEmbedder(), source=args[4])

    monkeypatch.setattr(library_runner, "_built", built)


@pytest.mark.usefixtures("hostile_server")
@pytest.mark.parametrize("as_json", [False, True])
def test_dytopo_run_prints_model_text_without_escape_codes(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    as_json: bool,
) -> None:
    topology = tmp_path / "t.yaml"
    topology.write_text(TOPOLOGY, encoding="utf-8")
    args = ["run", str(topology), "--task", "x", "--trace", str(tmp_path / "t.jsonl")]
    code, out, err = _dytopo(capsys, monkeypatch, *args, *(["--json"] if as_json else []))
    assert code == 0, err
    assert not OBEYED.search(out), out
    assert not OBEYED.search(err), err
    if as_json:
        assert json.loads(out)["final_answer"] == f"answer {HOSTILE}"
    else:
        assert "answer \\x1b]52;c;cm0gLXJmIH4=" in out
        assert "find \\x1b]52;" in err + out

    code, out, err = _dytopo(capsys, monkeypatch, "runs", "--dir", str(tmp_path))
    assert code == 0, err
    assert not OBEYED.search(out + err)


@pytest.mark.parametrize("as_json", [False, True])
def test_dytopo_doctor_prints_what_a_server_reports_without_escape_codes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    # The model name and check details come from the server: a hostile one cannot reach the
    # terminal through them (pydantic's JSON keeps C1 raw; json_text escapes it).
    report = DoctorReport(
        url="http://127.0.0.1:1",
        model=f"m {HOSTILE}",
        checks=[Check(name="props", ok=False, detail=f"said {HOSTILE}")],
    )

    async def fake(*_: object) -> DoctorReport:
        return report

    monkeypatch.setattr(doctor_cli, "_doctor", fake)
    args = ["doctor", "--backend-url", "http://127.0.0.1:1", *(["--json"] if as_json else [])]
    _code, out, err = _dytopo(capsys, monkeypatch, *args)
    assert not OBEYED.search(out + err), out + err
    if as_json:
        assert json.loads(out)["model"] == f"m {HOSTILE}"
    else:
        assert "\\x1b]52;" in out
