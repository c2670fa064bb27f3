"""Every route and dependency of the real app runs on the event loop.

FastAPI runs a plain ``def`` endpoint or dependency in its threadpool: a thread
hop per call, which showed up as ~15% of the Ingress replica's samples in a
profile of the hot path. Every one must be ``async`` (or a security scheme,
whose ``__call__`` is async).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from agent.config import AgentConfig
from agent.llm import LLMEndpoint, OpenAILLMClient
from agent.loop import Agent
from memory.in_memory import InMemoryConversationStore
from serve_app.http.app import create_app
from serve_app.inprocess import InProcessAgentService
from tests.http.test_auth_http import settings
from tools import build_registry


def _runs_on_the_loop(call: Any) -> bool:
    if not (inspect.isfunction(call) or inspect.ismethod(call)):
        call = type(call).__call__  # a security scheme (an instance): its __call__ decides
    return inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)


def _sync_calls(dependant: Dependant, where: str) -> list[str]:
    found = [] if dependant.call is None or _runs_on_the_loop(dependant.call) else [f"{where}: {dependant.call!r}"]
    for sub in dependant.dependencies:
        found += _sync_calls(sub, where)
    return found


def test_no_route_or_dependency_hops_through_the_threadpool() -> None:
    llm = OpenAILLMClient(LLMEndpoint(base_url="http://127.0.0.1:9", model="scripted", max_retries=0))
    tools = build_registry()
    store = InMemoryConversationStore()
    app = create_app(
        InProcessAgentService(Agent(llm, tools, store, AgentConfig()), tools), auth=settings(), key_store=store
    )
    routes = list(_api_routes(app.routes))
    assert len(routes) > 15  # the whole API, not an empty app
    sync = [call for path, dependant in routes for call in _sync_calls(dependant, path)]
    assert sync == []


def _api_routes(routes: list[Any]) -> Iterator[tuple[str, Dependant]]:
    """(method and path, dependant) of every API route, inside included routers too."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield f"{sorted(route.methods)} {route.path}", route.dependant
        elif hasattr(route, "effective_route_contexts"):  # FastAPI's included router (not flattened)
            for ctx in route.effective_route_contexts():
                yield f"{sorted(ctx.methods)} {ctx.path}", ctx.dependant
