"""OpenAILLMClient against the scripted server: streaming, retries, error mapping."""

from __future__ import annotations

import asyncio
import socket

import pytest

from agent.dto import Message, Role, ToolSpec
from agent.errors import LLMError, LLMTimeoutError, LLMUnavailableError
from agent.llm import POOLS, LLMEndpoint, OpenAILLMClient
from agent.ports import LLMParams, LLMResult, LLMTextDelta
from serve_app.scripted_llm import ScriptedLLMServer

CALC = ToolSpec(
    name="calculator",
    description="arithmetic",
    parameters={"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
)


def client(server: ScriptedLLMServer, **kw: object) -> OpenAILLMClient:
    return OpenAILLMClient(LLMEndpoint(base_url=server.base_url, model="scripted", **kw))  # type: ignore[arg-type]


async def collect(c: OpenAILLMClient, text: str) -> list[LLMTextDelta | LLMResult]:
    msgs = [Message(role=Role.USER, content=text)]
    return [x async for x in c.stream_chat(msgs, [CALC], LLMParams(temperature=0, max_tokens=16))]


async def test_streamed_text_and_usage(scripted_llm: ScriptedLLMServer) -> None:
    items = await collect(client(scripted_llm), "hello world")
    *deltas, result = items
    assert isinstance(result, LLMResult) and result.content == "You said: hello world"
    assert "".join(d.text for d in deltas if isinstance(d, LLMTextDelta)) == result.content
    assert result.usage.completion_tokens == 4 and result.usage.total_tokens > 4
    sent = scripted_llm.app.state.requests[0]
    assert sent["tools"][0]["function"]["name"] == "calculator" and sent["stream"] is True


async def test_tool_call_deltas_are_assembled(scripted_llm: ScriptedLLMServer) -> None:
    result = (await collect(client(scripted_llm), 'tool: calculator {"expression": "1+2"}; current_time {}'))[-1]
    assert isinstance(result, LLMResult)
    assert [(c.name, c.arguments) for c in result.tool_calls] == [
        ("calculator", '{"expression": "1+2"}'),
        ("current_time", "{}"),
    ]
    assert all(c.id.startswith("call_") for c in result.tool_calls)
    assert result.finish_reason == "tool_calls"


async def test_5xx_is_retried_a_bounded_number_of_times(scripted_llm: ScriptedLLMServer) -> None:
    with pytest.raises(LLMUnavailableError):
        await collect(client(scripted_llm, max_retries=2), "fail: 503")
    assert len(scripted_llm.app.state.requests) == 3


async def test_400_is_not_retried(scripted_llm: ScriptedLLMServer) -> None:
    with pytest.raises(LLMError) as info:
        await collect(client(scripted_llm, max_retries=2), "fail: 400")
    assert type(info.value) is LLMError and "HTTP 400" in info.value.message
    assert len(scripted_llm.app.state.requests) == 1


async def test_timeout_becomes_llm_timeout(scripted_llm: ScriptedLLMServer) -> None:
    with pytest.raises(LLMTimeoutError):
        await collect(client(scripted_llm, timeout_s=0.3, max_retries=0), "hang: 2")


async def test_unreachable_endpoint_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = OpenAILLMClient(LLMEndpoint(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=0))
    with pytest.raises(LLMUnavailableError):
        await collect(c, "hi")
    with pytest.raises(LLMUnavailableError):
        await c.ping()


async def test_api_key_never_appears_in_errors(scripted_llm: ScriptedLLMServer) -> None:
    secret = "sk-live-THIS-MUST-NOT-LEAK"
    with pytest.raises(LLMError) as info:
        await collect(client(scripted_llm, api_key=secret, max_retries=0), "fail: 401")
    assert secret not in str(info.value) and secret not in repr(info.value)
    assert secret not in repr(LLMEndpoint(base_url="http://x", model="m", api_key=secret))  # type: ignore[arg-type]


async def test_an_error_event_mid_stream_is_an_llm_error_without_the_providers_words(
    scripted_llm: ScriptedLLMServer,
) -> None:
    c = client(scripted_llm, max_retries=0)
    got: list[LLMTextDelta] = []
    with pytest.raises(LLMError) as info:
        async for item in c.stream_chat([Message(role=Role.USER, content="midstream: x")], [], LLMParams()):
            assert isinstance(item, LLMTextDelta)
            got.append(item)
    assert [d.text for d in got] == ["partial"]
    assert "mid-stream" in info.value.message and "sk-leak" not in info.value.message


async def test_a_chunk_that_is_not_json_is_an_llm_error(scripted_llm: ScriptedLLMServer) -> None:
    with pytest.raises(LLMError) as info:
        await collect(client(scripted_llm, max_retries=0), "garbled: x")
    assert "malformed" in info.value.message


async def test_every_legal_sse_spelling_is_read(scripted_llm: ScriptedLLMServer) -> None:
    """Comments, event/id lines, ``data:`` without a space, a data field over two lines."""
    *deltas, result = await collect(client(scripted_llm), "sse-forms: x")
    assert isinstance(result, LLMResult) and result.content == "partial reply"
    assert [d.text for d in deltas if isinstance(d, LLMTextDelta)] == ["partial", " reply"]
    assert result.finish_reason == "stop" and result.usage.completion_tokens == 2


async def test_streamed_calls_reuse_one_kept_alive_connection(scripted_llm: ScriptedLLMServer) -> None:
    """A stream read to its end returns its connection to the pool: no new TCP connection per call."""
    c = client(scripted_llm)
    for text in ("hello", 'tool: calculator {"expression": "1+2"}', "again"):
        result = (await collect(c, text))[-1]
        assert isinstance(result, LLMResult)
    ports = [r["client_port"] for r in scripted_llm.app.state.requests]
    assert len(ports) == 3 and len(set(ports)) == 1, ports
    await c.close()


async def test_concurrent_streams_spread_over_the_pools(scripted_llm: ScriptedLLMServer) -> None:
    """Calls in flight go to the least-loaded pool; each pool holds its share, and all are released."""
    c = client(scripted_llm)
    assert c.pool_loads == [0] * POOLS
    started = asyncio.Semaphore(0)
    release = asyncio.Event()

    async def one_stream() -> str:
        msgs = [Message(role=Role.USER, content="slow: 3")]
        parts: list[str] = []
        async for item in c.stream_chat(msgs, [], LLMParams()):
            if isinstance(item, LLMTextDelta):
                if not parts:
                    started.release()
                    await release.wait()
                parts.append(item.text)
        return "".join(parts)

    tasks = [asyncio.create_task(one_stream()) for _ in range(2 * POOLS)]
    for _ in tasks:
        await asyncio.wait_for(started.acquire(), timeout=10)
    assert c.pool_loads == [2] * POOLS
    release.set()
    texts = await asyncio.gather(*tasks)
    assert all(t.split() == ["t0", "t1", "t2"] for t in texts), texts
    assert c.pool_loads == [0] * POOLS
    # An abandoned stream gives its pool back too.
    gen = c.stream_chat([Message(role=Role.USER, content="slow: 3")], [], LLMParams())
    await anext(gen)
    assert sum(c.pool_loads) == 1
    await gen.aclose()
    assert c.pool_loads == [0] * POOLS
    await c.close()
