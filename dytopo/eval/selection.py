"""Which problems of a benchmark an eval runs: the first N, a named list, or a seeded sample.

The sample is a pure function of (seed, problem id), not of Python's `random` (whose `sample`
may change between versions): each id is ranked by the SHA-256 of `seed:id`, the lowest N are
taken and run in the benchmark's order. The same seed gives the same problems on any machine,
and a sample of N is the first N of a sample of N + 1 in rank, so growing it keeps what ran.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from dytopo.batch import BatchItem
from dytopo.errors import ConfigError


def _rank(seed: int, item_id: str) -> bytes:
    return hashlib.sha256(f"{seed}:{item_id}".encode()).digest()


def sample(items: Sequence[BatchItem], size: int, seed: int) -> list[BatchItem]:
    """`size` items chosen by `seed` (see the module docstring), in the benchmark's order."""
    if not 1 <= size <= len(items):
        raise ConfigError(f"--sample {size}: give a number of problems from 1 to {len(items)}")
    chosen = set(sorted(range(len(items)), key=lambda k: _rank(seed, items[k].id))[:size])
    return [item for k, item in enumerate(items) if k in chosen]


def _find(items: Sequence[BatchItem], name: str) -> int:
    """The index of the item called `name`: its id, or the number after the id's last `/`."""
    for k, item in enumerate(items):
        if item.id == name or item.id.rsplit("/", 1)[-1] == name:
            return k
    shown = f"{items[0].id} to {items[-1].id}" if items else "none"
    raise ConfigError(f"--problems: no problem {name!r} in this benchmark (it has {shown})")


def named(items: Sequence[BatchItem], names: str) -> list[BatchItem]:
    """The items `names` lists ("HumanEval/3,HumanEval/17" or "3,17"), in the benchmark's order,
    each once."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted:
        raise ConfigError("--problems: give problem ids, e.g. HumanEval/3,HumanEval/17 or 3,17")
    found = {_find(items, name) for name in wanted}
    return [items[k] for k in sorted(found)]


def select(
    items: Sequence[BatchItem],
    *,
    problems: str | None = None,
    sample_size: int | None = None,
    seed: int | None = None,
    limit: int | None = None,
    default_limit: int = 5,
) -> list[BatchItem]:
    """The items an eval runs: `problems`, a `sample_size` sample by `seed`, or the first
    `limit` (`default_limit` when nothing is asked). ConfigError (one line) for combinations
    that contradict each other."""
    given = [
        flag
        for flag, value in (("--problems", problems), ("--sample", sample_size), ("--limit", limit))
        if value is not None
    ]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)} each choose the problems: give only one of them")
    if seed is not None and sample_size is None:
        raise ConfigError(f"--seed {seed} chooses a sample: give it with --sample N")
    if problems is not None:
        return named(items, problems)
    if sample_size is not None:
        return sample(items, sample_size, seed or 0)
    count = default_limit if limit is None else limit
    if count < 1:
        raise ConfigError(f"--limit {count}: give a number of problems of at least 1")
    return list(items[:count])
