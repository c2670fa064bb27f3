"""Python callers: the same DTOs through deployment handles."""

from __future__ import annotations

import asyncio
import math

import pytest

from agent.dto import ChatRequest, ChatResponse
from agent.events import DoneEvent, ToolResultEvent

pytestmark = pytest.mark.serve


async def test_app_handle_chat(deployed_app: str) -> None:
    from ray import serve

    handle = serve.get_app_handle("agentserve")
    resp = await handle.chat.remote(ChatRequest(message="What is 6*7?", user_id="py"))
    assert isinstance(resp, ChatResponse) and "42" in resp.response


async def test_agent_handle_stream(deployed_app: str) -> None:
    from ray import serve

    agent = serve.get_deployment_handle("Agent", app_name="agentserve")
    events = [e async for e in agent.options(stream=True).stream.remote(ChatRequest(message="calc: 9*9"))]
    assert any(isinstance(e, ToolResultEvent) and e.content == "81" for e in events)
    assert isinstance(events[-1], DoneEvent)


async def test_embedding_handle(deployed_app: str) -> None:
    from ray import serve

    emb = serve.get_deployment_handle("Embedding", app_name="agentserve")
    texts = ["The cat sits on the mat.", "A kitten rests on a rug.", "Quarterly revenue grew 5%."]
    vecs = await emb.embed.remote(texts)
    assert len(vecs) == 3 and all(len(v) == 384 for v in vecs)
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-3) for v in vecs)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vecs[0], vecs[1]) > cos(vecs[0], vecs[2]) + 0.2


async def test_concurrent_embedding_calls_each_get_their_own_vector(deployed_app: str) -> None:
    """Calls that overlap go through the replica's batcher (a worker thread) and get what a lone call gets."""
    from ray import serve

    emb = serve.get_deployment_handle("Embedding", app_name="agentserve")
    texts = [f"note {i}: {'short' if i % 2 else 'a longer one, so the batch is padded'}" for i in range(24)]
    alone = [(await emb.embed.remote([t]))[0] for t in texts[:4]]
    together = await asyncio.gather(*(emb.embed.remote([t]) for t in texts))
    assert all(len(v) == 1 and len(v[0]) == 384 for v in together)
    # NOTE: within bfloat16's rounding (``embedding.precision: auto`` on a CPU that has it):
    # padded into a batch, a text's vector moves by up to ~5e-4 per element (float32: ~1e-6).
    for i, (lone, [batched]) in enumerate(zip(alone, together[:4], strict=True)):
        assert max(abs(x - y) for x, y in zip(lone, batched, strict=True)) < 2e-3
        # ... and of all 24 vectors, the lone call's own text's is the nearest.
        cosines = [sum(x * y for x, y in zip(lone, v[0], strict=True)) for v in together]
        assert max(range(len(texts)), key=cosines.__getitem__) == i
    assert len({tuple(round(x, 4) for x in v[0]) for v in together}) == len(texts)


async def test_readme_python_example_runs(deployed_app: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's 'From Python' block, run as written (inside a coroutine)."""
    import re
    import textwrap
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## From Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    namespace: dict[str, object] = {}
    exec("async def _example():\n" + textwrap.indent(code.group(1), "    "), namespace)
    await namespace["_example"]()  # type: ignore[operator]
    out = capsys.readouterr().out
    assert "42" in out and "done" in out and "tool_result" in out
