"""`dytopo init`: a working folder for someone who installed the package rather than cloned it.

What `init` writes: the role cards, topologies and documents the repository runs (its top-level
agents/, topologies/, examples/docs/, each committed once there) plus what only the scaffold has
(`folder/`: a README and a sample tool). From a source checkout (an editable install) those come
from the top-level folders themselves; a wheel has no repository, so its build copies them into
`folder/`, and the built-in tools (tools/) into `builtin_tools/` (build_scaffold.py, with the
table in `sources.py`). An installed package therefore reads `folder/` alone.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple

from dytopo.errors import ConfigError, DyTopoError
from dytopo.scaffold.sources import COPIED

FOLDER = Path(__file__).resolve().parent / "folder"
"""The folder `init` copies: in a checkout only the scaffold's own files, in a wheel all of them."""
_ROOT = Path(__file__).resolve().parents[2]
CHECKOUT = _ROOT if (_ROOT / "pyproject.toml").is_file() else None
"""The source checkout the package runs from, or None in an installed wheel (never read
site-packages/agents: another distribution's)."""
_IN_FOLDER = "scaffold/folder/"
_SKIP = {"__pycache__", ".mypy_cache", ".ruff_cache"}


class Written(NamedTuple):
    """What `write_scaffold` did, as paths inside the destination."""

    files: list[Path]
    replaced: list[Path]
    """Files that existed and were overwritten (only with force)."""


def _sources() -> dict[Path, Path]:
    """Every file `init` writes (relative to the destination) and the file it copies, sorted."""
    found = {}
    for path in FOLDER.rglob("*"):
        rel = path.relative_to(FOLDER)
        if path.is_file() and path.suffix != ".pyc" and not _SKIP.intersection(rel.parts):
            found[rel] = path
    if CHECKOUT is not None:
        for source, dest, pattern in COPIED:
            if dest.startswith(_IN_FOLDER):
                rel_folder = Path(dest.removeprefix(_IN_FOLDER))
                for path in (CHECKOUT / source).glob(pattern):
                    if path.is_file():
                        found[rel_folder / path.name] = path
    return dict(sorted(found.items()))


def scaffold_files() -> list[Path]:
    """Every file `init` writes, relative to the destination, sorted."""
    return list(_sources())


def _occupied(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def write_scaffold(dest: Path, *, force: bool = False) -> Written:
    """Copy the scaffold into `dest` (created when missing).

    Without `force`, nothing is written when any of its files exists already: ConfigError names
    the first one. With `force` those files are replaced (a symlink is replaced, never written
    through); other files in `dest` are left alone."""
    if _occupied(dest) and not dest.is_dir():
        raise ConfigError(f"{dest} exists and is not a folder; give a new or an existing folder")
    sources = _sources()
    files = list(sources)
    taken = [rel for rel in files if _occupied(dest / rel)]
    if taken and not force:
        raise ConfigError(
            f"{dest / taken[0]} exists; pass --force to overwrite the scaffold's files "
            "(other files stay), or choose another folder"
        )
    for rel in taken:
        if (dest / rel).is_dir() and not (dest / rel).is_symlink():
            raise ConfigError(f"{dest / rel} is a folder; move it away to write the scaffold")
    try:
        for rel in files:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink():
                target.unlink()
            shutil.copyfile(sources[rel], target)
    except OSError as exc:
        where = exc.filename or dest
        raise DyTopoError(f"cannot write {where}: {exc.strerror or exc}") from None
    return Written(files, taken)


__all__ = ["CHECKOUT", "FOLDER", "Written", "scaffold_files", "write_scaffold"]
