"""Semantic memory on the metrics page: a turn's recall by outcome and time, its
background write by outcome, and the writes still queued, as an operator sees them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.dto import ChatRequest
from agent.llm import LLMEndpoint, OpenAILLMClient
from agent.loop import Agent
from agent.semantic import SemanticMemory
from memory.in_memory import InMemoryConversationStore
from memory.vector_in_memory import InMemoryVectorMemory
from serve_app.observability import PrometheusBackend
from serve_app.observability.observer import MetricsObserver
from serve_app.scripted_llm import ScriptedLLMServer
from tests.support.fake_embedder import HashingEmbedder
from tests.support.gated_store import GatedStore
from tests.support.prom import sample
from tools import build_registry


class BrokenEmbedder(HashingEmbedder):
    """Fails (``hang=False``) or never answers (``hang=True``)."""

    def __init__(self, *, hang: bool) -> None:
        super().__init__()
        self.hang = hang

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if self.hang:
            await asyncio.Event().wait()
        raise ConnectionError("embedding replica unreachable")


def agent_with(memory: SemanticMemory, llm_url: str, observer: MetricsObserver, **config: Any) -> Agent:
    llm = OpenAILLMClient(LLMEndpoint(base_url=llm_url, model="s", max_retries=0))
    return Agent(llm, build_registry(), InMemoryConversationStore(), AgentConfig(**config), memory=memory,
                 observer=observer)  # fmt: skip


def page(backend: PrometheusBackend) -> str:
    return backend.render().decode()


async def test_a_turns_recall_and_its_queued_then_stored_write(
    scripted_llm: ScriptedLLMServer, prometheus: PrometheusBackend
) -> None:
    observer = MetricsObserver()
    store = GatedStore(InMemoryVectorMemory())
    mem = SemanticMemory(HashingEmbedder(), store, observer=observer)
    agent = agent_with(mem, scripted_llm.base_url, observer)
    store.gate.clear()
    await agent.chat(ChatRequest(message="my bike is green", user_id="u"))

    held = page(prometheus)
    assert sample(held, "ray_agentserve_memory_recalls_total", outcome="ok") == 1
    assert sample(held, "ray_agentserve_memory_recall_duration_seconds_count") == 1
    assert sample(held, "ray_agentserve_memory_write_queue") == 1  # answered, its write still held
    assert sample(held, "ray_agentserve_memory_writes_total", 0.0, outcome="stored") == 0

    store.gate.set()
    await mem.settled("u")
    done = page(prometheus)
    assert sample(done, "ray_agentserve_memory_write_queue") == 0
    assert sample(done, "ray_agentserve_memory_writes_total", outcome="stored") == 1
    assert sample(done, "ray_agentserve_memory_writes_total", 0.0, outcome="dropped") == 0


async def test_writes_that_never_reach_the_store_count_as_dropped(prometheus: PrometheusBackend) -> None:
    observer = MetricsObserver()
    failing = SemanticMemory(HashingEmbedder(), GatedStore(InMemoryVectorMemory(), fail=True), observer=observer)
    await failing.remember_later("u", "lost to a failing store", "s", None)
    await failing.settled("u")

    full_store = GatedStore(InMemoryVectorMemory())
    full_store.gate.clear()
    full = SemanticMemory(HashingEmbedder(), full_store, observer=observer, max_pending=1)
    await full.remember_later("u", "takes the only place", "s", None)
    with pytest.raises(TimeoutError):  # the turn's memory_timeout_s, with the queue full
        await asyncio.wait_for(full.remember_later("u", "finds no room", "s", None), 0.05)
    assert (failing.dropped, full.dropped) == (1, 1)

    text = page(prometheus)
    assert sample(text, "ray_agentserve_memory_writes_total", outcome="dropped") == 2
    assert sample(text, "ray_agentserve_memory_write_queue") == 1  # the one still held

    assert await full.close(timeout_s=0.05) == 1  # the stop gives up on it
    text = page(prometheus)
    assert sample(text, "ray_agentserve_memory_writes_total", outcome="dropped") == 3
    assert sample(text, "ray_agentserve_memory_write_queue") == 0


@pytest.mark.parametrize(("hang", "outcome"), [(False, "error"), (True, "timeout")])
async def test_a_recall_that_fails_is_counted_and_the_turn_goes_on(
    scripted_llm: ScriptedLLMServer, prometheus: PrometheusBackend, hang: bool, outcome: str
) -> None:
    observer = MetricsObserver()
    mem = SemanticMemory(BrokenEmbedder(hang=hang), InMemoryVectorMemory(), observer=observer)
    agent = agent_with(mem, scripted_llm.base_url, observer, memory_timeout_s=0.2, remember_messages=False)
    resp = await asyncio.wait_for(agent.chat(ChatRequest(message="hello there", user_id="u")), 5)
    assert resp.response == "You said: hello there"
    text = page(prometheus)
    assert sample(text, "ray_agentserve_memory_recalls_total", outcome=outcome) == 1
    assert sample(text, "ray_agentserve_memory_recalls_total", 0.0, outcome="ok") == 0
    assert sample(text, "ray_agentserve_memory_recall_duration_seconds_count") == 1
