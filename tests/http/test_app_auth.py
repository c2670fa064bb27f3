"""The whole app with authentication required: every route but the probes needs a principal."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from agent.config import AgentConfig
from agent.llm import LLMEndpoint, OpenAILLMClient
from agent.loop import Agent
from memory.in_memory import InMemoryConversationStore
from serve_app.auth.api_keys import create_api_key
from serve_app.auth.deps import unprotected_routes
from serve_app.http.app import create_app
from serve_app.inprocess import InProcessAgentService
from serve_app.scripted_llm import ScriptedLLMServer
from tests.http.test_auth_http import bearer, settings, token
from tools import build_registry


@pytest.fixture
async def secured(
    scripted_llm: ScriptedLLMServer,
) -> AsyncIterator[tuple[httpx.AsyncClient, InMemoryConversationStore]]:
    llm = OpenAILLMClient(LLMEndpoint(base_url=scripted_llm.base_url, model="scripted", max_retries=0))
    tools = build_registry()
    store = InMemoryConversationStore()
    app = create_app(
        InProcessAgentService(Agent(llm, tools, store, AgentConfig()), tools), auth=settings(), key_store=store
    )
    assert unprotected_routes(app) == []
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c, store


async def test_every_route_but_the_probes_needs_a_principal(
    secured: tuple[httpx.AsyncClient, InMemoryConversationStore],
) -> None:
    c, _ = secured
    for method, path in [("POST", "/api/chat"), ("GET", "/api/sessions"), ("GET", "/api/tools"),
                         ("GET", "/api/memory/search?q=x"), ("GET", "/v1/models"), ("GET", "/api/keys")]:  # fmt: skip
        r = await c.request(method, path, json={"message": "hi"} if method == "POST" else None)
        assert r.status_code == 401, (method, path, r.text)
    assert (await c.get("/live")).status_code == 200


async def test_the_principal_replaces_the_body_user_id(
    secured: tuple[httpx.AsyncClient, InMemoryConversationStore],
) -> None:
    c, _ = secured
    r = await c.post("/api/chat", json={"message": "hi", "user_id": "mallory"}, headers=bearer(token("alice", "chat")))
    assert r.status_code == 200, r.text
    sid = r.json()["session_id"]
    mine = (await c.get("/api/sessions", headers=bearer(token("alice", "chat")))).json()["items"]
    assert [s["id"] for s in mine] == [sid]
    theirs = (await c.get("/api/sessions", headers=bearer(token("mallory", "chat")))).json()["items"]
    assert theirs == []


async def test_scopes_per_route(secured: tuple[httpx.AsyncClient, InMemoryConversationStore]) -> None:
    c, store = secured
    chat_only = bearer(token("bob", "chat"))
    r = await c.post("/api/tools/calculator", json={"expression": "1+1"}, headers=chat_only)
    assert r.status_code == 403 and r.json()["error"]["type"] == "forbidden"
    assert (await c.get("/api/memory/search", params={"q": "x"}, headers=chat_only)).status_code == 403
    r = await c.post("/api/tools/calculator", json={"expression": "1+1"}, headers=bearer(token("bob", "tools:execute")))
    assert r.status_code == 200 and r.json()["result"] == "2"
    new = await create_api_key(store, "carol", "ci", ["chat"])
    r = await c.post("/api/chat", json={"message": "hi"}, headers={"X-API-Key": new.key})
    assert r.status_code == 200
