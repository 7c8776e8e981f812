"""The topology a resumed run continues with, and what its checkpoint may say about it.

A checkpoint is data: anyone who can write the runs folder can edit it, and a resume must not
run what its user did not choose. So the topology is always rebuilt from its file, loaded
under the same rules as `dytopo run` (tool modules from the file's folder tree unless
--trust-topology, its workspace, its servers). The snapshot in the checkpoint contributes only
the values a run's own options set (`RUN_OPTIONS`: --mode, --tau, --rounds, --seed, a batch
item's overrides, a batch run's share of the server's slots), and only while the file is the
one the run started from (same hash). Any other difference from the file is refused in one
line; with --force the run goes on with the file as it is now, options included.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from dytopo.errors import ConfigError
from dytopo.topology import Topology

RUN_OPTIONS: tuple[tuple[str, ...], ...] = (
    ("routing", "mode"),
    ("routing", "tau"),
    ("routing", "top_k"),
    ("max_rounds",),
    ("min_rounds",),
    ("seed",),
    ("backend", "slots"),
)
"""The only fields a checkpoint's snapshot may set (a run's options); the rest comes from the
topology file."""


def with_run_options(current: Topology, snapshot: dict[str, Any]) -> Topology:
    """`current` (the file's topology) with the snapshot's values of `RUN_OPTIONS`, validated
    like the file's own values. ConfigError (one line) when one is not valid."""
    data = current.model_dump(mode="json")
    for path in RUN_OPTIONS:
        found, value = _get(snapshot, path)
        if found:
            _set(data, path, value)
    try:
        return Topology.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "topology"
        raise ConfigError(
            f"the checkpoint's topology has an invalid {where} ({first['msg']}): it was "
            "edited; resume with --force to continue with the topology file as it is"
        ) from None


def _get(data: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return False, None
        data = data[key]
    return True, data


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    *parents, last = path
    for key in parents:
        data = data[key]  # the file's own dump: every parent of a RUN_OPTION is there
    data[last] = value
