"""`dytopo init`: the scaffold it writes, refusals, --force, and the shipped copies kept equal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dytopo.cli import app, main
from dytopo.loader import problems_in
from dytopo.scaffold import FOLDER, scaffold_files, write_scaffold
from dytopo.tools.registry import ToolRegistry

ROOT = Path(__file__).resolve().parents[2]
BUILTIN_COPY = FOLDER.parent / "builtin_tools"
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


# (the repository's folder, its copy in the package, which files, every one of them or a choice)
MIRRORED = [
    (ROOT / "agents", FOLDER / "agents", "*.md", "all"),
    # The topologies a new folder starts with; a repo topology may stay out of it.
    (ROOT / "topologies", FOLDER / "topologies", "*.yaml", "chosen"),
    (ROOT / "examples" / "docs", FOLDER / "examples" / "docs", "*", "all"),
    # An installed wheel's built-in tools must be exactly the repository's.
    (ROOT / "tools", BUILTIN_COPY, "[!_]*.py", "all"),
]


@pytest.mark.parametrize(("source", "copy", "pattern", "which"), MIRRORED, ids=lambda x: str(x))
def test_the_package_copies_equal_the_repository_files(
    source: Path, copy: Path, pattern: str, which: str
) -> None:
    ours = {p.name: p.read_bytes() for p in source.glob(pattern) if p.is_file()}
    shipped = {p.name: p.read_bytes() for p in copy.glob(pattern) if p.is_file()}
    assert shipped
    names = ours.keys() | shipped.keys() if which == "all" else shipped.keys()
    differ = sorted(n for n in names if ours.get(n) != shipped.get(n))
    fix = "; ".join(
        f"cp {(source / n).relative_to(ROOT)} {(copy / n).relative_to(ROOT)}"
        if n in ours
        else f"git rm {(copy / n).relative_to(ROOT)}"
        for n in differ
    )
    assert not differ, f"the copy shipped in the wheel differs; run: {fix}"


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
    from dytopo.cards import find_card

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
