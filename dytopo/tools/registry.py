"""Tools: JSON schemas from Python signatures, a registry, and discovery.

@tool
def calculator(expression: str) -> str:
    '''Evaluate an arithmetic expression.

    Args:
        expression: e.g. "2 * (3 + 4)".
    '''
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, get_args, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from dytopo.errors import ConfigError, ToolError
from dytopo.tools.context import ToolContext
from dytopo.tools.static import (
    BUILTIN_TOOLS,
    ENTRY_POINT_GROUP,
    check_confined,
    module_files,
    target_path,
)

_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$")


def _arg_docs(doc: str) -> dict[str, str]:
    """`name: text` lines of a Google-style `Args:` section."""
    out: dict[str, str] = {}
    section = False
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            section = True
            continue
        if section:
            match = re.match(r"^(\w+)(?:\s*\(.*?\))?:\s*(.+)$", stripped)
            if match:
                out[match.group(1)] = match.group(2)
            elif not stripped or stripped.endswith(":"):
                section = False  # a blank line or the next section ends `Args:`
    return out


class Tool:
    """A callable the model may use; arguments are validated by a pydantic model."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        if not _NAME.match(self.name):
            raise ConfigError(f"tool name {self.name!r} must match {_NAME.pattern}")
        doc = inspect.getdoc(fn) or ""
        self.description = description or doc.split("\n\n")[0].strip() or self.name
        self.timeout_s = timeout_s
        self.takes_ctx = False
        docs = _arg_docs(doc)
        hints = get_type_hints(fn)
        fields: dict[str, Any] = {}
        for param in inspect.signature(fn).parameters.values():
            hint = hints.get(param.name)
            if hint is ToolContext or ToolContext in get_args(hint):
                self.takes_ctx = True
                continue
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ConfigError(f"tool {self.name}: *args/**kwargs cannot be described")
            annotation = hints.get(param.name, str)
            default = ... if param.default is param.empty else param.default
            fields[param.name] = (annotation, Field(default, description=docs.get(param.name)))
        self.params: type[BaseModel] = create_model(
            f"{self.name}_args", __config__=ConfigDict(extra="forbid"), **fields
        )

    def definition(self) -> dict[str, Any]:
        """The OpenAI `tools` entry."""
        schema = self.params.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": schema},
        }

    def validate(self, arguments: dict[str, Any]) -> BaseModel:
        """Validate arguments; raise ToolError with a message fit to show the model."""
        try:
            return self.params.model_validate(arguments)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors()[:5]
            )
            raise ToolError(f"invalid arguments for {self.name}: {problems}") from exc

    async def __call__(self, arguments: dict[str, Any], ctx: ToolContext) -> str:
        """Validate, then run (sync tools in a thread, so the event loop never blocks)."""
        values = dict(self.validate(arguments))
        if self.takes_ctx:
            values["ctx"] = ctx
        if inspect.iscoroutinefunction(self.fn):
            result = await self.fn(**values)
        else:
            result = await asyncio.to_thread(self.fn, **values)
        return result if isinstance(result, str) else str(result)


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float | None = None,
) -> Any:
    """Decorator: turn a typed, documented function into a Tool."""

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool(f, name=name, description=description, timeout_s=timeout_s)

    return wrap(fn) if fn is not None else wrap


class ToolRegistry:
    """Unique names to tools; agents get the subset their topology entry lists."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.register(t)

    def register(self, t: Tool) -> None:
        existing = self._tools.get(t.name)
        if existing is not None and existing.fn is not t.fn:
            raise ConfigError(f"two tools are named {t.name!r}; rename one (@tool(name=...))")
        self._tools[t.name] = t

    def names(self) -> list[str]:
        return sorted(self._tools)

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise ToolError(
                f"unknown tool {name!r}; available: {', '.join(self.names()) or 'none'}"
            ) from None

    def subset(self, names: Iterable[str]) -> list[Tool]:
        return [self.get(n) for n in names]

    def load_module(self, module: Any) -> int:
        """Register every Tool attribute of a module; returns how many."""
        found = [v for v in vars(module).values() if isinstance(v, Tool)]
        for t in found:
            self.register(t)
        return len(found)

    def load(self, target: str, base: Path | None = None) -> int:
        """Import a module name (`pkg.tools`) or a .py file / folder path (relative to `base`).

        This runs the module's code: `discover` checks where it lies first."""
        path = target_path(target, base)
        if path is not None:
            return sum(self._load_file(f) for f in module_files(path))
        try:
            return self.load_module(importlib.import_module(target))
        except ImportError as exc:
            raise ConfigError(f"tool module {target!r} cannot be imported: {exc}") from exc

    def _load_file(self, path: Path) -> int:
        if not path.is_file():
            raise ConfigError(f"tool file {path} does not exist")
        name = f"dytopo_tools_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot load tools from {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return self.load_module(module)

    def load_entry_points(self) -> int:
        """Tools from installed packages (entry-point group `dytopo.tools`)."""
        count = 0
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            loaded = ep.load()
            if isinstance(loaded, Tool):
                self.register(loaded)
                count += 1
            else:
                count += self.load_module(loaded)
        return count

    @classmethod
    def discover(
        cls, extra: Iterable[str] = (), base: Path | None = None, *, trust_topology: bool = False
    ) -> ToolRegistry:
        """Built-in tools/ folder, installed entry points, then the topology's modules.

        The topology's modules are code: each must lie in `base`'s folder tree (symlinks
        followed) or be an installed entry point, unless `trust_topology` is set."""
        extra = list(extra)
        if not trust_topology:
            for target in extra:
                check_confined(target, base)
        registry = cls()
        if BUILTIN_TOOLS.is_dir():
            registry.load(str(BUILTIN_TOOLS))
        registry.load_entry_points()
        for target in extra:
            registry.load(target, base)
        return registry
