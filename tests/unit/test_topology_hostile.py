"""Hostile topology files and command-line values.

Each is refused with ONE line (`FILE:LINE: field: fix` where a file is involved) and exit code 2:
never a traceback, a hang, a retry, or any of the file's code running.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from dytopo.cli import main

ROOT = Path(__file__).resolve().parents[2]
RESEARCH = str(ROOT / "topologies" / "research.yaml")
AGENTS = "agents:\n  - id: researcher\n"
LINE = re.compile(r"^(?:error: )?(?P<file>.+?):(?P<line>\d+): (?P<field>[^:]+): (?P<fix>.+)$")

# A hang guard only: each case takes well under a second.
pytestmark = pytest.mark.timeout(60)


def dytopo(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int | str | None, list[str]]:
    """Run the real entry point; return its exit code and every output line (stdout + stderr)."""
    monkeypatch.setattr("sys.argv", ["dytopo", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "Traceback" not in output
    return exit_info.value.code, output.splitlines()


def laughs() -> str:
    rows = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        rows.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    return "name: x\n" + "\n".join(rows) + "\n" + AGENTS


def block_mapping(depth: int) -> str:
    keys = "".join(" " * i + "k:\n" for i in range(depth))
    return "name: x\n" + AGENTS + keys + " " * depth + "1\n"


def after(text: str) -> bytes:
    """A valid topology followed by `text`."""
    return ("name: x\n" + AGENTS + text).encode()


# id -> (file content, expected line, expected start of the field)
HOSTILE_FILES: dict[str, tuple[bytes, int, str]] = {
    "billion_laughs": (laughs().encode(), 3, "b"),
    "non_utf8": (after("") + b"task: caf\xe9\n", 4, "encoding"),
    "utf16_bom": (("name: x\n" + AGENTS).encode("utf-16"), 1, "encoding"),
    "utf32_bom": (("name: x\n" + AGENTS).encode("utf-32"), 1, "encoding"),
    "20000_nested_flow_sequences": (b"name: x\nagents: " + b"[" * 20_000, 2, "agents.0.0.0"),
    "3000_nested_flow_mappings": (b"name: x\n" + b"k: " + b"{k: " * 3000, 2, "k.k.k"),
    "300_nested_block_mappings": (block_mapping(300).encode(), 36, "k.k.k"),
    "3000_nested_block_mappings": (block_mapping(3000).encode(), 1, "file"),
    "5000_digit_seed": (after("seed: " + "9" * 5000 + "\n"), 4, "seed"),
    "4000_digit_seed": (after("seed: " + "9" * 4000 + "\n"), 4, "seed"),
    "seed_beyond_uint32": (after("seed: 4294967296\n"), 4, "seed"),
    "weight_inf": (after("    budget: {weight: .inf}\n"), 4, "agents.0.budget.weight"),
    "weight_nan": (after("    budget: {weight: .nan}\n"), 4, "agents.0.budget.weight"),
    "weight_overflow": (after("    budget:\n      weight: 1e400\n"), 5, "agents.0.budget.weight"),
    "tau_nan": (after("routing: {tau: .NaN}\n"), 4, "routing.tau"),
    "temperature_minus_inf": (
        after("    sampling: {temperature: -.inf}\n"),
        4,
        "agents.0.sampling.temperature",
    ),
    "timeout_inf": (after("agent_timeout_s: .inf\n"), 4, "agent_timeout_s"),
    "over_1_mb": (after("#" * 1_100_000 + "\n"), 1, "file"),
    "duplicate_key": (after("name: y\n"), 4, "name"),
    "duplicate_nested_key": (
        after("    tools: []\n    tools: [calculator]\n"),
        5,
        "agents.0.tools",
    ),
    "python_tag": (b"name: !!python/object/apply:os.system ['true']\n" + after(""), 1, "name"),
    "set_tag": (after("tool_modules: !!set {a: null}\n"), 4, "tool_modules"),
    "two_documents": (after("---\nname: y\n"), 4, "YAML"),
    "nul_character": (b"name: x\x00\n" + AGENTS.encode(), 1, "YAML syntax"),
    "broken_flow": (b"name: x\nagents: [{id: a\n", 3, "YAML syntax"),
    "complex_key": (after("? [a, b]\n: c\n"), 4, "(top level)"),
    "root_is_a_list": (b"- name: x\n", 1, "(top level)"),
    "empty_file": (b"", 1, "(top level)"),
    "backend_url_not_a_url": (after("backend: {base_url: not a url}\n"), 4, "backend.base_url"),
    "embedder_url_file_scheme": (
        after("embedder:\n  base_url: file:///etc/passwd\n"),
        5,
        "embedder.base_url",
    ),
    "backend_url_broken_ipv6": (after("backend: {base_url: 'http://[::1'}\n"), 4, "backend."),
    "tool_module_with_nul": (after('tool_modules: ["a\\0.py"]\n'), 4, "tool_modules.0"),
    "tool_module_name_too_long": (after(f"tool_modules: [{'a' * 900}.py]\n"), 4, "tool_modules.0"),
    "markup_in_a_key": (after("'[/bold]': 1\n"), 4, "[/bold]"),
    "escape_sequence_in_a_key": (after('"\\e]0;pwned\\a": 1\n'), 4, "\\x1b]0;pwned\\x07"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_FILES))
def test_hostile_file_is_one_line_and_exit_2(
    case: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    content, line, field = HOSTILE_FILES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(content)
    code, lines = dytopo(monkeypatch, capsys, "validate", str(path))
    assert code == 2
    assert len(lines) == 1, lines
    match = LINE.match(lines[0])
    assert match, lines[0]
    assert match["file"] == str(path)
    assert int(match["line"]) == line, lines[0]
    # PyYAML 6.0.4 stops deep nesting itself ("YAML syntax: exceeded maximum nesting depth").
    deep = case == "20000_nested_flow_sequences" and match["field"].startswith("YAML syntax")
    assert deep or match["field"].startswith(field), lines[0]


@pytest.mark.parametrize("case", ["billion_laughs", "weight_inf", "5000_digit_seed", "utf16_bom"])
@pytest.mark.parametrize("command", ["run", "plan"])
def test_run_and_plan_refuse_hostile_files_the_same_way(
    case: str,
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(HOSTILE_FILES[case][0])
    extra = ["--n-ctx", "8192", "--slots", "2"] if command == "plan" else []
    code, lines = dytopo(monkeypatch, capsys, command, str(path), *extra)
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {path}:{HOSTILE_FILES[case][1]}: ")


def test_plan_of_an_infinite_weight_is_refused_in_python_too() -> None:
    from pydantic import ValidationError

    from dytopo.topology import BudgetSpec

    for bad in (float("inf"), float("nan")):
        with pytest.raises(ValidationError, match="finite number"):
            BudgetSpec(weight=bad)


def test_many_unknown_keys_print_20_lines_and_a_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("name: x\n" + AGENTS + "".join(f"k{i}: 1\n" for i in range(50_000)))
    code, lines = dytopo(monkeypatch, capsys, "validate", str(path))
    assert code == 2
    assert len(lines) == 21
    assert all(LINE.match(x) for x in lines[:20])
    assert lines[0].startswith(f"{path}:4: k0: unknown key")
    assert lines[20] == f"{path}: ... and 49980 more problems (fix the first ones)"


def test_ten_thousand_agents_validate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "crowd.yaml"
    rows = "".join(f"  - {{id: a{i}, card: researcher}}\n" for i in range(10_000))
    path.write_text(f"name: crowd\nagents:\n{rows}")
    code, lines = dytopo(monkeypatch, capsys, "validate", str(path))
    assert (code, lines) == (0, [f"{path}: OK"])


def test_ten_thousand_agents_with_duplicates_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "crowd.yaml"
    rows = "".join(f"  - {{id: a{i % 5000}, card: researcher}}\n" for i in range(10_000))
    path.write_text(f"name: crowd\nagents:\n{rows}")
    code, lines = dytopo(monkeypatch, capsys, "validate", str(path))
    assert code == 2
    assert len(lines) == 1
    assert "agent ids must be unique; repeated: a0, a1, a10, a100, a1000 and 4995 more" in lines[0]


# Command-line values: argv -> the flag the one error line must name.
HOSTILE_ARGS: dict[str, tuple[list[str], str]] = {
    "tau_nan": (["run", RESEARCH, "--tau", "nan"], "--tau nan: "),
    "tau_inf": (["run", RESEARCH, "--tau", "inf"], "--tau inf: "),
    "seed_negative": (["run", RESEARCH, "--seed", "-1"], "--seed -1: "),
    "backend_url_broken_ipv6": (["run", RESEARCH, "--backend-url", "http://[::1"], "--backend-url"),
    "backend_url_not_a_url": (["run", RESEARCH, "--backend-url", "not a url"], "--backend-url"),
    "backend_url_file": (["run", RESEARCH, "--backend-url", "file:///etc/passwd"], "--backend-url"),
    "embed_url_ftp": (["run", RESEARCH, "--embed-url", "ftp://example.org"], "--embed-url"),
    "plan_backend_url": (["plan", RESEARCH, "--backend-url", "not a url"], "--backend-url"),
    "doctor_backend_url": (["doctor", "--backend-url", "http://[::1"], "--backend-url"),
    "doctor_embed_url": (["doctor", "--embed-url", "file:///x"], "--embed-url"),
    "tools_timeout_nan": (["tools", "call", "calculator", "--timeout", "nan"], "--timeout"),
    "tools_timeout_inf": (["tools", "call", "calculator", "--timeout", "inf"], "--timeout"),
    "tools_timeout_negative": (["tools", "call", "calculator", "--timeout", "-1"], "--timeout"),
    "tools_args_deep": (["tools", "call", "calculator", "--args", "[" * 60_000], "--args"),
    "tools_args_not_json": (["tools", "call", "calculator", "--args", "{x"], "--args"),
    "tools_args_not_object": (["tools", "call", "calculator", "--args", "[1]"], "--args"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_ARGS))
def test_hostile_argument_is_one_line_and_exit_2(
    case: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, flag = HOSTILE_ARGS[case]
    code, lines = dytopo(monkeypatch, capsys, *argv)
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {flag}"), lines[0]


@pytest.mark.parametrize("var", ["DYTOPO_BASE_URL", "DYTOPO_EMBED_URL"])
def test_a_bad_url_in_the_environment_is_one_line(
    var: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(var, "not a url")
    code, lines = dytopo(monkeypatch, capsys, "doctor")
    assert code == 2
    assert lines == [
        f"error: ${var}: 'not a url' is not an http(s) URL with a host; give a server root "
        "like http://127.0.0.1:8080"
    ]


def test_backend_settings_refuse_urls_that_cannot_work() -> None:
    from pydantic import ValidationError

    from dytopo.backends.settings import BackendSettings

    for bad in ("not a url", "file:///etc/passwd", "http://[::1", "http://h/?q=1", "ftp://h"):
        with pytest.raises(ValidationError, match="server root like"):
            BackendSettings(base_url=bad)
    assert BackendSettings(base_url="https://h.example/v1").base_url == "https://h.example/v1"


# --- validation never runs a tool module -------------------------------------------------------

EVIL = """\
from pathlib import Path

