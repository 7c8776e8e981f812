"""Reading topology YAML with errors that point at FILE:LINE and say what to do.

Reading is static and bounded: the file is parsed once (libyaml when compiled in) into plain data
and a line map, with no aliases, no duplicate keys, no custom tags, no non-finite numbers and a
nesting limit; tool modules are checked by reading their source, never by importing them.
"""

from __future__ import annotations

import codecs
import math
import stat
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from dytopo.agents.cards import load_card
from dytopo.errors import CardError, ConfigError
from dytopo.tools.static import check_confined, installed_tool_names, tool_names
from dytopo.topology import Topology

Loc = tuple[str | int, ...]

MAX_BYTES = 1_000_000
"""Largest topology file; real ones are a few KB (long instructions belong in role cards)."""
MAX_DEPTH = 32
MAX_PROBLEMS = 20
"""Problems shown per file; the rest are counted."""
_INT_LIMIT = 2**63
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YAML = "tag:yaml.org,2002:"
_STR = _YAML + "str"
_SCALAR_TAGS = {_YAML + t for t in ("null", "bool", "int", "float", "str", "timestamp")}
_COLLECTION_TAGS = {None, "!", _YAML + "map", _YAML + "seq"}
_BOMS = (codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


class _Problem(Exception):
    """One problem that stops reading the file."""

    def __init__(self, line: int, field: str, fix: str) -> None:
        super().__init__(fix)
        self.line, self.field, self.fix = line, field, fix


def _dotted(loc: Loc) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _printable(text: str, limit: int = 300) -> str:
    """One line without control characters (keys come from the file, and reach a terminal)."""
    clean = (
        text
        if text.isprintable()
        else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    )
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def _read(path: Path) -> str:
    try:
        # A FIFO or device would block or never end: read regular files only.
        if not stat.S_ISREG(path.stat().st_mode):
            raise _Problem(1, "file", "not a regular file (give the path of a .yaml file)")
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise _Problem(1, "file", f"cannot read: {reason} (check the path)") from None
    if len(raw) > MAX_BYTES:
        raise _Problem(
            1,
            "file",
            f"larger than {MAX_BYTES:,} bytes; a topology is a few KB: move long "
            "instructions into role cards",
        )
    if raw.startswith(_BOMS):
        raise _Problem(1, "encoding", "the file is UTF-16 or UTF-32; save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        byte = raw[exc.start]
        raise _Problem(line, "encoding", f"byte 0x{byte:02x} is not UTF-8; save as UTF-8") from None


class _Open:
    """A mapping or sequence being filled, and where it sits."""

    __slots__ = ("container", "key", "path")

    def __init__(self, container: dict[str, Any] | list[Any], path: Loc) -> None:
        self.container = container
        self.path = path
        self.key: str | None = None

    def wants_key(self) -> bool:
        return isinstance(self.container, dict) and self.key is None

    def child(self) -> Loc:
        if isinstance(self.container, dict):
            assert self.key is not None
            return (*self.path, self.key)
        return (*self.path, len(self.container))

    def add(self, value: Any) -> None:
        if isinstance(self.container, dict):
            assert self.key is not None
            self.container[self.key] = value
            self.key = None
        else:
            self.container.append(value)


def _scalar(loader: Any, event: yaml.ScalarEvent, loc: Loc, line: int) -> Any:
    tag = event.tag
    if tag is None or tag == "!":
        tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
    if tag == _STR:
        return event.value
    if tag not in _SCALAR_TAGS:
        raise _Problem(line, _dotted(loc), f"the YAML tag {tag} is not allowed; remove it")
    node = yaml.ScalarNode(tag, event.value, style=event.style)
    kind = tag.removeprefix(_YAML)
    try:
        value = loader.yaml_constructors[tag](loader, node)
    except ValueError:  # e.g. an int of more than 4,300 digits, or a date like 2024-02-30
        raise _Problem(line, _dotted(loc), f"not a usable {kind}; fix the value") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise _Problem(line, _dotted(loc), "not a finite number; write a number such as 0.5")
    if isinstance(value, int) and not -_INT_LIMIT < value < _INT_LIMIT:
        raise _Problem(line, _dotted(loc), "number out of range; use a smaller number")
    return value


def _compose(text: str) -> tuple[Any, dict[Loc, int]]:
    """The document as plain data, and the line of every key and item: one pass over libyaml's
    events, no recursion. Aliases are refused: a topology needs none, and following them is how
    a 1 KB file turns into gigabytes."""
    loader = _Loader(text)
    lines: dict[Loc, int] = {}
    stack: list[_Open] = []
    root: Any = None
    documents = 0
    try:
        while (event := loader.get_event()) is not None:
            line = event.start_mark.line + 1
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise _Problem(line, "YAML", "a second document (---); keep one per file")
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                stack.pop()
            elif isinstance(event, yaml.NodeEvent):
                parent = stack[-1] if stack else None
                here = parent.path if parent else ()
                if isinstance(event, yaml.AliasEvent):
                    fix = "YAML aliases (*name) are not allowed in a topology; write the value out"
                    raise _Problem(line, _dotted(here), fix)
                if parent is not None and parent.wants_key():
                    if not isinstance(event, yaml.ScalarEvent):
                        raise _Problem(line, _dotted(here), "a key must be plain text")
                    if event.value in parent.container:
                        first = lines[(*here, event.value)]
                        fix = f"duplicate key (first on line {first}); keep one"
                        raise _Problem(line, _dotted((*here, event.value)), fix)
                    parent.key = event.value
                    lines[(*here, event.value)] = line
                    continue
                loc = parent.child() if parent else ()
                lines.setdefault(loc, line)
                value: Any
                if isinstance(event, yaml.ScalarEvent):
                    value = _scalar(loader, event, loc, line)
                else:
                    if len(stack) >= MAX_DEPTH:
                        fix = f"nested more than {MAX_DEPTH} levels deep; a topology never is"
                        raise _Problem(line, _dotted(here), fix)
                    if getattr(event, "tag", None) not in _COLLECTION_TAGS:
                        raise _Problem(line, _dotted(loc), "YAML tags are not allowed; remove it")
                    value = {} if isinstance(event, yaml.MappingStartEvent) else []
                if parent is None:
                    root = value
                else:
                    parent.add(value)
                if isinstance(event, yaml.CollectionStartEvent):
                    stack.append(_Open(value, loc))
    finally:
        loader.dispose()
    return root, lines


def _yaml_problem(exc: yaml.YAMLError, text: str) -> _Problem:
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        line = mark.line + 1
    else:  # a ReaderError (a character YAML does not allow) has only a position
        line = text.count("\n", 0, getattr(exc, "position", 0)) + 1
    problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
    return _Problem(line, "YAML syntax", f"{problem} (fix the indentation or quoting)")


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


@lru_cache(maxsize=64)
def _unknown_key(parent: Loc) -> str:
    known = ", ".join(_fields(Topology, parent))
    return f"unknown key; remove it or fix the spelling (known: {known})"


def _hint(error: Any, loc: Loc) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return _unknown_key(loc[:-1])
    if kind == "missing":
        return "required; add it"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    return str(error["msg"])


def _validation_problems(path: Path, exc: ValidationError, lines: dict[Loc, int]) -> list[str]:
    out = []
    for error in exc.errors(include_url=False, include_input=False):
        loc: Loc = tuple(error["loc"])
        known = next((loc[:k] for k in range(len(loc), -1, -1) if loc[:k] in lines), ())
        field = _printable(_dotted(loc), 80)
        out.append(f"{path}:{lines.get(known, 1)}: {field}: {_printable(_hint(error, loc))}")
    return out


def _card_problems(
    path: Path, topology: Topology, lines: dict[Loc, int], trust_topology: bool
) -> Iterator[str]:
    checked: dict[str, str] = {}

    def problem(name: str) -> str:
        if name not in checked:
            try:
                load_card(name, path.parent, trust_topology=trust_topology)
                checked[name] = ""
            except CardError as exc:
                checked[name] = _printable(str(exc), 500)
        return checked[name]

    for index, agent in enumerate(topology.agents):
        if message := problem(agent.card or agent.id):
            line = lines.get(("agents", index, "card"), lines.get(("agents", index), 1))
            yield f"{path}:{line}: agents.{index}.card: {message}"
    if message := problem(topology.manager.card):
        line = lines.get(("manager", "card"), lines.get(("manager",), 1))
        yield f"{path}:{line}: manager.card: {message}"


def _tool_problems(
    path: Path, topology: Topology, lines: dict[Loc, int], trust_topology: bool
) -> list[str]:
    names = installed_tool_names()
    out = []
    for k, target in enumerate(topology.tool_modules):
        line = lines.get(("tool_modules", k), lines.get(("tool_modules",), 1))
        try:
            if not trust_topology:
                check_confined(target, path.parent)
            names.update(tool_names(target, path.parent))
        except ConfigError as exc:
            out.append(f"{path}:{line}: tool_modules.{k}: {_printable(str(exc), 500)}")
    if out:  # the missing module may define the tools agents ask for
        return out
    for index, agent in enumerate(topology.agents):
        for k, name in enumerate(agent.tools):
            if name not in names:
                line = lines.get(("agents", index, "tools", k), 1)
                available = ", ".join(sorted(names)) or "none"
                out.append(
                    f"{path}:{line}: agents.{index}.tools.{k}: unknown tool "
                    f"{_printable(repr(name), 80)} (available: {available})"
                )
    return out


def problems_in(path: Path, *, trust_topology: bool = False) -> tuple[Topology | None, list[str]]:
    """Parse and validate a topology file without running any of its code; return it (or None)
    and one `FILE:LINE: field: fix` line per problem."""
    try:
        text = _read(path)
        try:
            data, lines = _compose(text)
        except yaml.YAMLError as exc:
            raise _yaml_problem(exc, text) from None
        if not isinstance(data, dict):
            raise _Problem(1, "(top level)", "the file must be a YAML mapping with name and agents")
    except _Problem as p:
        return None, [f"{path}:{p.line}: {_printable(p.field, 80)}: {_printable(p.fix)}"]
    try:
        topology = Topology.model_validate(data)
    except ValidationError as exc:
        return None, _validation_problems(path, exc, lines)
    out = [*_card_problems(path, topology, lines, trust_topology)]
    out += _tool_problems(path, topology, lines, trust_topology)
    return (None, out) if out else (topology, [])


def shown(path: Path | str, problems: list[str], limit: int = MAX_PROBLEMS) -> list[str]:
    """The first `limit` problems of a file, and a count of the rest."""
    rest = len(problems) - limit
    if rest <= 0:
        return problems
    return [*problems[:limit], f"{path}: ... and {rest} more problems (fix the first ones)"]


def load_topology(path: str | Path, *, trust_topology: bool = False) -> Topology:
    """Load a topology file or raise ConfigError listing its problems (at most 20 and a count).

    Nothing in the file is executed. `trust_topology` allows tool modules and role cards from
    outside the file's folder tree (see dytopo.topology)."""
    topology, problems = problems_in(Path(path), trust_topology=trust_topology)
    if topology is None:
        raise ConfigError("\n".join(shown(path, problems)))
    return topology
