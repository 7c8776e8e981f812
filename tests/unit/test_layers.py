"""The package's layers hold: `lint-imports` keeps the contracts of [tool.importlinter] in
pyproject.toml (nothing imports from a layer above its own, no import cycles at any level), and
it breaks them when a module imports upwards or in a circle. Every subpackage says what it owns."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = (
    "import sys\n"
    "from importlinter.cli import lint_imports\n"
    "sys.exit(lint_imports('pyproject.toml', no_cache=True, no_logo=True))\n"
)


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports run in `root`, on its pyproject.toml and its dytopo/ (not the installed one)."""
    return subprocess.run(
        [sys.executable, "-c", LINT],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=100,
    )


def test_the_import_contracts_are_kept() -> None:
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout, done.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken", "shown"),
    [
        # An agent reading the run's result: agents/ sits below swarm/ (and swarm imports agents).
        (
            "agents/base.py",
            "import dytopo.swarm.result",
            ["layers", "cycles"],
            "dytopo.agents.base -> dytopo.swarm.result",
        ),
        # The bottom layer importing a surface.
        (
            "errors.py",
            "from dytopo.cli import app",
            ["layers", "cycles"],
            "dytopo.errors -> dytopo.cli",
        ),
        # Inside one package, below the layers' reach: runlock <- trace <- loop.
        (
            "swarm/runlock.py",
            "from dytopo.swarm.loop import Swarm",
            ["cycles"],
            ".runlock -> .loop",
        ),
    ],
)
def test_an_upward_or_circular_import_breaks_a_contract(
    tmp_path: Path, module: str, line: str, broken: list[str], shown: str
) -> None:
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(
        ROOT / "dytopo", tmp_path / "dytopo", ignore=shutil.ignore_patterns("__pycache__")
    )
    target = tmp_path / "dytopo" / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")
    done = lint(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    names = {
        "layers": "dytopo layers: nothing imports from a layer above its own BROKEN",
        "cycles": "no import cycles between the modules or subpackages of any package BROKEN",
    }
    assert [k for k, name in names.items() if name in done.stdout] == broken, done.stdout
    assert shown in done.stdout, done.stdout  # the import to remove


def test_every_subpackage_says_what_it_owns_in_one_line() -> None:
    packages = sorted(p.parent for p in (ROOT / "dytopo").glob("*/__init__.py"))
    assert len(packages) >= 17
    for package in packages:
        source = (package / "__init__.py").read_text(encoding="utf-8")
        docstring = ast.get_docstring(ast.parse(source), clean=False) or ""
        first, _, rest = docstring.partition("\n")
        assert first.strip().endswith("."), (package.name, first)
        assert rest == "" or rest.startswith("\n"), (package.name, "a one-line summary first")
