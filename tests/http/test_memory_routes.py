"""Memory routes and recall across sessions, in-process (fake embedder, exact vector search)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx

from serve_app.scripted_llm import ScriptedLLMServer


async def test_add_search_delete(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/memory", json={"text": "my dog is called Biscuit", "user_id": "alice"})
    assert r.status_code == 201
    item = r.json()
    assert item["kind"] == "note" and item["user_id"] == "alice"
    await client.post("/api/memory", json={"text": "I work on tax software", "user_id": "alice"})
    hits = (await client.get("/api/memory/search", params={"q": "what is my dog called", "user_id": "alice"})).json()
    assert hits[0]["item"]["id"] == item["id"] and hits[0]["score"] > hits[1]["score"]
    assert (await client.delete(f"/api/memory/{item['id']}", params={"user_id": "alice"})).status_code == 204
    hits = (await client.get("/api/memory/search", params={"q": "dog Biscuit", "user_id": "alice"})).json()
    assert item["id"] not in [h["item"]["id"] for h in hits]


async def test_memories_are_per_user(client: httpx.AsyncClient) -> None:
    item = (await client.post("/api/memory", json={"text": "alice's secret plan", "user_id": "alice"})).json()
    hits = (await client.get("/api/memory/search", params={"q": "secret plan", "user_id": "bob"})).json()
    assert hits == []
    r = await client.delete(f"/api/memory/{item['id']}", params={"user_id": "bob"})
    missing = await client.delete("/api/memory/mem_nope", params={"user_id": "bob"})
    assert r.status_code == missing.status_code == 404
    hits = (await client.get("/api/memory/search", params={"q": "secret plan", "user_id": "alice"})).json()
    assert [h["item"]["id"] for h in hits] == [item["id"]]


async def test_memory_validation(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/memory", json={"text": ""})
    assert r.status_code == 422 and r.json()["error"]["field"] == "text"
    r = await client.get("/api/memory/search", params={"q": "x", "k": 0})
    assert r.status_code == 422 and r.json()["error"]["field"] == "k"
    r = await client.get("/api/memory/search")
    assert r.status_code == 422 and r.json()["error"]["field"] == "q"


async def test_an_earlier_session_is_recalled_in_a_new_one(
    client: httpx.AsyncClient, scripted_llm: ScriptedLLMServer
) -> None:
    await client.post("/api/chat", json={"message": "my favourite colour is teal", "user_id": "carol"})
    await client.post("/api/chat", json={"message": "what is my favourite colour", "user_id": "carol"})
    system = scripted_llm.app.state.requests[-1]["messages"][0]["content"]
    assert "my favourite colour is teal" in system
    # another user's memories never appear
    await client.post("/api/chat", json={"message": "what is my favourite colour", "user_id": "dave"})
    assert "teal" not in scripted_llm.app.state.requests[-1]["messages"][0]["content"]


async def test_deleting_a_session_forgets_its_memories(client: httpx.AsyncClient) -> None:
    sid = (await client.post("/api/chat", json={"message": "remember pineapples", "user_id": "erin"})).json()[
        "session_id"
    ]
    assert (await client.get("/api/memory/search", params={"q": "pineapples", "user_id": "erin"})).json()
    assert (await client.delete(f"/api/sessions/{sid}", params={"user_id": "erin"})).status_code == 204
    assert (await client.get("/api/memory/search", params={"q": "pineapples", "user_id": "erin"})).json() == []


async def test_memory_search_tool_is_offered_and_scoped(
    client: httpx.AsyncClient, scripted_llm: ScriptedLLMServer
) -> None:
    await client.post("/api/memory", json={"text": "flight to Lisbon on May 3", "user_id": "fay"})
    r = await client.post(
        "/api/chat", json={"message": 'tool: memory_search {"query": "Lisbon flight"}', "user_id": "fay"}
    )
    call = r.json()["tool_calls"][0]
    assert call["name"] == "memory_search" and "Lisbon" in call["result"]
    tools = [t["function"]["name"] for t in scripted_llm.app.state.requests[0]["tools"]]
    assert "memory_search" in tools
    r = await client.post(
        "/api/chat", json={"message": 'tool: memory_search {"query": "Lisbon flight"}', "user_id": "gus"}
    )
    assert "Lisbon" not in r.json()["tool_calls"][0]["result"]


async def test_a_turn_embeds_its_message_once(scripted_llm: ScriptedLLMServer) -> None:
    from agent.config import AgentConfig
    from agent.dto import ChatRequest
    from agent.llm import LLMEndpoint, OpenAILLMClient
    from agent.loop import Agent
    from agent.semantic import SemanticMemory
    from memory.in_memory import InMemoryConversationStore
    from memory.vector_in_memory import InMemoryVectorMemory
    from tests.support.fake_embedder import HashingEmbedder
    from tools import build_registry

    embedder = HashingEmbedder()
    llm = OpenAILLMClient(LLMEndpoint(base_url=scripted_llm.base_url, model="s", max_retries=0))
    agent = Agent(llm, build_registry(), InMemoryConversationStore(), AgentConfig(),
                  memory=SemanticMemory(embedder, InMemoryVectorMemory()))  # fmt: skip
    await agent.chat(ChatRequest(message="hello there", user_id="once"))
    assert embedder.calls == [["hello there"]]
    hits = await agent.memory.recall("once", "hello there", 1)  # type: ignore[union-attr]
    assert hits[0].item.text == "hello there"


class _GatedEmbedder:
    """Records that it was asked (``asked``), then embeds once ``release`` is set."""

    def __init__(self, release: asyncio.Event, fail: bool = False) -> None:
        self.asked = asyncio.Event()
        self.release = release
        self.fail = fail
        self.cancelled = False

    async def embed(self, texts: list[str]) -> list[list[float]]:
        from tests.support.fake_embedder import HashingEmbedder

        self.asked.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.fail:
            raise ConnectionError("embedding replica gone")
        return [HashingEmbedder._one(t) for t in texts]


def _gated_agent(
    scripted_llm: ScriptedLLMServer, embedder: _GatedEmbedder, history_gate: asyncio.Event | None, **config: Any
) -> Any:
    """An agent whose store serves a session's history only once ``history_gate`` is set."""
    from agent.config import AgentConfig
    from agent.llm import LLMEndpoint, OpenAILLMClient
    from agent.loop import Agent
    from agent.semantic import SemanticMemory
    from memory.in_memory import InMemoryConversationStore
    from memory.vector_in_memory import InMemoryVectorMemory
    from tools import build_registry

    class Store(InMemoryConversationStore):
        async def history(self, session_id: str, limit: int) -> Any:
            if history_gate is not None:
                await history_gate.wait()
            return await super().history(session_id, limit)

    llm = OpenAILLMClient(LLMEndpoint(base_url=scripted_llm.base_url, model="s", max_retries=0))
    return Agent(llm, build_registry(), Store(), AgentConfig(**config),
                 memory=SemanticMemory(embedder, InMemoryVectorMemory()))  # fmt: skip


