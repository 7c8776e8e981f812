"""A topology variant for one run of a batch: its mode, and the item's own overrides."""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from dytopo.errors import ConfigError
from dytopo.topology import Topology

_SHORT = reprlib.Repr()
"""A value in an error line: a task file may hold a huge or deeply nested one."""
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 2, 40, 40

OVERRIDES = ("rounds", "seed", "tau")
"""What a batch item may change: max_rounds (min_rounds follows when above it), seed,
routing.tau."""


def with_overrides(
    topology: Topology, mode: str | None = None, overrides: Mapping[str, Any] | None = None
) -> Topology:
    """`topology` in `mode` with `overrides`, validated like the file's own values."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        shown = ", ".join(k if len(k) <= 40 else k[:40] + "..." for k in unknown[:5])
        raise ConfigError(
            f"unknown override {shown}{' ...' if len(unknown) > 5 else ''}: a batch item may "
            f"set {', '.join(OVERRIDES)}"
        )
    data = topology.model_dump()
    if mode is not None:
        data["routing"]["mode"] = mode
    if "tau" in overrides:
        data["routing"]["tau"] = overrides["tau"]
    if "rounds" in overrides:
        data["max_rounds"] = overrides["rounds"]
        if isinstance(overrides["rounds"], int):
            data["min_rounds"] = min(topology.min_rounds, overrides["rounds"])
    if "seed" in overrides:
        data["seed"] = overrides["seed"]
    try:
        return Topology.model_validate(data)
    except ValidationError as exc:
        lines = []
        for e in exc.errors(include_url=False):
            where = ".".join(str(p) for p in e["loc"]) or "override"
            lines.append(f"{where} {_SHORT.repr(e.get('input'))}: {e['msg']}")
        raise ConfigError("\n".join(lines)) from None
