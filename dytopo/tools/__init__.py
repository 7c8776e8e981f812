"""Tools agents can call: @tool, the registry, the context they run in, the executor, checks."""

from dytopo.tools.context import ToolContext
from dytopo.tools.registry import Tool, ToolRegistry, tool

__all__ = ["Tool", "ToolContext", "ToolRegistry", "tool"]