async def test_the_recall_runs_while_the_session_is_read(scripted_llm: ScriptedLLMServer) -> None:
    """Behind Serve the embedding is a hop to another replica: it overlaps the store reads.

    The store serves the history only once the embedder has been asked; were the recall
    to start after the session reads, this turn would never finish.
    """
    from agent.dto import ChatRequest

    embedder = _GatedEmbedder(asyncio.Event())
    embedder.release.set()
    agent = _gated_agent(scripted_llm, embedder, embedder.asked)
    await asyncio.wait_for(agent.chat(ChatRequest(message="my cat is Tom", user_id="u")), 30)
    # A later session recalls it, through the same overlapped path.
    embedder.asked.clear()
    await asyncio.wait_for(agent.chat(ChatRequest(message="what is my cat called", user_id="u")), 30)
    system = scripted_llm.app.state.requests[-1]["messages"][0]["content"]
    assert "my cat is Tom" in system


async def test_a_failed_recall_still_answers_and_a_closed_turn_cancels_it(scripted_llm: ScriptedLLMServer) -> None:
    from agent.dto import ChatRequest

    failing = _GatedEmbedder(asyncio.Event(), fail=True)
    failing.release.set()
    agent = _gated_agent(scripted_llm, failing, None)
    resp = await asyncio.wait_for(agent.chat(ChatRequest(message="hello", user_id="v")), 30)
    assert resp.response == "You said: hello"
    assert scripted_llm.app.state.requests[-1]["messages"][0]["content"] == agent.config.system_prompt

    # A stream closed before the recall finished (the client went away) cancels it.
    stuck = _GatedEmbedder(asyncio.Event())  # never released
    agent = _gated_agent(scripted_llm, stuck, asyncio.Event())  # nor is the history
    stream = agent.stream(ChatRequest(message="hello", user_id="w"))
    step = asyncio.ensure_future(stream.__anext__())
    await asyncio.wait_for(stuck.asked.wait(), 30)
    step.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await step
    await stream.aclose()
    await asyncio.sleep(0)
    assert stuck.cancelled


async def test_a_stuck_embedding_holds_a_turn_no_longer_than_memory_timeout_s(scripted_llm: ScriptedLLMServer) -> None:
    """Recall and remembering each give up after ``memory_timeout_s``; the turn answers and is stored."""
    from agent.dto import ChatRequest

    stuck = _GatedEmbedder(asyncio.Event())  # never released
    agent = _gated_agent(scripted_llm, stuck, None, memory_timeout_s=0.2)
    resp = await asyncio.wait_for(agent.chat(ChatRequest(message="hello", user_id="x")), 5)
    assert resp.response == "You said: hello"
    assert stuck.cancelled  # the embed calls were given up, not left running
    assert scripted_llm.app.state.requests[-1]["messages"][0]["content"] == agent.config.system_prompt
    history = await agent.store.history(resp.session_id, 10)
    assert [m.content for m in history] == ["hello", "You said: hello"]
