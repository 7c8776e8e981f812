"""Write the `dytopo-swarm` AnythingLLM agent skill into AnythingLLM's skills folder."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Any

from dytopo.backends.settings import url_problem
from dytopo.errors import ConfigError

SKILL_NAME = "dytopo-swarm"
"""Folder name, hubId and name at once: AnythingLLM finds handler.js under <hubId>/."""

SKILL_FILES = ("plugin.json", "handler.js", "README.md")

_TOPOLOGY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def skill_files() -> dict[str, bytes]:
    """The packaged skill, file name -> content."""
    folder = files("dytopo.skill").joinpath(SKILL_NAME)
    return {name: folder.joinpath(name).read_bytes() for name in SKILL_FILES}


def _settings(
    url: str | None, token: str | None, topology: str | None, timeout_s: float | None
) -> dict[str, str]:
    """The setup-arg values to preset, checked; ConfigError naming the option and the fix."""
    values: dict[str, str] = {}
    if url is not None:
        if "@" in url.split("://", 1)[-1].split("/", 1)[0]:
            # Never echoed: the part before "@" is a password. fetch refuses such a URL anyway.
            raise ConfigError(
                "--url holds a user name or password (before '@'): give the service's root URL "
                "without them, and its token with --token"
            )
        problem = url_problem(url)
        if problem:
            raise ConfigError(f"--url: {problem}")
        values["DYTOPO_URL"] = url.rstrip("/")
    if token is not None:
        # The same rule as `dytopo serve --token`: it travels in an HTTP header.
        if not token or not token.isascii() or not token.isprintable() or " " in token:
            raise ConfigError("--token: give the service's token: printable ASCII, no spaces")
        values["DYTOPO_TOKEN"] = token
    if topology is not None:
        if not _TOPOLOGY_NAME.fullmatch(topology) or ".." in topology:
            raise ConfigError(
                f"--topology {topology!r}: give a topology name such as research "
                "(letters, digits, '_', '-', '.'; no folders)"
            )
        values["DYTOPO_TOPOLOGY"] = topology
    if timeout_s is not None:
        if not (math.isfinite(timeout_s) and 0 < timeout_s <= 7 * 86_400):
            raise ConfigError(f"--timeout {timeout_s}: give seconds between 0 and 604800")
        values["DYTOPO_TIMEOUT_S"] = f"{timeout_s:g}"
    return values


def render_skill(
    *,
    url: str | None = None,
    token: str | None = None,
    topology: str | None = None,
    timeout_s: float | None = None,
) -> dict[str, bytes]:
    """The skill's files with the given setup-arg values preset.

    AnythingLLM's loader hands a setup arg's `value` (else a top-level `default`) to the handler
    and its UI shows `value` too; the nested `input.default` is used by neither at run time,
    so `value` carries the setting.
    """
    rendered = skill_files()
    values = _settings(url, token, topology, timeout_s)
    if values:
        manifest: dict[str, Any] = json.loads(rendered["plugin.json"])
        for name, value in values.items():
            manifest["setup_args"][name]["value"] = value
        rendered["plugin.json"] = (json.dumps(manifest, indent=2) + "\n").encode()
    return rendered


def _current(folder: Path) -> dict[str, bytes] | None:
    """The folder's files when it holds only regular files (no links, no subfolders)."""
    if folder.is_symlink() or not folder.is_dir():
        return None
    found: dict[str, bytes] = {}
    for entry in folder.iterdir():
        if entry.is_symlink() or not entry.is_file():
            return None
        found[entry.name] = entry.read_bytes()
    return found


def export_skill(
    dest: Path,
    *,
    url: str | None = None,
    token: str | None = None,
    topology: str | None = None,
    timeout_s: float | None = None,
    force: bool = False,
) -> Path:
    """Write DEST/dytopo-swarm and return it; an identical folder is left as it is.

    DEST is AnythingLLM's `plugins/agent-skills` folder. An existing skill folder with other
    content (an older version, settings saved in AnythingLLM's UI, someone else's files) is
    replaced only with `force`; the new folder is complete before it takes the old one's place.
    """
    wanted = render_skill(url=url, token=token, topology=topology, timeout_s=timeout_s)
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{dest} is not a folder: give AnythingLLM's plugins/agent-skills folder")
    target = dest / SKILL_NAME
    if target.exists() or target.is_symlink():
        if _current(target) == wanted:
            return target
        if not force:
            raise ConfigError(
                f"{target} already exists with other content (another version, or settings "
                "saved in AnythingLLM): pass --force to replace it"
            )
    try:
        dest.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{SKILL_NAME}-", dir=dest))
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror or exc}") from exc
    try:
        for name, content in wanted.items():
            (staging / name).write_bytes(content)
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the skill from AnythingLLM's own user
        _replace(staging, target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ConfigError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return target


def _replace(staging: Path, target: Path) -> None:
    """Put `staging` at `target`; the old content moves aside first and goes only at the end."""
    old: Path | None = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{SKILL_NAME}-old-{os.getpid()}")
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
