"""Tools per scope: a tool in TOOL_SCOPES needs its scope on the direct route, and is never offered in chat without it.

The app is the whole HTTP app with authentication required (HS256 tokens, API
keys in the store), here with ``sleep`` guarded by ``tools:sleep``; the LLM is
the scripted server, whose request log shows which tools each call offered.
"""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from memory.in_memory import InMemoryConversationStore
from serve_app.auth.api_keys import create_api_key
from serve_app.scripted_llm import ScriptedLLMServer
from tests.http.app_support import bearer, build_full_app, client_of, token
from tests.unit.auth.support import make_settings

TOOL_SCOPES = {"sleep": "tools:sleep"}


@pytest.fixture
def store() -> InMemoryConversationStore:
    return InMemoryConversationStore()


@pytest.fixture
def app(scripted_llm: ScriptedLLMServer, store: InMemoryConversationStore) -> FastAPI:
    return build_full_app(scripted_llm.base_url, auth=make_settings(tool_scopes=TOOL_SCOPES), store=store)


@pytest.fixture
async def client(app: FastAPI) -> httpx.AsyncClient:
    async with client_of(app) as c:
        yield c  # type: ignore[misc]


def offered(scripted_llm: ScriptedLLMServer) -> list[list[str]]:
    """The tool names each LLM call offered, in order."""
    return [[t["function"]["name"] for t in r["tools"] or []] for r in scripted_llm.app.state.requests]


async def test_the_direct_route_refuses_a_tool_without_its_scope(client: httpx.AsyncClient) -> None:
    without = bearer(token(scope="tools:execute"))
    r = await client.post("/api/tools/sleep", headers=without, json={"seconds": 0})
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert error["type"] == "forbidden" and "tools:sleep" in error["message"] and error["field"] == "name"
    ok = await client.post("/api/tools/calculator", headers=without, json={"expression": "6*7"})
    assert ok.status_code == 200 and ok.json()["result"] == "42"  # an unguarded tool needs tools:execute only
    r = await client.post(
        "/api/tools/sleep", headers=bearer(token(scope="tools:execute tools:sleep")), json={"seconds": 0}
    )
    assert r.status_code == 200, r.text


async def test_the_tool_scope_does_not_replace_tools_execute(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/tools/sleep", headers=bearer(token(scope="tools:sleep")), json={"seconds": 0})
    assert r.status_code == 403 and "tools:execute" in r.json()["error"]["message"]


async def test_the_tool_list_shows_only_the_tools_the_caller_may_use(client: httpx.AsyncClient) -> None:
    names = {t["name"] for t in (await client.get("/api/tools", headers=bearer(token()))).json()}
    assert "calculator" in names and "sleep" not in names
    names = {t["name"] for t in (await client.get("/api/tools", headers=bearer(token(scope="tools:sleep")))).json()}
    assert "sleep" in names


async def test_chat_never_offers_the_llm_a_tool_without_its_scope(
    client: httpx.AsyncClient, scripted_llm: ScriptedLLMServer
) -> None:
    r = await client.post("/api/chat", headers=bearer(token(scope="chat")), json={"message": "hello"})
    assert r.status_code == 200, r.text
    r = await client.post("/api/chat", headers=bearer(token(scope="chat tools:sleep")), json={"message": "hello"})
    assert r.status_code == 200, r.text
    without, with_scope = offered(scripted_llm)
    assert "calculator" in without and "sleep" not in without
    assert "sleep" in with_scope


async def test_a_tool_the_llm_calls_anyway_is_refused_and_never_runs(
    client: httpx.AsyncClient, scripted_llm: ScriptedLLMServer
) -> None:
    # The scripted LLM calls sleep although it was not offered: the loop refuses the call itself.
    r = await client.post(
        "/api/chat", headers=bearer(token(scope="chat")), json={"message": 'tool: sleep {"seconds": 5}'}
    )
    assert r.status_code == 200, r.text
    call = r.json()["tool_calls"][0]
    assert call["name"] == "sleep" and call["is_error"] and "not available" in call["result"]


async def test_the_stream_and_the_openai_api_withhold_it_too(
    client: httpx.AsyncClient, scripted_llm: ScriptedLLMServer
) -> None:
    headers = bearer(token(scope="chat"))
    r = await client.post("/api/chat/stream", headers=headers, json={"message": "hello"})
    assert r.status_code == 200 and "event: done" in r.text
    body = {"model": "agentserve", "messages": [{"role": "user", "content": "hello"}]}
    r = await client.post("/v1/chat/completions", headers=headers, json=body)
    assert r.status_code == 200, r.text
    assert [("sleep" in names, "calculator" in names) for names in offered(scripted_llm)] == [(False, True)] * 2


async def test_a_caller_may_withhold_more_tools(client: httpx.AsyncClient, scripted_llm: ScriptedLLMServer) -> None:
    headers = bearer(token(scope="chat tools:sleep"))
    r = await client.post("/api/chat", headers=headers, json={"message": "hello", "denied_tools": ["calculator"]})
    assert r.status_code == 200, r.text
    [names] = offered(scripted_llm)
    assert "calculator" not in names and "sleep" in names
    r = await client.post("/api/chat", headers=headers, json={"message": "hello", "denied_tools": ["not a name!"]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "denied_tools.0"


async def test_an_api_key_may_carry_a_tool_scope(client: httpx.AsyncClient, store: InMemoryConversationStore) -> None:
    admin = await create_api_key(store, "root", "admin", ["admin"])
    r = await client.post(
        "/api/keys",
        headers={"X-API-Key": admin.key},
        json={"owner": "bot", "name": "sleeper", "scopes": ["tools:execute", "tools:sleep"]},
    )
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    r = await client.post("/api/tools/sleep", headers={"X-API-Key": key}, json={"seconds": 0})
    assert r.status_code == 200, r.text
    r = await client.post(
        "/api/keys", headers={"X-API-Key": admin.key}, json={"owner": "bot", "name": "x", "scopes": ["tools:"]}
    )
    assert r.status_code == 422 and r.json()["error"]["field"].startswith("scopes")


async def test_development_callers_may_use_every_tool(scripted_llm: ScriptedLLMServer) -> None:
    app = build_full_app(scripted_llm.base_url, auth=make_settings(auth_mode="disabled", tool_scopes=TOOL_SCOPES))
    async with client_of(app) as c:
        r = await c.post("/api/tools/sleep", json={"seconds": 0})
        assert r.status_code == 200, r.text
        assert (await c.post("/api/chat", json={"message": "hello"})).status_code == 200
    assert "sleep" in offered(scripted_llm)[0]
