"""The OpenAI-compatible API through the official ``openai`` client, in-process (ASGITransport)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from agent.config import AgentConfig
from agent.dto import MAX_HISTORY_CHARS, MAX_MESSAGE_CHARS, ChatRequest
from agent.events import AgentEvent
from agent.llm import LLMEndpoint, OpenAILLMClient
from agent.loop import Agent
from memory.in_memory import InMemoryConversationStore
from serve_app.http.app import create_app
from serve_app.http.identity import Principal
from serve_app.http.openai_compat.protocol import ChatCompletionRequest
from serve_app.http.openai_compat.serving import stream_chunks, to_chat_request
from serve_app.inprocess import InProcessAgentService
from serve_app.scripted_llm import ScriptedLLMServer
from tests.support.auth import dev_auth
from tools import build_registry

MODEL = "agentserve"
CLIENT_CALL = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}


@pytest.fixture
def app(scripted_llm: ScriptedLLMServer) -> FastAPI:
    llm = OpenAILLMClient(LLMEndpoint(base_url=scripted_llm.base_url, model="scripted", max_retries=0))
    tools = build_registry()
    agent = Agent(llm, tools, InMemoryConversationStore(), AgentConfig(tool_timeout_s=1, max_steps=2))
    return create_app(InProcessAgentService(agent, tools), auth=dev_auth())


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.fixture
async def oai(http: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://test/v1", api_key="x", http_client=http, max_retries=0)


def data_lines(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]


def user_messages(scripted_llm: ScriptedLLMServer) -> list[list[str]]:
    """Per LLM call, the contents of the user messages it was sent."""
    return [[m["content"] for m in r["messages"] if m["role"] == "user"] for r in scripted_llm.app.state.requests]


async def test_models_lists_the_agent(oai: openai.AsyncOpenAI) -> None:
    models = [m async for m in oai.models.list()]
    assert [(m.id, m.object) for m in models] == [(MODEL, "model")]


async def test_model_name_comes_from_create_app(app: FastAPI) -> None:
    named = create_app(app.state.agent_service, model_name="helper", auth=dev_auth())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=named), base_url="http://t") as c:
        assert (await c.get("/v1/models")).json()["data"][0]["id"] == "helper"


async def test_completion_runs_the_servers_tools(oai: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    raw = await oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "What is 12*12?"}]
    )
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.model == MODEL and len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert "144" in (choice.message.content or "") and not choice.message.tool_calls
    assert completion.usage and completion.usage.total_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    session = raw.headers["x-session-id"]
    assert session and (completion.model_extra or {}).get("session_id") == session


async def test_max_steps_is_finish_reason_length(oai: openai.AsyncOpenAI) -> None:
    completion = await oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "loop"}])
    assert completion.choices[0].finish_reason == "length"


async def test_stream_with_usage(oai: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    messages: Any = [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}]
    stream = await oai.chat.completions.create(
        model=MODEL, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert all(c.object == "chat.completion.chunk" and c.model == MODEL for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: hello there"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1] and chunks[-1].choices == []
    assert usage_chunks[0].usage and usage_chunks[0].usage.total_tokens > 0

    r = await http.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": messages, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-accel-buffering"] == "no" and r.headers["cache-control"] == "no-cache"
    assert r.headers["x-session-id"] and "event:" not in r.text
    lines = data_lines(r.text)
    assert lines[-1] == "[DONE]" and lines.count("[DONE]") == 1
    objs = [json.loads(x) for x in lines[:-1]]
    assert all("usage" in o for o in objs) and [o["usage"] is not None for o in objs].count(True) == 1
    assert objs[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert objs[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}


async def test_stream_keeps_tool_calls_server_side(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is 12*12?"}], stream=True
    )
    chunks = [c async for c in stream]
    assert not any(c.choices[0].delta.tool_calls for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "The result is 144."


async def test_stream_without_usage_has_no_usage_field(http: httpx.AsyncClient) -> None:
    r = await http.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    )
    objs = [json.loads(x) for x in data_lines(r.text)[:-1]]
    assert objs and all("usage" not in o for o in objs)


async def test_session_id_continues_a_stored_session(oai: openai.AsyncOpenAI, scripted_llm: ScriptedLLMServer) -> None:
    first = await oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "my name is Ada"}]
    )
    session = first.headers["x-session-id"]
    scripted_llm.app.state.requests.clear()
    second = await oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "ignored earlier message"}, {"role": "user", "content": "who am I?"}],
        extra_body={"session_id": session},
    )
    assert (second.model_extra or {})["session_id"] == session
    assert user_messages(scripted_llm) == [["my name is Ada", "who am I?"]]
    # The header works too, for clients that cannot add body fields; streaming names the session.
    scripted_llm.app.state.requests.clear()
    stream = await oai.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "third"}],
        stream=True,
        extra_headers={"X-Session-ID": session},
    )
    assert stream.headers["x-session-id"] == session
    _ = [c async for c in stream.parse()]
    assert user_messages(scripted_llm) == [["my name is Ada", "who am I?", "third"]]


CONVERSATION: Any = [
    {"role": "system", "content": "client system prompts are ignored"},
    {"role": "user", "content": "my name is Ada"},
    {"role": "assistant", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "Ada"}]},
    {"role": "assistant", "content": None, "tool_calls": [CLIENT_CALL]},
    {"role": "tool", "tool_call_id": "c1", "content": "client-side result"},
    {"role": "user", "content": "who am I?"},
]


@pytest.mark.parametrize("stream", [False, True])
async def test_request_history_reaches_the_llm_as_earlier_turns(
    oai: openai.AsyncOpenAI, scripted_llm: ScriptedLLMServer, stream: bool
) -> None:
    raw = await oai.chat.completions.with_raw_response.create(model=MODEL, messages=CONVERSATION, stream=stream)
    if stream:
        _ = [c async for c in raw.parse()]  # type: ignore[union-attr]
    sent = scripted_llm.app.state.requests[0]["messages"]
    # Separate role messages, in order; the client's system, tool and tool-call-only messages are left out.
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("user", "my name is Ada"),
        ("assistant", "Hello Ada"),
        ("user", "who am I?"),
    ]
    assert sent[0]["role"] == "system" and "client" not in json.dumps(sent)

    # The session started with that history: a follow-up that resends everything gets the stored conversation.
    scripted_llm.app.state.requests.clear()
    await oai.chat.completions.create(
        model=MODEL,
        messages=[*CONVERSATION, {"role": "assistant", "content": "edited"}, {"role": "user", "content": "and?"}],
        extra_headers={"X-Session-ID": raw.headers["x-session-id"]},
    )
    assert user_messages(scripted_llm) == [["my name is Ada", "who am I?", "and?"]]
    assert [m["content"] for m in scripted_llm.app.state.requests[0]["messages"] if m["role"] == "assistant"] == [
        "Hello Ada",
        "You said: who am I?",
    ]


async def test_request_history_over_the_limits_is_a_400_naming_messages(
    oai: openai.AsyncOpenAI, http: httpx.AsyncClient, scripted_llm: ScriptedLLMServer
) -> None:
    long: Any = [{"role": "system", "content": "s"}, {"role": "user", "content": "x" * (MAX_MESSAGE_CHARS + 1)}]
    with pytest.raises(openai.BadRequestError) as info:
        await oai.chat.completions.create(model=MODEL, messages=[*long, {"role": "user", "content": "hi"}])
    assert info.value.param == "messages.1.content" and str(MAX_MESSAGE_CHARS) in info.value.message

    chunk = {"role": "user", "content": "x" * MAX_MESSAGE_CHARS}
    many: Any = [chunk] * (MAX_HISTORY_CHARS // MAX_MESSAGE_CHARS + 1) + [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as info:
        await oai.chat.completions.create(model=MODEL, messages=many)
    assert info.value.param == "messages" and str(MAX_HISTORY_CHARS) in info.value.message
    assert info.value.code == "invalid_request" and info.value.type == "invalid_request_error"

    assert scripted_llm.app.state.requests == []  # refused before any work
    assert (await http.get("/api/sessions")).json()["items"] == []  # nothing stored
    # With a session, earlier messages are not used, so not refused either.
    done = await oai.chat.completions.create(model=MODEL, messages=many, extra_body={"session_id": "s-big"})
    assert (done.model_extra or {})["session_id"] == "s-big"
    assert user_messages(scripted_llm) == [["hi"]]
    assert [s["id"] for s in (await http.get("/api/sessions")).json()["items"]] == ["s-big"]


async def test_unknown_model_is_not_found(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "model_not_found" and info.value.param == "model"
    assert info.value.type == "invalid_request_error"


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([], "messages"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "messages"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}],
            "messages.0.content",
        ),
        ([{"role": "user", "content": ""}], "messages"),
    ],
)
async def test_invalid_body_is_a_bad_request_naming_the_param(
    oai: openai.AsyncOpenAI, messages: Any, param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await oai.chat.completions.create(model=MODEL, messages=messages)
    assert info.value.status_code == 400 and info.value.type == "invalid_request_error"
    assert info.value.param is not None and info.value.param.startswith(param), info.value.body


async def test_bad_session_header_and_json_are_openai_errors(http: httpx.AsyncClient) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    r = await http.post("/v1/chat/completions", json=body, headers={"X-Session-ID": "../etc"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "X-Session-ID"
    r = await http.post("/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] is None
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    # Our own routes keep our error shape.
    r = await http.post("/api/chat", json={})
    assert r.status_code == 422 and r.json()["error"]["type"] == "validation_error"


async def test_tools_from_the_client_are_ignored(oai: openai.AsyncOpenAI, scripted_llm: ScriptedLLMServer) -> None:
    tool: Any = {"type": "function", "function": {"name": "client_side", "parameters": {"type": "object"}}}
    await oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], tools=[tool], tool_choice="auto", temperature=0.5
    )
    names = {t["function"]["name"] for t in scripted_llm.app.state.requests[0]["tools"]}
    assert "client_side" not in names and "calculator" in names


async def test_llm_failure(oai: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        await oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "fail: 503"}])
    assert info.value.status_code == 503 and info.value.response.headers["retry-after"]
    assert info.value.code == "llm_unavailable" and info.value.type == "server_error"

    stream = await oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "fail: 503"}], stream=True
    )
    with pytest.raises(openai.APIError) as err:
        _ = [c async for c in stream]
    assert err.value.code == "llm_unavailable" and "503" in err.value.message

    r = await http.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "fail: 503"}], "stream": True},
    )
    lines = data_lines(r.text)
    assert r.status_code == 200 and lines[-1] == "[DONE]"
    assert json.loads(lines[-2]) == {
        "error": {
            "message": "the LLM provider failed (HTTP 503)",
            "type": "server_error",
            "param": None,
            "code": "llm_unavailable",
        }
    }


class ClosingRecorder:
    """The in-process service, noting whether the turn's stream was closed."""

    def __init__(self, inner: InProcessAgentService) -> None:
        self.inner = inner
        self.closed = False

    async def stream(self, request: ChatRequest) -> AsyncIterator[AgentEvent]:
        stream = self.inner.stream(request)
        try:
            async for event in stream:
                yield event
        finally:
            self.closed = True
            await stream.aclose()  # type: ignore[attr-defined]


