"""`dytopo init DIR`: a working folder with role cards, topologies, documents and a sample tool."""

from __future__ import annotations

import shlex
from itertools import groupby
from pathlib import Path

import typer

from dytopo.cli._common import out
from dytopo.scaffold import write_scaffold

FIRST_RUN = "topologies/research.yaml"


def init(
    directory: Path = typer.Argument(..., help="Folder to create or fill, e.g. my-swarms."),
    force: bool = typer.Option(
        False, "--force", help="Overwrite files the scaffold writes that exist already."
    ),
) -> None:
    """Write a working folder (role cards, topologies, documents, a sample tool, a README) so
    that `dytopo run topologies/research.yaml` works in it at once."""
    written = write_scaffold(directory, force=force)
    replaced = f", {len(written.replaced)} of them replaced" if written.replaced else ""
    say(f"wrote {len(written.files)} files in {directory}{replaced}:")
    for folder, group in groupby(written.files, key=lambda p: p.parent):
        names = ", ".join(p.name for p in group)
        say(f"  {folder}/: {names}" if folder != Path(".") else f"  {names}")
    here = shlex.quote(str(directory))
    say(f"next: cd {here} && dytopo validate topologies/*.yaml && dytopo run {FIRST_RUN}")


def say(text: str) -> None:
    out.print(text, markup=False, highlight=False, soft_wrap=True)
