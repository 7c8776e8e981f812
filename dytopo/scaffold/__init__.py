"""`dytopo init`: a working folder for someone who installed the package rather than cloned it.

A wheel has no repository, so what the repository runs from ships here as package data:
`folder/` is exactly what `init` writes (role cards, topologies, the documents search_docs
reads, a sample tool, a README) and `builtin_tools/` is what an installed wheel loads as its
built-in tools. The repository's agents/, topologies/, examples/docs/ and tools/ stay the source
(the repo runs them, people edit them there); these are byte-identical copies that
tests/unit/test_scaffold.py compares file by file, printing the `cp` that fixes a difference.
Copies with a test rather than symlinks (one file under two module names breaks mypy, and
checkouts without symlink support break silently) or a build step that copies (a wheel built
without it would ship nothing, and no test would notice).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple

from dytopo.errors import ConfigError, DyTopoError

FOLDER = Path(__file__).resolve().parent / "folder"
"""The folder `init` copies."""
_SKIP = {"__pycache__", ".mypy_cache", ".ruff_cache"}


class Written(NamedTuple):
    """What `write_scaffold` did, as paths inside the destination."""

    files: list[Path]
    replaced: list[Path]
    """Files that existed and were overwritten (only with force)."""


def scaffold_files() -> list[Path]:
    """Every file `init` writes, relative to the destination, sorted."""
    found = []
    for path in FOLDER.rglob("*"):
        rel = path.relative_to(FOLDER)
        if path.is_file() and path.suffix != ".pyc" and not _SKIP.intersection(rel.parts):
            found.append(rel)
    return sorted(found)


def _occupied(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def write_scaffold(dest: Path, *, force: bool = False) -> Written:
    """Copy the scaffold into `dest` (created when missing).

    Without `force`, nothing is written when any of its files exists already: ConfigError names
    the first one. With `force` those files are replaced (a symlink is replaced, never written
    through); other files in `dest` are left alone."""
    if _occupied(dest) and not dest.is_dir():
        raise ConfigError(f"{dest} exists and is not a folder; give a new or an existing folder")
    files = scaffold_files()
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
            shutil.copyfile(FOLDER / rel, target)
    except OSError as exc:
        where = exc.filename or dest
        raise DyTopoError(f"cannot write {where}: {exc.strerror or exc}") from None
    return Written(files, taken)


__all__ = ["FOLDER", "Written", "scaffold_files", "write_scaffold"]
