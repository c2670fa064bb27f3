"""Dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from serve_app.http.services import AgentService


async def get_agent_service(request: Request) -> AgentService:  # async: no threadpool hop
    service: AgentService = request.app.state.agent_service
    return service


AgentServiceDep = Annotated[AgentService, Depends(get_agent_service)]
