"""Smoke test with the real bundled model: LocalLLM app at /llm, an agent app using it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.serve.conftest import NO_RATE_LIMIT
from tests.support.sse import parse_sse

pytestmark = [pytest.mark.serve, pytest.mark.localmodel]


@pytest.fixture(scope="module")
def local_stack(serve_port: int) -> Iterator[str]:
    from ray import serve

    from serve_app.builder import build_app_with_options, build_local_llm_app

    serve.run(build_local_llm_app({"n_threads": 1}), name="local-llm", route_prefix="/llm", blocking=False)
    args = {
        "llm": {"local_base_url": f"http://127.0.0.1:{serve_port}/llm/v1", "max_retries": 0, "timeout_s": 120},
        "agent": {"max_tokens": 48, "max_steps": 2, "memory_top_k": 0, "remember_messages": False},
    }
    serve.run(
        build_app_with_options(args, NO_RATE_LIMIT), name="agentserve-local", route_prefix="/local", blocking=False
    )
    try:
        yield f"http://127.0.0.1:{serve_port}"
    finally:
        serve.delete("agentserve-local")
        serve.delete("local-llm")


async def test_local_model_speaks_openai(local_stack: str) -> None:
    client = openai.AsyncOpenAI(base_url=f"{local_stack}/llm/v1", api_key="none", max_retries=0)
    models = await client.models.list()
    assert [m.id for m in models.data] == ["smollm2-135m-instruct"]
    stream = await client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        usage = chunk.usage or usage
    assert text.strip() and usage is not None and usage.completion_tokens > 0


async def test_agent_streams_a_reply_from_the_local_model(local_stack: str) -> None:
    async with httpx.AsyncClient(base_url=f"{local_stack}/local", timeout=180) as http:
        r = await http.post("/api/chat/stream", json={"message": "Say hello in one short sentence."})
    assert r.status_code == 200
    events = parse_sse(r.text)
    assert events[-1][0] == "done", events[-3:]
    message = next(d for n, d in events if n == "message")
    assert message["content"].strip()
    assert events[-1][1]["usage"]["completion_tokens"] > 0