Path({marker!r}).write_text("ran")

from dytopo.tools import tool


@tool
def pwn(text: str) -> str:
    '''Looks harmless.'''
    return text
"""


def evil_module(folder: Path, marker: Path, name: str = "evil.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(EVIL.format(marker=str(marker)))
    return path


def topology(folder: Path, modules: list[str], tools: str = "[]", card: str = "researcher") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "t.yaml"
    listed = ", ".join(f"'{m}'" for m in modules)
    path.write_text(
        f"name: t\nagents:\n  - id: a\n    card: '{card}'\n    tools: {tools}\n"
        f"tool_modules: [{listed}]\n"
    )
    return path


def test_validate_refuses_a_module_outside_the_folder_without_running_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "marker"
    evil = evil_module(tmp_path / "x", marker)
    path = topology(tmp_path / "topo", [str(evil)], tools="[pwn]")
    code, lines = dytopo(monkeypatch, capsys, "validate", str(path))
    assert code == 2
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}:6: tool_modules.0: tool module {evil} is outside")
    assert "--trust-topology" in lines[0]
    assert not marker.exists()


def test_trusted_validation_reads_the_module_and_still_does_not_run_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "marker"
    evil = evil_module(tmp_path / "x", marker)
    path = topology(tmp_path / "topo", [str(evil)], tools="[pwn]")
    code, lines = dytopo(monkeypatch, capsys, "validate", "--trust-topology", str(path))
    assert (code, lines) == (0, [f"{path}: OK"])
    assert not marker.exists()


def test_a_module_in_the_folder_is_checked_without_running_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "marker"
    evil_module(tmp_path / "topo", marker, "mine.py")
    path = topology(tmp_path / "topo", ["mine.py"], tools="[pwn, nope]")
    code, lines = dytopo(monkeypatch, capsys, "validate", str(path))
    assert code == 2
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}:5: agents.0.tools.1: unknown tool 'nope'")
    assert "pwn" in lines[0]
    assert not marker.exists()


@pytest.mark.parametrize("name", ["this", "antigravity"])
def test_a_stdlib_module_name_is_never_imported(
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr("webbrowser.open", lambda *a, **k: pytest.fail("antigravity ran"))
    path = topology(tmp_path, [name])
    for trust in ([], ["--trust-topology"]):
        code, lines = dytopo(monkeypatch, capsys, "validate", *trust, str(path))
        assert code == 2
        assert len(lines) == 1, lines
        expected = "is outside" if not trust else "defines no tools"
        assert lines[0].startswith(f"{path}:6: tool_modules.0: tool module ")
        assert expected in lines[0]
        assert name not in sys.modules


def test_a_dotted_module_is_found_without_importing_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "marker"
    package = tmp_path / "site" / "dytopo_probe_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    evil_module(package, tmp_path / "marker2", "tools.py")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    path = topology(tmp_path / "topo", ["dytopo_probe_pkg.tools"], tools="[pwn]")
    code, lines = dytopo(monkeypatch, capsys, "validate", "--trust-topology", str(path))
    assert (code, lines) == (0, [f"{path}: OK"])
    assert not marker.exists()
    assert not (tmp_path / "marker2").exists()
    assert "dytopo_probe_pkg" not in sys.modules


@pytest.mark.parametrize("how", ["relative", "symlink", "folder_symlink"])
def test_escapes_from_the_folder_are_refused(
    how: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    marker = tmp_path / "marker"
    evil = evil_module(tmp_path / "x", marker)
    folder = tmp_path / "topo"
    folder.mkdir()
    if how == "relative":
        target = "../x/evil.py"
    elif how == "symlink":
        (folder / "ok.py").symlink_to(evil)
        target = "ok.py"
    else:
        (folder / "tools").mkdir()
        (folder / "tools" / "ok.py").symlink_to(evil)
        target = "tools"
    path = topology(folder, [target], tools="[pwn]")
    code, lines = dytopo(monkeypatch, capsys, "validate", str(path))
    assert code == 2
    assert len(lines) == 1
    assert "is outside the topology's folder" in lines[0]
    assert not marker.exists()


def test_discover_refuses_outside_modules_unless_trusted(tmp_path: Path) -> None:
    from dytopo.errors import ConfigError
    from dytopo.tools import ToolRegistry

    marker = tmp_path / "marker"
    evil = evil_module(tmp_path / "x", marker)
    with pytest.raises(ConfigError, match="is outside the topology's folder"):
        ToolRegistry.discover([str(evil)], tmp_path / "topo")
    with pytest.raises(ConfigError, match="is outside the topology's folder"):
        ToolRegistry.discover(["this"], tmp_path / "topo")
    assert not marker.exists()
    registry = ToolRegistry.discover([str(evil)], tmp_path / "topo", trust_topology=True)
    assert "pwn" in registry.names()
    assert marker.exists()


def test_an_installed_entry_point_module_is_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from dytopo.tools import static

    fake = SimpleNamespace(value="somepkg.tools:shout")
    monkeypatch.setattr(static, "entry_points", lambda group: [fake])
    static.check_confined("somepkg.tools", tmp_path)
    with pytest.raises(static.ConfigError, match="not found as Python source"):
        static.check_confined("otherpkg.tools", tmp_path)


async def test_load_swarm_follows_the_same_rule(tmp_path: Path) -> None:
    from dytopo import load_swarm
    from dytopo.embedders import HashEmbedder
    from dytopo.errors import ConfigError
    from dytopo.testing import ScriptedBackend

    marker = tmp_path / "marker"
    evil = evil_module(tmp_path / "x", marker)
    path = topology(tmp_path / "topo", [str(evil)], tools="[pwn]")
    backend, embedder = ScriptedBackend(), HashEmbedder()
    with pytest.raises(ConfigError, match="outside the topology's folder"):
        await load_swarm(path, backend=backend, embedder=embedder)
    assert not marker.exists()
    swarm = await load_swarm(path, backend=backend, embedder=embedder, trust_topology=True)
    assert [a.id for a in swarm.agents] == ["a"]
    assert marker.exists()


def test_static_tool_names_match_the_imported_ones() -> None:
    from dytopo.tools import ToolRegistry
    from dytopo.tools.static import installed_tool_names

    assert installed_tool_names() == set(ToolRegistry.discover().names())
    assert {"calculator", "read_file", "search_docs"} <= installed_tool_names()


def test_tool_names_come_from_decorators_and_calls() -> None:
    from dytopo.tools.static import tools_in_source

    source = (
        "from dytopo import tools\n"
        "@tools.tool(name='loud')\n"
        "def shout(t: str) -> str: ...\n"
        "@tool\n"
        "async def whisper(t: str) -> str: ...\n"
        "def helper(): ...\n"
        "echo = tool(helper, name='echo2')\n"
        "plain = tool(helper)\n"
    )
    assert tools_in_source(source) == {
        "shout": "loud",
        "whisper": "whisper",
        "echo": "echo2",
        "plain": "helper",
    }


# --- role cards stay inside the project -----------------------------------------------------


@pytest.mark.parametrize("how", ["absolute", "relative", "name", "symlink"])
def test_cards_outside_the_folder_are_refused_unless_trusted(
    how: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.md"
    secret.write_text("---\nname: s\n---\nA secret prompt.\n")
    folder = tmp_path / "a" / "topo"
    folder.mkdir(parents=True)
    card = {
        "absolute": str(secret),
        "relative": "../../outside/secret.md",
        "name": "../../outside/secret",
        "symlink": "link.md",
    }[how]
    if how == "symlink":
        (folder / "link.md").symlink_to(secret)
    path = topology(folder, [], card=card)
    code, lines = dytopo(monkeypatch, capsys, "validate", str(path))
    assert code == 2
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}:4: agents.0.card: role card ")
    assert "outside the topology's folder" in lines[0]
    code, lines = dytopo(monkeypatch, capsys, "validate", "--trust-topology", str(path))
    assert (code, lines) == (0, [f"{path}: OK"])


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("---\nname: x\nno closing line\n", "no closing `---`"),
        ("---\na: &a [x, x]\nb: &b [*a, *a]\nname: *b\n---\nPrompt.\n", "`name` must be text"),
        ("---\n- a\n---\nPrompt.\n", "must be a mapping"),
        ("---\nname: [x\n---\nPrompt.\n", "not valid YAML"),
    ],
)
def test_malformed_cards_are_one_line(
    text: str,
    problem: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "bad.md").write_text(text)
    path = topology(tmp_path, [], card="bad.md")
    code, lines = dytopo(monkeypatch, capsys, "validate", str(path))
    assert code == 2
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}:4: agents.0.card: ")
    assert problem in lines[0]


def test_a_card_that_is_not_utf8_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.md").write_bytes(b"caf\xe9\n")
    path = topology(tmp_path, [], card="bad.md")
    code, lines = dytopo(monkeypatch, capsys, "validate", str(path))
    assert code == 2
    assert len(lines) == 1
    assert "save it as UTF-8" in lines[0]
