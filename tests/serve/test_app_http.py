"""The deployed app over real HTTP through the Serve proxy."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from serve_app.scripted_llm import ScriptedLLMServer
from tests.support.sse import parse_sse

pytestmark = pytest.mark.serve


async def test_calculator_question_gets_the_right_number(http: httpx.AsyncClient) -> None:
    r = await http.post("/api/chat", json={"message": "What is 37*73?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "2701" in body["response"]
    assert body["tool_calls"][0]["name"] == "calculator" and body["tool_calls"][0]["result"] == "2701"
    assert body["usage"]["total_tokens"] > 0


async def test_stream_events_come_in_order(http: httpx.AsyncClient) -> None:
    r = await http.post("/api/chat/stream", json={"message": "calc: 100-58"})
    assert r.status_code == 200 and r.headers["x-accel-buffering"] == "no"
    events = parse_sse(r.text)
    names = [n for n, _ in events]
    assert names[0] == "tool_call" and names[1] == "tool_result"
    assert set(names[2:-2]) == {"token"} and names[-2:] == ["message", "done"]
    assert events[1][1]["content"] == "42"
    tokens = "".join(d["text"] for n, d in events if n == "token")
    assert tokens == events[-2][1]["content"] == "The result is 42."


async def test_stream_error_event_after_start(http: httpx.AsyncClient) -> None:
    r = await http.post("/api/chat/stream", json={"message": "fail: 500"})
    assert [n for n, _ in parse_sse(r.text)] == ["error"]


async def test_chat_errors_keep_their_status_across_handles(http: httpx.AsyncClient) -> None:
    r = await http.post("/api/chat", json={"message": "fail: 503"})
    assert r.status_code == 503 and r.json()["error"]["type"] == "llm_unavailable"
    r = await http.post("/api/chat", json={"message": ""})
    assert r.status_code == 422 and r.json()["error"]["field"] == "message"


async def test_tool_routes(http: httpx.AsyncClient) -> None:
    names = {t["name"] for t in (await http.get("/api/tools")).json()}
    assert {"calculator", "current_time"} <= names
    r = await http.post("/api/tools/calculator", json={"expression": "2**10"})
    assert r.status_code == 200 and r.json()["result"] == "1024"
    r = await http.post("/api/tools/nope", json={})
    assert r.status_code == 404
    r = await http.post("/api/tools/calculator", json={"expression": ["x"]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "expression"


async def test_health(http: httpx.AsyncClient) -> None:
    assert (await http.get("/live")).status_code == 200
    r = await http.get("/health")
    assert r.status_code == 200, r.text
    assert {"agent", "llm", "tools"} <= set(r.json()["checks"])
    assert (await http.get("/ready")).status_code == 200


async def test_client_disconnect_cancels_the_turn(http: httpx.AsyncClient, scripted_llm: ScriptedLLMServer) -> None:
    # 200 tokens 50 ms apart: ten seconds of streaming unless the turn is cancelled
    async with http.stream("POST", "/api/chat/stream", json={"message": "slow: 200"}) as r:
        async for line in r.aiter_lines():
            if line.startswith("event: token"):
                break
    [sent] = scripted_llm.app.state.requests
    assert await scripted_llm.stream_end(sent["id"]) == "aborted"
    await asyncio.sleep(0.5)
    assert len(scripted_llm.app.state.requests) == 1  # no further LLM call for this turn


async def test_concurrent_sessions(http: httpx.AsyncClient) -> None:
    replies = await asyncio.gather(
        *(http.post("/api/chat", json={"message": f"calc: {i}*{i}", "user_id": f"u{i}"}) for i in range(16))
    )
    assert [json.loads(r.text)["tool_calls"][0]["result"] for r in replies] == [str(i * i) for i in range(16)]
