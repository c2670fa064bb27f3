"""Tools per scope: a tool named in ``TOOL_SCOPES`` needs that scope, on the direct route and in chat.

The direct tool route refuses such a tool with 403 to a principal without the
scope; a chat turn withholds it from the LLM (``ChatRequest.denied_tools``),
so the model is never offered a tool its caller may not use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends, Request

from serve_app.auth.deps import get_authenticator
from serve_app.auth.errors import ForbiddenError
from serve_app.http.identity import Principal


def get_tool_scopes(request: Request) -> Mapping[str, str]:
    """The app's tool → scope map (``AuthSettings.tool_scopes``)."""
    return get_authenticator(request).settings.tool_scopes


async def tool_scopes_dependency(request: Request) -> Mapping[str, str]:
    """``get_tool_scopes`` as a dependency, on the loop (a sync one would hop through FastAPI's threadpool)."""
    return get_tool_scopes(request)


ToolScopesDep = Annotated[Mapping[str, str], Depends(tool_scopes_dependency)]


def denied_tools(principal: Principal, tool_scopes: Mapping[str, str]) -> list[str]:
    """The tools ``principal`` lacks the scope for, sorted."""
    return sorted(name for name, scope in tool_scopes.items() if scope not in principal.scopes)


def require_tool_scope(principal: Principal, tool_scopes: Mapping[str, str], name: str) -> None:
    """Raises ``ForbiddenError`` (403) when ``name`` needs a scope ``principal`` lacks."""
    scope = tool_scopes.get(name)
    if scope is not None and scope not in principal.scopes:
        raise ForbiddenError(f"tool '{name}' needs the scope: {scope}", field="name")
