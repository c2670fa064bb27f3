"""Conversations outlive replicas: the store (SQLite by default) is the truth."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from serve_app.scripted_llm import ScriptedLLMServer

pytestmark = pytest.mark.serve


def _kill_agent_replicas() -> int:
    import ray

    killed = 0
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == "serve" and "Agent" in actor["name"] and "agentserve" in actor["name"]:
            ray.kill(ray.get_actor(actor["name"], namespace="serve"), no_restart=True)
            killed += 1
    return killed


async def test_context_survives_an_agent_replica_restart(
    http: httpx.AsyncClient, scripted_llm: ScriptedLLMServer
) -> None:
    first = (await http.post("/api/chat", json={"message": "remember the llama", "user_id": "r1"})).json()
    assert _kill_agent_replicas() >= 1
    body = None
    for _ in range(120):  # the controller replaces the replica; requests fail meanwhile
        r = await http.post(
            "/api/chat", json={"message": "what did I say?", "user_id": "r1", "session_id": first["session_id"]}
        )
        if r.status_code == 200:
            body = r.json()
            break
        await asyncio.sleep(0.5)
    assert body is not None and body["session_id"] == first["session_id"]
    sent = scripted_llm.app.state.requests[-1]["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == ["remember the llama", "what did I say?"]
    msgs = (await http.get(f"/api/sessions/{first['session_id']}/messages", params={"user_id": "r1"})).json()
    assert len(msgs["items"]) == 4


async def test_isolation_and_idempotency_over_http(http: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "serve-retry-1"}
    a = await http.post("/api/chat", json={"message": "calc: 8*8", "user_id": "alice"}, headers=headers)
    b = await http.post("/api/chat", json={"message": "calc: 8*8", "user_id": "alice"}, headers=headers)
    assert a.status_code == 200 and b.json() == a.json()
    sid = a.json()["session_id"]
    assert (await http.get(f"/api/sessions/{sid}", params={"user_id": "bob"})).status_code == 404
    assert sid not in [s["id"] for s in (await http.get("/api/sessions", params={"user_id": "bob"})).json()["items"]]
    assert sid in [s["id"] for s in (await http.get("/api/sessions", params={"user_id": "alice"})).json()["items"]]
    assert (await http.delete(f"/api/sessions/{sid}", params={"user_id": "bob"})).status_code == 404
    assert (await http.delete(f"/api/sessions/{sid}", params={"user_id": "alice"})).status_code == 204


async def test_memory_from_an_earlier_session_is_recalled(
    http: httpx.AsyncClient, scripted_llm: ScriptedLLMServer
) -> None:
    """Real MiniLM embeddings through the Embedding deployment, LanceDB on disk."""
    await http.post("/api/chat", json={"message": "My sister Maria lives in Porto.", "user_id": "mem1"})
    await http.post("/api/chat", json={"message": "Where does my sister live?", "user_id": "mem1"})
    system = scripted_llm.app.state.requests[-1]["messages"][0]["content"]
    assert "My sister Maria lives in Porto." in system
    await http.post("/api/chat", json={"message": "Where does my sister live?", "user_id": "mem2"})
    assert "Porto" not in scripted_llm.app.state.requests[-1]["messages"][0]["content"]


async def test_memory_api_over_http(http: httpx.AsyncClient) -> None:
    r = await http.post("/api/memory", json={"text": "The wifi password is on the fridge.", "user_id": "m3"})
    assert r.status_code == 201, r.text
    item = r.json()
    hits = (await http.get("/api/memory/search", params={"q": "where is the wifi password", "user_id": "m3"})).json()
    assert hits[0]["item"]["id"] == item["id"] and hits[0]["score"] > 0.5
    assert (await http.get("/api/memory/search", params={"q": "wifi password", "user_id": "m4"})).json() == []
    assert (await http.delete(f"/api/memory/{item['id']}", params={"user_id": "m4"})).status_code == 404
    assert (await http.delete(f"/api/memory/{item['id']}", params={"user_id": "m3"})).status_code == 204
