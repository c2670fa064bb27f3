"""ToolExecutorDeployment: runs tools by name for every Agent replica and the direct route."""

from __future__ import annotations

from agent.dto import ToolInvocation, ToolResult, ToolSpec
from deployments.process import set_up_replica_process
from tools import build_registry


class ToolExecutorDeployment:
    """Holds the tool registry.

    Args:
        tools: Extra tools as import paths ("package.module:ToolClass"),
            loaded next to the built-ins.
    """

    def __init__(self, tools: list[str] | None = None) -> None:
        set_up_replica_process()
        self.registry = build_registry(tools or [])

    async def list_tools(self) -> list[ToolSpec]:
        return await self.registry.list_tools()

    async def execute(self, invocation: ToolInvocation) -> ToolResult:
        return await self.registry.execute(invocation)

    async def check_health(self) -> None:
        return None
