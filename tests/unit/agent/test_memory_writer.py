"""A turn's message is remembered in the background: the reply does not wait for the
vector store, and no read of the user's memory can miss it or bring a forgotten one back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agent.dto import ChatRequest
from agent.ports import MemoryItem
from agent.semantic import SemanticMemory
from memory.vector_in_memory import InMemoryVectorMemory
from serve_app.scripted_llm import ScriptedLLMServer
from tests.support.fake_embedder import HashingEmbedder
from tests.support.gated_store import GatedStore


def memory(store: GatedStore, **kw: Any) -> SemanticMemory:
    return SemanticMemory(HashingEmbedder(), store, **kw)  # type: ignore[arg-type]


async def queue(mem: SemanticMemory, user: str, message: str, session_id: str) -> MemoryItem:
    """What a turn does: the message with the vector its recall made."""
    return await mem.remember_later(user, message, session_id, HashingEmbedder._one(message))


async def texts(mem: SemanticMemory, user: str, query: str = "anything") -> list[str]:
    return sorted(h.item.text for h in await mem.recall(user, query, 20))


async def test_remember_later_returns_before_the_store_has_written_and_a_read_waits_for_it() -> None:
    store = GatedStore(InMemoryVectorMemory())
    store.gate.clear()
    mem = memory(store)
    await asyncio.wait_for(queue(mem, "u", "my cat is called Miso", "s1"), 1)
    await asyncio.wait_for(store.add_started.wait(), 1)
    read = asyncio.ensure_future(texts(mem, "u", "cat"))
    await asyncio.sleep(0.05)
    assert not read.done()  # the read waits for the queued write ...
    store.gate.set()
    assert await asyncio.wait_for(read, 1) == ["my cat is called Miso"]  # ... and sees it


async def test_a_recall_for_the_turns_own_session_does_not_wait_for_its_writes() -> None:
    store = GatedStore(InMemoryVectorMemory())
    mem = memory(store)
    await mem.remember("u", "from an earlier session", "s0")
    store.gate.clear()
    await queue(mem, "u", "said in this session", "s1")
    hits, _ = await asyncio.wait_for(mem.recall_with_vector("u", "session", 5, except_session="s1"), 1)
    assert [h.item.text for h in hits] == ["from an earlier session"]
    other = asyncio.ensure_future(mem.recall_with_vector("u", "session", 5, except_session="s2"))
    await asyncio.sleep(0.05)
    assert not other.done()  # s1's write is another session's for this caller
    store.gate.set()
    hits, _ = await asyncio.wait_for(other, 1)
    assert sorted(h.item.text for h in hits) == ["from an earlier session", "said in this session"]


async def test_a_forgotten_session_does_not_come_back_from_a_queued_write() -> None:
    store = GatedStore(InMemoryVectorMemory())
    store.gate.clear()
    mem = memory(store)
    await queue(mem, "u", "a secret to forget", "s1")
    await queue(mem, "u", "kept from another session", "s2")
    forget = asyncio.ensure_future(mem.forget_session("u", "s1"))
    await asyncio.sleep(0.05)
    assert not forget.done()  # the delete waits for the write it must remove
    store.gate.set()
    assert await asyncio.wait_for(forget, 1) == 1
    assert await texts(mem, "u") == ["kept from another session"]


async def test_writes_queued_while_one_is_stored_go_in_one_add() -> None:
    store = GatedStore(InMemoryVectorMemory())
    store.gate.clear()
    mem = memory(store)
    await queue(mem, "a", "first", "s")
    await asyncio.wait_for(store.add_started.wait(), 1)
    for i in range(5):
        await queue(mem, "a" if i % 2 else "b", f"queued {i}", "s")
    store.gate.set()
    await mem.settled("a")
    await mem.settled("b")
    assert store.adds == [["first"], [f"queued {i}" for i in range(5)]]
    assert await texts(mem, "a") == ["first", "queued 1", "queued 3"]
    assert await texts(mem, "b") == ["queued 0", "queued 2", "queued 4"]


async def test_a_failing_store_drops_the_writes_and_holds_no_reader() -> None:
    mem = memory(GatedStore(InMemoryVectorMemory(), fail=True))
    await queue(mem, "u", "lost", "s")
    assert await asyncio.wait_for(texts(mem, "u"), 1) == []
    assert mem.dropped == 1


async def test_a_stuck_store_is_given_up_after_write_timeout_s() -> None:
    store = GatedStore(InMemoryVectorMemory())
    store.gate.clear()  # never released
    mem = memory(store, write_timeout_s=0.1)
    await queue(mem, "u", "stuck", "s")
    assert await asyncio.wait_for(texts(mem, "u"), 2) == []
    assert mem.dropped == 1
    store.gate.set()
    await queue(mem, "u", "the writer goes on", "s")
    assert await asyncio.wait_for(texts(mem, "u"), 2) == ["the writer goes on"]


async def test_a_full_queue_makes_remember_later_wait_for_room() -> None:
    store = GatedStore(InMemoryVectorMemory())
    store.gate.clear()
    mem = memory(store, max_pending=2)
    await queue(mem, "u", "one", "s")
    await queue(mem, "u", "two", "s")
    third = asyncio.ensure_future(queue(mem, "u", "three", "s"))
    await asyncio.sleep(0.05)
    assert not third.done()
    store.gate.set()
    await asyncio.wait_for(third, 1)
    assert await texts(mem, "u") == ["one", "three", "two"]


async def test_close_stores_what_is_queued_and_counts_what_it_could_not() -> None:
    store = GatedStore(InMemoryVectorMemory())
    mem = memory(store)
    store.gate.clear()
    await queue(mem, "u", "queued before the stop", "s")
    asyncio.get_running_loop().call_later(0.05, store.gate.set)
    assert await mem.close(timeout_s=2) == 0
    assert await texts(mem, "u") == ["queued before the stop"]

    stuck = GatedStore(InMemoryVectorMemory())
    stuck.gate.clear()
    mem = memory(stuck)
    await queue(mem, "u", "a", "s")
    await queue(mem, "u", "b", "s")
    assert await asyncio.wait_for(mem.close(timeout_s=0.1), 2) == 2
    assert mem.dropped == 2
    assert await asyncio.wait_for(texts(mem, "u"), 1) == []  # no reader waits on a closed writer


async def test_a_message_without_a_vector_is_embedded_by_the_writer() -> None:
    mem = memory(GatedStore(InMemoryVectorMemory()))
    await mem.remember_later("u", "no vector yet", "s", None)
    hits = await mem.recall("u", "no vector yet", 1)
    assert hits[0].item.text == "no vector yet" and hits[0].score == pytest.approx(1.0, abs=1e-6)


async def test_the_reply_does_not_wait_for_the_vector_store(scripted_llm: ScriptedLLMServer, tmp_path: Path) -> None:
    """A whole turn on real LanceDB: answered and stored while its memory write is held."""
    from agent.config import AgentConfig
    from agent.llm import LLMEndpoint, OpenAILLMClient
    from agent.loop import Agent
    from memory.in_memory import InMemoryConversationStore
    from memory.lance_memory import LanceVectorMemory
    from tools import build_registry

    lance = LanceVectorMemory(str(tmp_path / "lance"))
    store = GatedStore(lance)
    await store.setup()
    mem = memory(store)
    llm = OpenAILLMClient(LLMEndpoint(base_url=scripted_llm.base_url, model="s", max_retries=0))
    agent = Agent(llm, build_registry(), InMemoryConversationStore(), AgentConfig(), memory=mem)
    await agent.chat(ChatRequest(message="I live in Lisbon", user_id="v"))  # an earlier session
    await mem.settled("v")
    store.gate.clear()
    resp = await asyncio.wait_for(agent.chat(ChatRequest(message="my bike is green", user_id="v")), 5)
    assert resp.response == "You said: my bike is green"
    assert await agent.store.history(resp.session_id, 10)  # the turn itself is durable
    assert store.adds[-1] == ["my bike is green"]  # its memory write is still held
    # the next session's recall waits for it and finds it
    store.gate.set()
    await agent.chat(ChatRequest(message="what colour is my bike", user_id="v"))
    system = scripted_llm.app.state.requests[-1]["messages"][0]["content"]
    assert "my bike is green" in system
    assert await texts(mem, "v") == ["I live in Lisbon", "my bike is green", "what colour is my bike"]
    await mem.close(timeout_s=1)
    await lance.close()


async def test_a_session_deleted_through_another_replica_does_not_come_back(scripted_llm: ScriptedLLMServer) -> None:
    """Two Agent replicas over one conversation store and one vector store: the replica that
    deletes the session cannot see the other's queue, so the write is undone once it lands."""
    from agent.config import AgentConfig
    from agent.llm import LLMEndpoint, OpenAILLMClient
    from agent.loop import Agent
    from memory.in_memory import InMemoryConversationStore
    from tools import build_registry

    conversations, vectors = InMemoryConversationStore(), InMemoryVectorMemory()
    store = GatedStore(vectors)
    llm = OpenAILLMClient(LLMEndpoint(base_url=scripted_llm.base_url, model="s", max_retries=0))
    one = Agent(llm, build_registry(), conversations, AgentConfig(), memory=memory(store))
    other = memory(GatedStore(vectors))  # the second replica's memory, same vectors
    await one.chat(ChatRequest(message="kept in another session", user_id="w"))
    assert one.memory is not None
    await one.memory.settled("w")
    store.gate.clear()
    resp = await one.chat(ChatRequest(message="delete this conversation please", user_id="w"))
    # the other replica deletes the session, as AgentDeployment.delete_session does
    await conversations.delete_session(resp.session_id, "w")
    assert await other.forget_session("w", resp.session_id) == 0  # not written yet
    store.gate.set()
    await one.memory.settled("w")
    assert await texts(other, "w") == ["kept in another session"]
