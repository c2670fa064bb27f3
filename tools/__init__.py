"""Tools the agent can call: the ``Tool`` base, the registry and the built-ins."""

from tools.base import Tool, ToolFailure
from tools.registry import BUILTIN_TOOLS, ToolRegistry, build_registry, load_tool

__all__ = ["BUILTIN_TOOLS", "Tool", "ToolFailure", "ToolRegistry", "build_registry", "load_tool"]
