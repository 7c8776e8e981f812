"""`dytopo skill export DIR`: writes DIR/dytopo-swarm, presets settings, never clobbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dytopo.cli import app, main
from dytopo.errors import ConfigError
from dytopo.skill import SKILL_FILES, SKILL_NAME, export_skill, skill_files

runner = CliRunner()


def setup_values(folder: Path) -> dict[str, str]:
    manifest = json.loads((folder / "plugin.json").read_text())
    return {name: arg["value"] for name, arg in manifest["setup_args"].items()}


def test_export_writes_the_packaged_skill(tmp_path: Path) -> None:
    dest = tmp_path / "storage" / "plugins" / "agent-skills"
    target = export_skill(dest)
    assert target == dest / SKILL_NAME
    assert sorted(p.name for p in dest.iterdir()) == [SKILL_NAME]  # no staging leftovers
    assert {p.name: p.read_bytes() for p in target.iterdir()} == skill_files()
    assert sorted(SKILL_FILES) == ["README.md", "handler.js", "plugin.json"]
    assert target.stat().st_mode & 0o755 == 0o755
    assert setup_values(target) == {
        "DYTOPO_URL": "http://host.docker.internal:8765",
        "DYTOPO_TOKEN": "",
        "DYTOPO_TOPOLOGY": "research",
        "DYTOPO_TIMEOUT_S": "1800",
    }


def test_cli_substitutes_url_token_topology_timeout(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "skill", "export", str(tmp_path),
            "--url", "http://127.0.0.1:8765/", "--token", "tok-1",
            "--topology", "code", "--timeout", "600",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"skill ready: {tmp_path / SKILL_NAME}" in result.output
    assert setup_values(tmp_path / SKILL_NAME) == {
        "DYTOPO_URL": "http://127.0.0.1:8765",
        "DYTOPO_TOKEN": "tok-1",
        "DYTOPO_TOPOLOGY": "code",
        "DYTOPO_TIMEOUT_S": "600",
    }
    manifest = json.loads((tmp_path / SKILL_NAME / "plugin.json").read_text())
    # The hint shown in AnythingLLM's UI keeps both choices.
    assert "127.0.0.1:8765" in manifest["setup_args"]["DYTOPO_URL"]["input"]["hint"]


def test_token_defaults_to_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYTOPO_TOKEN", "from-env")
    result = runner.invoke(app, ["skill", "export", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert setup_values(tmp_path / SKILL_NAME)["DYTOPO_TOKEN"] == "from-env"


def test_same_content_again_is_fine_and_untouched(tmp_path: Path) -> None:
    target = export_skill(tmp_path, topology="math")
    before = {p.name: p.stat().st_mtime_ns for p in target.iterdir()}
    assert export_skill(tmp_path, topology="math") == target
    assert {p.name: p.stat().st_mtime_ns for p in target.iterdir()} == before


def test_refuses_a_different_folder_without_force(tmp_path: Path) -> None:
    target = export_skill(tmp_path)
    plugin = target / "plugin.json"
    saved_in_ui = plugin.read_text().replace('"value": "research"', '"value": "code"')
    plugin.write_text(saved_in_ui)
    with pytest.raises(ConfigError, match=r"already exists with other content.*--force"):
        export_skill(tmp_path)
    assert plugin.read_text() == saved_in_ui

    (target / "extra.txt").write_text("someone else's")
    export_skill(tmp_path, force=True)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == skill_files()
    assert sorted(p.name for p in tmp_path.iterdir()) == [SKILL_NAME]


@pytest.mark.parametrize("kind", ["file", "symlink", "subfolder", "linked_file"])
def test_odd_things_at_the_target_need_force(tmp_path: Path, kind: str) -> None:
    target = tmp_path / SKILL_NAME
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if kind == "file":
        target.write_text("x")
    elif kind == "symlink":
        export_skill(elsewhere)
        target.symlink_to(elsewhere / SKILL_NAME)  # same content, but not our folder
    elif kind == "subfolder":
        export_skill(tmp_path)
        (target / "node_modules").mkdir()
    else:  # same bytes, but handler.js would follow a link out of the folder
        export_skill(tmp_path)
        (elsewhere / "handler.js").write_bytes((target / "handler.js").read_bytes())
        (target / "handler.js").unlink()
        (target / "handler.js").symlink_to(elsewhere / "handler.js")
    with pytest.raises(ConfigError, match="--force"):
        export_skill(tmp_path)
    export_skill(tmp_path, force=True)
    assert target.is_dir()
    assert not target.is_symlink()
    assert {p.name: p.read_bytes() for p in target.iterdir()} == skill_files()
    if kind == "symlink":  # the link's target is not ours to delete
        assert (elsewhere / SKILL_NAME / "plugin.json").is_file()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--url", "host.docker.internal:8765", "--url: 'host.docker.internal:8765' is not"),
        ("--url", "http://127.0.0.1:8765/?x=1", "--url: 'http://127.0.0.1:8765/?x=1' has a query"),
        ("--url", "http://u:pw-123@127.0.0.1:8765", "--url holds a user name or password"),
        ("--url", "u:pw-123@127.0.0.1:8765", "--url holds a user name or password"),
        ("--token", "two words", "--token: give the service's token"),
        ("--token", "t\u00f6k", "--token: give the service's token"),
        ("--topology", "../etc/passwd", "--topology '../etc/passwd': give a topology name"),
        ("--timeout", "0", "--timeout 0.0: give seconds"),
        ("--timeout", "nan", "--timeout nan: give seconds"),
    ],
)
def test_bad_presets_are_one_line_and_write_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    option: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setattr("sys.argv", ["dytopo", "skill", "export", str(tmp_path), option, value])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {message}"), lines
    assert "pw-123" not in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_dest_that_is_a_file_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "agent-skills"
    dest.write_text("")
    with pytest.raises(ConfigError, match="is not a folder"):
        export_skill(dest)


def test_existing_folder_refusal_is_one_cli_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    export_skill(tmp_path, topology="math")
    monkeypatch.setattr("sys.argv", ["dytopo", "skill", "export", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {tmp_path / SKILL_NAME} already exists with other content (another version, "
        "or settings saved in AnythingLLM): pass --force to replace it"
    ]
