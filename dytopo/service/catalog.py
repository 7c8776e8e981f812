"""Which topology a request names: a file in the service's folder, or an inline one, with the
caller's overrides merged in and validated like a file's own fields."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from dytopo.agents.cards import find_card
from dytopo.errors import ConfigError, UnknownTopology
from dytopo.loader import load_topology, problems_in
from dytopo.service.models import RunRequest
from dytopo.topology import Topology

log = structlog.get_logger("dytopo.service")

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""A topology name: no dots, slashes or escapes, so it can only name a file in the folder."""


@dataclass(frozen=True)
class Chosen:
    """The topology a run runs with."""

    label: str
    """`research`, or `inline:<name>`."""
    topology: Topology
    source: Path | None
    """The named file (checkpoints name it, so `dytopo resume` can rebuild the swarm)."""


def topology_file(folder: Path, name: str) -> Path:
    """`folder/name.yaml`, refusing any name that could leave the folder."""
    if not NAME.fullmatch(name):
        raise ConfigError(
            f"topology {name[:80]!r} is not a topology name (letters, digits, - and _, no "
            "paths): GET /v1/topologies lists them"
        )
    root = folder.resolve()
    path = root / f"{name}.yaml"
    # A symlink in the folder pointing elsewhere is not the folder's.
    if not path.is_file() or not path.resolve().is_relative_to(root):
        raise UnknownTopology(
            f"no topology {name!r} in the service's topologies folder: GET /v1/topologies "
            "lists them"
        )
    return path


def choose(request: RunRequest, folder: Path, default: str) -> Chosen:
    """The request's topology, overrides applied; ConfigError (one line) when it is refused.
    The request passed `admission.admit` first: it sets only what a caller may."""
    if request.inline is not None:
        if request.topology is not None:
            raise ConfigError("give either topology (a name) or inline (a topology), not both")
        topology = _validated(_merged(request.inline, request.overrides), "inline")
        if any(agent.tools for agent in topology.agents):  # admit refused them; never reached
            raise ConfigError("inline: an inline topology's agents get no tools")
        for card in [*(a.card or a.id for a in topology.agents), topology.manager.card]:
            _inline_card(card, folder)
        return Chosen(f"inline:{topology.name}", topology, None)
    name = default if request.topology is None else request.topology
    path = topology_file(folder, name)
    loaded = load_topology(path)
    topology = loaded
    if request.overrides:
        base = loaded.model_dump(mode="json")
        topology = _validated(_merged(base, request.overrides), name)
    return Chosen(name, topology, path)


def _inline_card(name: str, folder: Path) -> None:
    """An inline topology's card comes from an agents/ folder (the service's or the shipped
    one): any other Markdown file in the topologies folder would be sent to the LLM server
    as a prompt, and could come back in the answer."""
    path = find_card(name, folder)
    if path.parent.resolve() == folder.resolve():
        raise ConfigError(
            f"inline: role card {name!r} is not in an agents/ folder; an inline topology uses "
            "the service's role cards (or name a topology from GET /v1/topologies)"
        )


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    # Fewer rounds than the file's min_rounds: the caller asked for fewer, not for an error.
    if "max_rounds" in overrides and "min_rounds" not in overrides:
        low, high = out.get("min_rounds", 2), out["max_rounds"]
        if isinstance(low, int) and isinstance(high, int) and low > high >= 1:
            out["min_rounds"] = high
    return out


def _validated(data: dict[str, Any], where: str) -> Topology:
    try:
        return Topology.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{where}: {field}: {first['msg']}{more}") from None


def listing(folder: Path) -> list[dict[str, Any]]:
    """The topologies a caller may name, as short dicts; a broken file is left out (logged)."""
    rows: list[dict[str, Any]] = []
    root = folder.resolve()
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        if not NAME.fullmatch(path.stem) or not path.resolve().is_relative_to(root):
            continue
        topology, problems = problems_in(path)
        if topology is None:
            log.warning("service.topology_skipped", file=str(path), problem=problems[:1])
            continue
        rows.append(
            {
                "name": path.stem,
                "description": topology.description,
                "agents": [a.id for a in topology.agents],
                "mode": topology.routing.mode,
                "max_rounds": topology.max_rounds,
            }
        )
    return rows
