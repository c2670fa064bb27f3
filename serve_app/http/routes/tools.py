"""Tool routes: list the tools, run one directly."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from pydantic import BaseModel

from agent.dto import TOOL_NAME_PATTERN, ToolErrorKind, ToolInvocation, ToolSpec
from agent.errors import AgentError, InvalidRequestError, ToolNotFoundError, ToolTimeoutError
from serve_app.auth.deps import PrincipalDep, ToolsPrincipal
from serve_app.auth.tool_scopes import ToolScopesDep, denied_tools, require_tool_scope
from serve_app.http.deps import AgentServiceDep
from serve_app.http.errors import BODY_ERROR_RESPONSES, ERROR_RESPONSES

router = APIRouter(prefix="/api/tools", tags=["tools"])


class ToolRunResponse(BaseModel):
    name: str
    result: str
    duration_ms: float


class ToolFailedError(InvalidRequestError):
    code = "tool_error"


@router.get("", response_model=list[ToolSpec], responses=ERROR_RESPONSES)
async def list_tools(agent: AgentServiceDep, principal: PrincipalDep, tool_scopes: ToolScopesDep) -> list[ToolSpec]:
    """List the tools the caller may use: name, description and JSON schema of the arguments."""
    denied = denied_tools(principal, tool_scopes)
    return [t for t in await agent.list_tools() if t.name not in denied]


@router.post("/{name}", response_model=ToolRunResponse, responses=BODY_ERROR_RESPONSES)
async def run_tool(
    name: Annotated[str, Path(pattern=TOOL_NAME_PATTERN)],
    agent: AgentServiceDep,
    principal: ToolsPrincipal,
    tool_scopes: ToolScopesDep,
    arguments: Annotated[dict[str, Any] | None, Body()] = None,
) -> ToolRunResponse:
    """Run one tool with the JSON object in the body as its arguments (a tool in TOOL_SCOPES needs its scope)."""
    require_tool_scope(principal, tool_scopes, name)
    result = await agent.execute_tool(ToolInvocation(name=name, arguments=arguments or {}))
    if not result.is_error:
        return ToolRunResponse(name=result.name, result=result.content, duration_ms=result.duration_ms)
    match result.error_kind:
        case ToolErrorKind.NOT_FOUND:
            raise ToolNotFoundError(f"tool '{name}' not found", field="name")
        case ToolErrorKind.INVALID_ARGUMENTS:
            field = result.field_errors[0].field if result.field_errors else None
            raise InvalidRequestError(result.content, field=field)
        case ToolErrorKind.FAILED:
            raise ToolFailedError(result.content)
        case ToolErrorKind.TIMEOUT:
            raise ToolTimeoutError(result.content)
        case _:
            raise AgentError("the tool failed unexpectedly")
