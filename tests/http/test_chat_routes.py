"""Chat routes through httpx.ASGITransport: JSON, SSE and the error shape."""

from __future__ import annotations

import httpx

from tests.support.auth import dev_auth
from tests.support.sse import parse_sse


async def test_chat_answers_with_the_tool_result(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/chat", json={"message": "What is 12*12?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "144" in body["response"]
    assert body["session_id"] and body["message_id"]
    assert body["tool_calls"][0]["name"] == "calculator" and body["tool_calls"][0]["result"] == "144"
    assert body["usage"]["total_tokens"] > 0
    assert r.headers["x-request-id"] and r.headers["x-process-time"].endswith("ms")


async def test_chat_keeps_the_session(client: httpx.AsyncClient) -> None:
    first = (await client.post("/api/chat", json={"message": "one", "user_id": "u1"})).json()
    second = await client.post("/api/chat", json={"message": "two", "user_id": "u1", "session_id": first["session_id"]})
    assert second.json()["session_id"] == first["session_id"]


async def test_stream_sends_typed_events_in_order(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/chat/stream", json={"message": "calc: 6*7"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-accel-buffering"] == "no"
    events = parse_sse(r.text)
    names = [n for n, _ in events]
    assert names[:2] == ["tool_call", "tool_result"] and names[-2:] == ["message", "done"]
    assert events[1][1]["content"] == "42"
    assert events[-1][1]["session_id"] and events[-1][1]["usage"]["completion_tokens"] > 0


async def test_stream_failure_ends_with_an_error_event(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/chat/stream", json={"message": "fail: 500"})
    assert r.status_code == 200
    events = parse_sse(r.text)
    assert events == [
        (
            "error",
            {
                "type": "error",
                "error_type": "llm_unavailable",
                "message": "the LLM provider failed (HTTP 500)",
            },
        )
    ]


async def test_llm_failure_maps_to_status_and_error_shape(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/chat", json={"message": "fail: 503"}, headers={"X-Request-ID": "req-1"})
    assert r.status_code == 503 and r.headers["retry-after"]
    assert r.json() == {
        "error": {
            "type": "llm_unavailable",
            "message": "the LLM provider failed (HTTP 503)",
            "request_id": "req-1",
        }
    }
    r = await client.post("/api/chat", json={"message": "fail: 401"})
    assert r.status_code == 502
    assert r.json()["error"]["message"] == "the LLM provider rejected our credentials"


async def test_validation_errors_name_the_field(client: httpx.AsyncClient) -> None:
    cases = [
        ({}, "message"),
        ({"message": ""}, "message"),
        ({"message": "x" * 40_000}, "message"),
        ({"message": "hi", "session_id": "../etc"}, "session_id"),
        ({"message": "hi", "extra": 1}, "extra"),
    ]
    for body, field in cases:
        r = await client.post("/api/chat", json=body)
        assert r.status_code == 422, body
        err = r.json()["error"]
        assert err["type"] == "validation_error" and err["field"] == field, err
    r = await client.post("/api/chat", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["type"] == "validation_error"


async def test_unknown_route_and_method_use_the_error_shape(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/nope")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    r = await client.get("/api/chat")
    assert r.status_code == 405 and r.json()["error"]["type"] == "method_not_allowed"


async def test_other_users_session_is_a_404(client: httpx.AsyncClient) -> None:
    mine = (await client.post("/api/chat", json={"message": "hi", "user_id": "alice"})).json()
    r = await client.post("/api/chat", json={"message": "hi", "user_id": "bob", "session_id": mine["session_id"]})
    assert r.status_code == 404 and r.json()["error"]["field"] == "session_id"


async def test_heartbeat_comments_while_a_tool_runs(scripted_llm: object) -> None:
    from agent.config import AgentConfig
    from agent.llm import LLMEndpoint, OpenAILLMClient
    from agent.loop import Agent
    from memory.in_memory import InMemoryConversationStore
    from serve_app.http.app import create_app
    from serve_app.inprocess import InProcessAgentService
    from tools import build_registry

    llm = OpenAILLMClient(LLMEndpoint(base_url=scripted_llm.base_url, model="s", max_retries=0))  # type: ignore[attr-defined]
    tools = build_registry(["tests.support.sample_tools:SleepTool"])
    agent = Agent(llm, tools, InMemoryConversationStore(), AgentConfig())
    app = create_app(InProcessAgentService(agent, tools), heartbeat_s=0.1, auth=dev_auth())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/api/chat/stream", json={"message": 'tool: sleep {"seconds": 0.5}'})
    body = r.text
    assert body.count(": ping") >= 2
    assert body.index(": ping") < body.index("event: tool_result")


async def test_idempotency_key_header_replays_the_reply(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "retry-123"}
    first = await client.post("/api/chat", json={"message": "calc: 3*3"}, headers=headers)
    again = await client.post("/api/chat", json={"message": "calc: 3*3"}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    r = await client.post("/api/chat", json={"message": "x"}, headers={"Idempotency-Key": "bad key!"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "Idempotency-Key"
