"""Input limits beyond the body cap: message count, tool-argument size, denied-tool list, tool names.

Each limit answers a clear error naming the field and changes nothing; a tool
call over the size limit from the LLM reaches it as a tool error, and the turn
goes on.
"""

from __future__ import annotations

import json

import httpx

from agent.dto import MAX_DENIED_TOOLS, MAX_REQUEST_MESSAGES, MAX_TOOL_ARGUMENT_BYTES
from serve_app.scripted_llm import ScriptedLLMServer


async def test_openai_messages_over_the_limit_are_a_400_naming_the_field(
    client: httpx.AsyncClient, scripted_llm: ScriptedLLMServer
) -> None:
    messages = [{"role": "user", "content": f"m{i}"} for i in range(MAX_REQUEST_MESSAGES + 1)]
    r = await client.post("/v1/chat/completions", json={"model": "agentserve", "messages": messages})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "messages" and str(MAX_REQUEST_MESSAGES) in error["message"]
    assert scripted_llm.app.state.requests == []  # refused before any work
    r = await client.post("/v1/chat/completions", json={"model": "agentserve", "messages": messages[1:]})
    assert r.status_code == 200, r.text  # exactly the limit is fine


async def test_direct_tool_arguments_over_the_limit_are_a_422_naming_arguments(client: httpx.AsyncClient) -> None:
    big = "1+" * (MAX_TOOL_ARGUMENT_BYTES // 2) + "1"
    r = await client.post("/api/tools/calculator", json={"expression": big})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == "arguments" and f"at most {MAX_TOOL_ARGUMENT_BYTES} bytes" in error["message"]
    # Multi-byte text counts in bytes, not characters: fewer characters than the limit, more bytes.
    r = await client.post("/api/tools/calculator", json={"expression": "é" * (MAX_TOOL_ARGUMENT_BYTES // 2 + 10)})
    assert r.status_code == 422 and r.json()["error"]["field"] == "arguments"
    r = await client.post("/api/tools/calculator", json={"expression": "1+" * 100 + "1"})
    assert r.status_code == 200 and r.json()["result"] == "101"


async def test_llm_tool_arguments_over_the_limit_reach_the_llm_as_a_tool_error(
    client: httpx.AsyncClient, scripted_llm: ScriptedLLMServer
) -> None:
    # Under the 32,000-character message limit; over the byte limit as the LLM sends it (\u00e9 escapes).
    arguments = json.dumps({"expression": "é" * 6000}, ensure_ascii=False)
    r = await client.post("/api/chat", json={"message": f"tool: calculator {arguments}"})
    assert r.status_code == 200, r.text
    call = r.json()["tool_calls"][0]
    assert call["is_error"] and f"at most {MAX_TOOL_ARGUMENT_BYTES} bytes" in call["result"]
    tool_message = scripted_llm.app.state.requests[-1]["messages"][-1]
    assert tool_message["role"] == "tool" and "arguments" in tool_message["content"]
    assert r.json()["response"].startswith("The result is Invalid arguments")


async def test_too_many_denied_tools_is_a_422(client: httpx.AsyncClient) -> None:
    denied = [f"t{i}" for i in range(MAX_DENIED_TOOLS + 1)]
    r = await client.post("/api/chat", json={"message": "hi", "denied_tools": denied})
    assert r.status_code == 422 and r.json()["error"]["field"] == "denied_tools"


async def test_a_tool_name_that_cannot_be_one_is_a_422_naming_it(client: httpx.AsyncClient) -> None:
    r = await client.post(f"/api/tools/{'x' * 200}", json={})
    assert r.status_code == 422 and r.json()["error"]["field"] == "name"
    r = await client.post("/api/tools/no%20such", json={})
    assert r.status_code == 422 and r.json()["error"]["field"] == "name"
