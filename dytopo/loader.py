"""Reading topology YAML with errors that point at FILE:LINE and say what to do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from dytopo.cards import CardError, find_card
from dytopo.errors import ConfigError
from dytopo.tools.registry import ToolRegistry
from dytopo.topology import Topology

Loc = tuple[str | int, ...]


def _line_map(node: yaml.Node, path: Loc = ()) -> dict[Loc, int]:
    lines: dict[Loc, int] = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            lines.update(_line_map(value, (*path, str(key.value))))
            lines[(*path, str(key.value))] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.update(_line_map(item, (*path, index)))
    return lines


def _fields(model: type[BaseModel], loc: Loc) -> list[str]:
    """Known field names at `loc`, to suggest when a key is unknown."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        current = next((a for a in (annotation, *args) if hasattr(a, "model_fields")), None)
    return sorted(getattr(current, "model_fields", {}))


def _hint(error: Any, loc: Loc) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        known = _fields(Topology, loc[:-1])
        return f"unknown key; remove it or fix the spelling (known: {', '.join(known)})"
    if kind == "missing":
        return "required; add it"
    return str(error["msg"])


def problems_in(path: Path) -> tuple[Topology | None, list[str]]:
    """Parse and validate a topology file; return it (or None) and one line per problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [f"{path}: cannot read: {exc.strerror} (check the path)"]
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(exc, "problem", None) or str(exc)
        return None, [f"{path}:{line}: YAML syntax: {problem} (fix the indentation or quoting)"]
    if not isinstance(data, dict) or root is None:
        return None, [f"{path}:1: the file must be a YAML mapping with `name` and `agents`"]
    lines = _line_map(root)
    try:
        topology = Topology.model_validate(data)
    except ValidationError as exc:
        out = []
        for error in exc.errors():
            loc: Loc = tuple(error["loc"])
            known = next((loc[:k] for k in range(len(loc), -1, -1) if loc[:k] in lines), ())
            dotted = ".".join(str(p) for p in loc) or "(top level)"
            out.append(f"{path}:{lines.get(known, 1)}: {dotted}: {_hint(error, loc)}")
        return None, out
    out = []
    for index, agent in enumerate(topology.agents):
        try:
            find_card(agent.card or agent.id, path.parent)
        except CardError as exc:
            line = lines.get(("agents", index, "card"), lines.get(("agents", index), 1))
            out.append(f"{path}:{line}: agents.{index}.card: {exc}")
    try:
        registry = ToolRegistry.discover(topology.tool_modules, path.parent)
    except ConfigError as exc:
        out.append(f"{path}:{lines.get(('tool_modules',), 1)}: tool_modules: {exc}")
        registry = ToolRegistry()
    tool_names = set(registry.names())
    for index, agent in enumerate(topology.agents):
        for k, name in enumerate(agent.tools):
            if name not in tool_names:
                line = lines.get(("agents", index, "tools", k), 1)
                out.append(
                    f"{path}:{line}: agents.{index}.tools.{k}: unknown tool {name!r} "
                    f"(available: {', '.join(sorted(tool_names)) or 'none'})"
                )
    try:
        find_card(topology.manager.card, path.parent)
    except CardError as exc:
        out.append(f"{path}:{lines.get(('manager',), 1)}: manager.card: {exc}")
    return (None, out) if out else (topology, [])


def load_topology(path: str | Path) -> Topology:
    """Load a topology file or raise ConfigError listing every problem."""
    topology, problems = problems_in(Path(path))
    if topology is None:
        raise ConfigError("\n".join(problems))
    return topology
