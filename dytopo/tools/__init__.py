"""Tools agents can call: the @tool decorator, the registry, the context tools run in."""

from dytopo.tools.context import ToolContext
from dytopo.tools.registry import Tool, ToolRegistry, tool

__all__ = ["Tool", "ToolContext", "ToolRegistry", "tool"]
