"""`dytopo init`: the scaffold it writes (from the checkout's top-level folders, or from what a
wheel's build copied), refusals, --force, and the build step that copies."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from types import ModuleType

import pytest
from setuptools.errors import FileError
from typer.testing import CliRunner

from dytopo.cli import app, main
from dytopo.loader import problems_in
from dytopo.scaffold import CHECKOUT, FOLDER, scaffold_files, write_scaffold
from dytopo.tools.registry import ToolRegistry

ROOT = Path(__file__).resolve().parents[2]
cli = CliRunner()


def dytopo(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int, str, str]:
    """`dytopo ARGS` as the entry point runs it (errors as one line): exit code, stdout, stderr."""
    monkeypatch.setattr("sys.argv", ["dytopo", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    code = exit_info.value.code
    assert isinstance(code, int)
    return code, captured.out, captured.err


# What `init` writes from the repository's top level: (its folder there, its folder in the scaffold)
TOP_LEVEL = [("agents", "agents"), ("topologies", "topologies"), ("examples/docs", "examples/docs")]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _load_build_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_scaffold", ROOT / "build_scaffold.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_top_level_file_has_a_second_copy_in_the_package() -> None:
    top = {
        path.read_bytes(): path
        for folder in ("agents", "topologies", "examples/docs", "tools")
        for path in (ROOT / folder).iterdir()
        if path.is_file()
    }
    assert len(top) > 20
    package = ROOT / "dytopo"
    copies = [
        f"{path.relative_to(ROOT)} = {top[path.read_bytes()].relative_to(ROOT)}"
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.read_bytes() in top
    ]
    assert not copies, "the wheel's build copies these; delete the package's copy: " + ", ".join(
        copies
    )


def test_init_from_a_checkout_writes_every_top_level_card_topology_and_document(
    tmp_path: Path,
) -> None:
    assert CHECKOUT == ROOT
    write_scaffold(tmp_path)

    for source, copy in TOP_LEVEL:
        ours = _files(ROOT / source)
        assert ours, source
        assert _files(tmp_path / copy) == ours, source
    assert (tmp_path / "README.md").read_bytes() == (FOLDER / "README.md").read_bytes()
    assert (tmp_path / "tools" / "word_count.py").is_file()
    # The built-in tools are the package's, not the folder's: init does not write them.
    assert sorted(p.name for p in (tmp_path / "tools").iterdir()) == ["word_count.py"]


def _fake_checkout(root: Path) -> Path:
    for rel, text in {
        "pyproject.toml": "",
        "agents/only.md": "---\nname: only\n---\nThe only card.\n",
        "topologies/t.yaml": "name: t\n",
        "examples/docs/d.md": "# d\n",
        "examples/docs/.hidden": "not a document",
        "examples/not_docs.py": "",
        "tools/mine.py": "",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_write_scaffold_from_a_checkout_reads_the_checkouts_top_level_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout = _fake_checkout(tmp_path / "checkout")
    monkeypatch.setattr("dytopo.scaffold.CHECKOUT", checkout)
    dest = tmp_path / "dest"

    written = write_scaffold(dest)

    assert [str(p) for p in written.files] == [
        "README.md",
        "agents/only.md",
        "examples/docs/d.md",
        "tools/word_count.py",
        "topologies/t.yaml",
    ]
    assert (dest / "agents" / "only.md").read_text() == "---\nname: only\n---\nThe only card.\n"
    assert (dest / "topologies" / "t.yaml").read_text() == "name: t\n"


def test_an_installed_package_writes_its_own_folder_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = tmp_path / "folder"
    (shipped / "agents").mkdir(parents=True)
    (shipped / "README.md").write_text("readme")
    (shipped / "agents" / "a.md").write_text("card")
    monkeypatch.setattr("dytopo.scaffold.CHECKOUT", None)
    monkeypatch.setattr("dytopo.scaffold.FOLDER", shipped)

    write_scaffold(tmp_path / "dest")

    assert scaffold_files() == [Path("README.md"), Path("agents/a.md")]
    assert (tmp_path / "dest" / "agents" / "a.md").read_text() == "card"


def test_the_build_copies_the_top_level_files_where_an_installed_wheel_reads_them(
    tmp_path: Path,
) -> None:
    build_lib = tmp_path / "build" / "lib"
    stale = build_lib / "dytopo" / "scaffold" / "folder" / "agents" / "deleted.md"
    stale.parent.mkdir(parents=True)
    stale.write_text("a card deleted since the last build")

    _load_build_hook().copy_into(build_lib)

    package = build_lib / "dytopo"
    # The paths dytopo.agents.cards, dytopo.tools.static and dytopo.scaffold read in a wheel.
    assert _files(package / "scaffold" / "builtin_tools") == _files(ROOT / "tools")
    for source, copy in TOP_LEVEL:
        assert _files(package / "scaffold" / "folder" / copy) == _files(ROOT / source), source
    assert not stale.exists()


def test_the_build_stops_when_a_top_level_folder_is_missing(tmp_path: Path) -> None:
    root = _fake_checkout(tmp_path / "checkout")
    (root / "dytopo" / "scaffold").mkdir(parents=True)
    shutil.copy(ROOT / "dytopo" / "scaffold" / "sources.py", root / "dytopo" / "scaffold")
    hook = _load_build_hook()
    assert [str(dest) for _, dest in hook.copied(root)] == [
        "dytopo/scaffold/builtin_tools/mine.py",
        "dytopo/scaffold/folder/agents/only.md",
        "dytopo/scaffold/folder/topologies/t.yaml",
        "dytopo/scaffold/folder/examples/docs/d.md",
    ]
    shutil.rmtree(root / "agents")

    with pytest.raises(FileError, match=r"no \*\.md in .*agents: the wheel must carry them"):
        hook.copy_into(tmp_path / "build", root)


def test_init_writes_a_folder_whose_topologies_validate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "new" / "swarms"
    monkeypatch.chdir(tmp_path)  # not the repository: its agents/ must not be what is found

    result = cli.invoke(app, ["init", str(dest)])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"wrote {len(scaffold_files())} files in {dest}:"
    assert "  topologies/: code.yaml, humaneval.yaml, math.yaml, research.yaml" in lines
    assert lines[-1] == (
        f"next: cd {dest} && dytopo validate topologies/*.yaml && dytopo run "
        "topologies/research.yaml"
    )
    for name in ("README.md", "tools/word_count.py", "examples/docs/lru-eviction.md"):
        assert (dest / name).is_file()
    monkeypatch.chdir(dest)
    topologies = sorted(Path("topologies").glob("*.yaml"))
    assert [p.name for p in topologies] == [
        "code.yaml",
        "humaneval.yaml",
        "math.yaml",
        "research.yaml",
    ]
    for path in topologies:
        topology, problems = problems_in(path)
        assert problems == []
        assert topology is not None
    research, _ = problems_in(Path("topologies/research.yaml"))
    assert research is not None
    docs = (Path("topologies") / research.tool_settings.docs_dir).resolve()  # type: ignore[operator]
    assert docs == (dest / "examples" / "docs").resolve()


def test_the_cards_found_are_the_folders_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_scaffold(tmp_path)
    card = tmp_path / "agents" / "writer.md"
    card.write_text(card.read_text().replace("You are", "You, edited, are"))
    monkeypatch.chdir(tmp_path)
    from dytopo.agents.cards import find_card

    assert find_card("writer", tmp_path / "topologies").resolve() == card.resolve()


def test_an_existing_file_is_refused_naming_it_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "agents").mkdir()
    mine = tmp_path / "agents" / "analyst.md"
    mine.write_text("my own analyst")

    code, out, err = dytopo(capsys, monkeypatch, "init", str(tmp_path))

    assert (code, out) == (2, "")
    assert err.strip().splitlines() == [
        f"error: {mine} exists; pass --force to overwrite the scaffold's files (other files "
        "stay), or choose another folder"
    ]
    assert mine.read_text() == "my own analyst"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["agents", "analyst.md"]


def test_force_replaces_the_scaffolds_files_and_keeps_the_others(tmp_path: Path) -> None:
    write_scaffold(tmp_path)
    (tmp_path / "README.md").write_text("old")
    (tmp_path / "topologies" / "mine.yaml").write_text("name: mine\n")

    result = cli.invoke(app, ["init", str(tmp_path), "--force"])

    assert result.exit_code == 0, result.output
    assert f"files in {tmp_path}, {len(scaffold_files())} of them replaced:" in result.output
    assert (tmp_path / "README.md").read_bytes() == (FOLDER / "README.md").read_bytes()
    assert (tmp_path / "topologies" / "mine.yaml").read_text() == "name: mine\n"


def test_force_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside.md"
    outside.write_text("not yours to overwrite")
    dest = tmp_path / "d"
    dest.mkdir()
    os.symlink(outside, dest / "README.md")

    write_scaffold(dest, force=True)

    assert outside.read_text() == "not yours to overwrite"
    assert not (dest / "README.md").is_symlink()
    assert (dest / "README.md").read_bytes() == (FOLDER / "README.md").read_bytes()


def test_a_file_in_place_of_the_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "x"
    target.write_text("a file")
    code, _, err = dytopo(capsys, monkeypatch, "init", str(target))
    assert code == 2
    assert err.strip() == (
        f"error: {target} exists and is not a folder; give a new or an existing folder"
    )


def test_a_folder_that_cannot_be_made_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("a file where a folder should be")
    dest = tmp_path / "file" / "x"
    code, _, err = dytopo(capsys, monkeypatch, "init", str(dest))
    assert code == 1
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: cannot write {dest}")


def test_the_sample_tool_loads_with_trust_and_is_refused_without(tmp_path: Path) -> None:
    write_scaffold(tmp_path)
    mine = tmp_path / "topologies" / "mine.yaml"
    mine.write_text(
        "name: mine\ntool_modules: [../tools/word_count.py]\n"
        "agents:\n  - {id: writer, card: writer, tools: [word_count]}\n"
    )

    _, refused = problems_in(mine)
    topology, trusted = problems_in(mine, trust_topology=True)

    assert len(refused) == 1
    assert "outside the topology's folder" in refused[0]
    assert "--trust-topology" in refused[0]
    assert trusted == []
    assert topology is not None
    registry = ToolRegistry.discover(topology.tool_modules, mine.parent, trust_topology=True)
    word_count = registry.get("word_count")
    assert word_count.fn(text="one two One", unique=True) == "2"
