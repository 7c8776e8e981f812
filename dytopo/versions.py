"""DyTopo's version, and the versions recorded in every trace, so a run can be reproduced."""

from __future__ import annotations

import functools
import platform
from importlib import metadata

__version__ = "0.1.0"


def versions() -> dict[str, str]:
    return dict(_versions())


@functools.cache  # reading package metadata takes tens of milliseconds
def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("dytopo", "httpx", "pydantic", "networkx", "tenacity"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "unknown"
    return out