async def test_closing_the_stream_closes_the_turn(app: FastAPI, scripted_llm: ScriptedLLMServer) -> None:
    body = ChatCompletionRequest.model_validate({"model": MODEL, "messages": [{"role": "user", "content": "slow: 40"}]})
    service = ClosingRecorder(app.state.agent_service)
    chunks = stream_chunks(service, to_chat_request(body, Principal(id="u1"), None), MODEL, include_usage=False)  # type: ignore[arg-type]
    assert '"role":"assistant"' in await anext(chunks)
    assert '"content":"t0"' in await anext(chunks)
    await chunks.aclose()  # what Starlette does when the client goes away
    assert service.closed
    [sent] = scripted_llm.app.state.requests
    assert await scripted_llm.stream_end(sent["id"], 2) == "aborted"


async def test_unknown_v1_path_and_method_use_openai_error_shape(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/nope")
    assert r.status_code == 404 and set(r.json()["error"]) >= {"message", "type"}
    r = await client.get("/v1/chat/completions")
    assert r.status_code == 405 and "message" in r.json()["error"]


async def test_rate_limited_v1_answers_in_openai_shape(app: FastAPI) -> None:
    app.state.rate_limit_config.update({"requests_per_minute": 1, "ip_requests_per_minute": 1})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        await c.get("/v1/models")
        r = await c.get("/v1/models")
    assert r.status_code == 429 and r.headers["retry-after"]
    assert r.json()["error"]["type"] == "rate_limit_error"


async def test_token_budget_is_charged_on_v1_turns(app: FastAPI, oai: openai.AsyncOpenAI) -> None:
    app.state.rate_limit_config.update({"tokens_per_minute": 5})
    messages = [{"role": "user", "content": "hello there my friend"}]
    first = await oai.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    assert first.usage is not None and first.usage.total_tokens > 5  # overdraws the budget
    with pytest.raises(openai.RateLimitError):
        await oai.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
