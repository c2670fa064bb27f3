"""Session routes through httpx.ASGITransport: paging and isolation."""

from __future__ import annotations

import httpx


async def test_sessions_list_get_messages_delete(client: httpx.AsyncClient) -> None:
    ids = []
    for i in range(3):
        r = await client.post("/api/chat", json={"message": f"hello {i}", "user_id": "alice"})
        ids.append(r.json()["session_id"])
    page1 = (await client.get("/api/sessions", params={"user_id": "alice", "limit": 2})).json()
    assert len(page1["items"]) == 2 and page1["next_cursor"]
    page2 = (
        await client.get("/api/sessions", params={"user_id": "alice", "limit": 2, "cursor": page1["next_cursor"]})
    ).json()
    listed = [s["id"] for s in page1["items"] + page2["items"]]
    assert listed == list(reversed(ids))  # most recently updated first, no overlap, no gap

    s = (await client.get(f"/api/sessions/{ids[0]}", params={"user_id": "alice"})).json()
    assert s["id"] == ids[0] and s["title"] == "hello 0"
    msgs = (await client.get(f"/api/sessions/{ids[0]}/messages", params={"user_id": "alice"})).json()
    assert [m["role"] for m in msgs["items"]] == ["user", "assistant"]

    assert (await client.delete(f"/api/sessions/{ids[0]}", params={"user_id": "alice"})).status_code == 204
    assert (await client.get(f"/api/sessions/{ids[0]}", params={"user_id": "alice"})).status_code == 404


async def test_other_users_cannot_see_or_delete(client: httpx.AsyncClient) -> None:
    sid = (await client.post("/api/chat", json={"message": "secret", "user_id": "alice"})).json()["session_id"]
    for method, path in [
        ("GET", f"/api/sessions/{sid}"),
        ("GET", f"/api/sessions/{sid}/messages"),
        ("DELETE", f"/api/sessions/{sid}"),
    ]:
        r = await client.request(method, path, params={"user_id": "mallory"})
        missing = await client.request(method, "/api/sessions/ses_doesnotexist", params={"user_id": "mallory"})
        assert r.status_code == missing.status_code == 404
        assert r.json()["error"]["type"] == missing.json()["error"]["type"] == "not_found"
    assert (await client.get("/api/sessions", params={"user_id": "mallory"})).json()["items"] == []
    assert (await client.get(f"/api/sessions/{sid}", params={"user_id": "alice"})).status_code == 200


async def test_bad_paging_parameters(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/sessions", params={"limit": 0})
    assert r.status_code == 422 and r.json()["error"]["field"] == "limit"
    r = await client.get("/api/sessions", params={"cursor": "not-a-cursor"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "cursor"
