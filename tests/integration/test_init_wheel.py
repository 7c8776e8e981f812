"""`dytopo init` from an installed wheel, not the repository: the folder it writes validates.

The wheel carries the repository's top-level tools/, agents/, topologies/ and examples/docs/ only
because its build copies them (build_scaffold.py): this is the test that sees a wheel without them.

No llama-server is needed (validation runs no model), so this test does not use `stack`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _build_wheel(tmp: Path) -> Path:
    """A wheel built from a clean copy of the sources (a stale build/ in the checkout would
    leak deleted files into it): the package and the top-level folders its build copies in."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "MANIFEST.in", "build_scaffold.py"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("dytopo", "tools", "agents", "topologies", "examples"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    # pyproject needs setuptools>=77; with an older one in the venv pip builds in an isolated
    # environment (from the package index) instead.
    isolation = [] if int(version("setuptools").split(".")[0]) < 77 else ["--no-build-isolation"]
    wheels = tmp / "wheels"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", wheels, src],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = wheels.glob("dytopo-*.whl")
    return wheel


def _dytopo(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Only the installed wheel on the path: no editable install, no repo checkout.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DYTOPO_", "PYTHON"))}
    env["PYTHONPATH"] = str(site)
    return subprocess.run(
        [sys.executable, "-s", "-m", "dytopo", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_init_from_an_installed_wheel_writes_a_folder_that_validates(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    # Every top-level tool, card, topology and document, where an installed package reads it.
    for source, copy in [
        ("tools", "builtin_tools"),
        ("agents", "folder/agents"),
        ("topologies", "folder/topologies"),
        ("examples/docs", "folder/examples/docs"),
    ]:
        files = sorted(p.name for p in (ROOT / source).iterdir() if p.is_file())
        assert files, source
        shipped = sorted(
            n.rsplit("/", 1)[1] for n in names if n.startswith(f"dytopo/scaffold/{copy}/")
        )
        assert shipped == files, source
    assert "dytopo/scaffold/builtin_tools/search_docs.py" in names
    assert "dytopo/scaffold/folder/agents/researcher.md" in names
    assert "dytopo/scaffold/folder/README.md" in names
    assert "dytopo/scaffold/folder/tools/word_count.py" in names
    # Nothing outside the package: no top-level tools/ or build hook in site-packages.
    assert [n for n in names if not n.startswith(("dytopo/", "dytopo-0"))] == []
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, wheel]
    done = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    outside = tmp_path / "elsewhere"
    outside.mkdir()

    where = subprocess.run(
        [sys.executable, "-s", "-c", "import dytopo; print(dytopo.__file__)"],
        cwd=outside,
        env={"PYTHONPATH": str(site), "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr
    # Built-in cards and tools come from the package, never from site-packages/agents or /tools
    # (any distribution's folders): planted ones must not be read.
    for planted in ("agents", "tools"):
        (site / planted).mkdir()
    (site / "agents" / "researcher.md").write_text("PLANTED", encoding="utf-8")
    builtin = subprocess.run(
        [
            sys.executable,
            "-s",
            "-c",
            "from dytopo.agents.cards import BUILTIN_CARDS; from dytopo.tools.static import "
            "BUILTIN_TOOLS; print(BUILTIN_CARDS); print(BUILTIN_TOOLS)",
        ],
        cwd=outside,
        env={"PYTHONPATH": str(site), "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    cards, tools = (Path(line) for line in builtin.stdout.split())
    assert cards == site / "dytopo" / "scaffold" / "folder" / "agents", builtin.stderr
    assert tools == site / "dytopo" / "scaffold" / "builtin_tools"

    made = _dytopo(site, outside, "init", "x")
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines()[-1].startswith("next: cd x && dytopo validate")
    folder = outside / "x"
    for part in ("agents", "examples/docs"):
        assert sorted(p.name for p in (folder / part).iterdir()) == sorted(
            p.name for p in (ROOT / part).iterdir()
        ), part
    topologies = sorted(str(p.relative_to(folder)) for p in (folder / "topologies").glob("*.yaml"))
    assert topologies == [
        "topologies/code.yaml",
        "topologies/humaneval.yaml",
        "topologies/math.yaml",
        "topologies/research.yaml",
    ]

    checked = _dytopo(site, folder, "validate", *topologies)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.splitlines() == [f"{t}: OK" for t in topologies]
    # The research swarm's researcher searches the docs with a built-in tool the wheel carries.
    listed = _dytopo(site, folder, "tools", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"search_docs"' in listed.stdout
    # Built-in tools run from the wheel: search_docs over the documents init wrote, calculator.
    found = _dytopo(
        site,
        folder,
        "tools",
        "call",
        "search_docs",
        "--docs",
        "examples/docs",
        "--args",
        '{"query": "LRU eviction", "k": 1}',
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith("[1] lru-eviction.md")
    sums = _dytopo(site, folder, "tools", "call", "calculator", "--args", '{"expression": "6*7"}')
    assert sums.returncode == 0, sums.stderr
    assert sums.stdout.strip() == "42"
    again = _dytopo(site, outside, "init", "x")
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"error: {Path('x') / 'README.md'} exists; pass --force to overwrite the scaffold's "
        "files (other files stay), or choose another folder"
    ]
