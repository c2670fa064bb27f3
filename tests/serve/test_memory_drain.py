"""A stopping Agent replica stores the turns' messages it still holds for semantic memory.

A turn's message is remembered after the reply (``SemanticMemory.remember_later``), so a
replica that Serve stops (a downscale, a rollout, ``serve.delete``) may still hold writes;
its ``__del__`` gives them ``MEMORY_DRAIN_S`` before Serve kills it. Here the Embedding is
slow and lives in another application, so it keeps running while the Agent's stops: the
reply comes back with the write still queued, and the write must land anyway. As in the
app, the Agent is not its application's ingress (Serve holds a stopping ingress replica
in fast mode for 30 s, which would hide a replica that drops its writes).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agent.dto import ChatRequest
from serve_app.scripted_llm import ScriptedLLMServer

pytestmark = pytest.mark.serve

EMBED_S = 6.0  # well over the reply's time and Serve's own wait for a stopping replica, under the drain's 10 s
DIM = 384
USER = "drain-user"
MESSAGE = "my llama is called Lars"


def _vector(text: str) -> list[float]:
    return [1.0 if i == len(text) % DIM else 0.0 for i in range(DIM)]


@pytest.fixture(scope="module")
def slow_embedding(serve_port: int) -> Iterator[Any]:
    """An Embedding that takes ``EMBED_S`` per call, in an application of its own."""
    from ray import serve

    # NOTE: defined here, so Ray ships the class by value (the tests package is not on the replicas' path).
    @serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.05})
    class SlowEmbedding:
        async def embed(self, texts: list[str]) -> list[list[float]]:
            await asyncio.sleep(EMBED_S)
            return [_vector(t) for t in texts]

    handle = serve.run(SlowEmbedding.bind(), name="drain-embedding", route_prefix=None)
    try:
        yield handle
    finally:
        serve.delete("drain-embedding")


async def test_a_stopping_agent_replica_stores_the_messages_it_still_holds(
    slow_embedding: Any, scripted_llm_server: ScriptedLLMServer, tmp_path: Any
) -> None:
    from ray import serve

    from deployments.agent import AgentDeployment
    from deployments.tool_executor import ToolExecutorDeployment
    from memory.lance_memory import LanceVectorMemory

    args = {
        "llm": {"base_url": scripted_llm_server.base_url, "model": "scripted", "max_retries": 0},
        # No recall, so the reply does not wait on the Embedding: only the remembering does.
        "agent": {"memory_top_k": 0, "remember_messages": True},
    }
    data_dir = str(tmp_path)
    tools = serve.deployment(ToolExecutorDeployment, name="ToolExecutor", ray_actor_options={"num_cpus": 0.05})
    agent = serve.deployment(
        AgentDeployment,
        name="Agent",
        graceful_shutdown_timeout_s=60,
        ray_actor_options={"num_cpus": 0.05, "runtime_env": {"env_vars": {"AGENTSERVE_DATA_DIR": data_dir}}},
    )

    @serve.deployment(ray_actor_options={"num_cpus": 0.05})
    class Front:
        def __init__(self, agent: Any) -> None:
            self.agent = agent

        async def chat(self, request: ChatRequest) -> Any:
            return await self.agent.chat.remote(request)

    app = Front.bind(agent.bind(tools.bind([]), slow_embedding, args))
    handle = serve.run(app, name="drain-agent", route_prefix=None)
    memory = LanceVectorMemory(os.path.join(data_dir, "lancedb"))
    await memory.setup()
    try:
        reply = await handle.chat.remote(ChatRequest(message=MESSAGE, user_id=USER))
        assert reply.response
        # The reply is back and the message is not stored yet: it waits on the Embedding.
        assert await memory.count(USER) == 0
    finally:
        # Serve's graceful stop of the Agent replica (the Embedding runs on); not waited for,
        # as the Front is held for Serve's ingress drain.
        serve.delete("drain-agent", _blocking=False)
    try:
        deadline = time.monotonic() + EMBED_S + 15
        while time.monotonic() < deadline:  # the stopping replica's write lands in another process
            if await memory.count(USER):
                break
            await asyncio.sleep(0.5)
        hits = await memory.search(USER, _vector(MESSAGE), k=5)
        assert [hit.item.text for hit in hits] == [MESSAGE]
    finally:
        await memory.close()
