"""The build step that puts the repository's built-in tools, role cards, topologies and example
documents into the wheel (pyproject.toml: [tool.setuptools.cmdclass]).

They are committed once, at the top level (tools/, agents/, topologies/, examples/docs/). After
the ordinary build_py, this copies them to where an installed wheel reads them:
build/lib/dytopo/scaffold/builtin_tools/ and build/lib/dytopo/scaffold/folder/ (what `dytopo
init` writes); the table is dytopo/scaffold/sources.py. A source folder that is missing or empty
stops the build, so a wheel never ships without them. An editable install copies nothing: it runs
from the checkout, whose top-level folders the runtime reads directly.
"""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path

from setuptools.command.build_py import build_py
from setuptools.errors import FileError

ROOT = Path(__file__).resolve().parent


def copied(root: Path = ROOT) -> list[tuple[Path, Path]]:
    """(source file, destination relative to the build's root) for every file copied."""
    table = runpy.run_path(str(root / "dytopo" / "scaffold" / "sources.py"))["COPIED"]
    pairs = []
    for source, dest, pattern in table:
        files = sorted(p for p in (root / source).glob(pattern) if p.is_file())
        if not files:
            raise FileError(f"no {pattern} in {root / source}: the wheel must carry them")
        pairs += [(path, Path("dytopo", dest, path.name)) for path in files]
    return pairs


def copy_into(build_lib: Path, root: Path = ROOT) -> list[Path]:
    """Copy every file into `build_lib`, replacing what an earlier build left in its folders."""
    pairs = copied(root)
    for folder in {dest.parent for _, dest in pairs}:
        shutil.rmtree(build_lib / folder, ignore_errors=True)
    for source, dest in pairs:
        (build_lib / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, build_lib / dest)
    return [build_lib / dest for _, dest in pairs]


class BuildPy(build_py):
    """build_py, then the top-level files copied into the package (not in editable mode)."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            copy_into(Path(self.build_lib))
