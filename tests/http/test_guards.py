"""Body size (413), content type (415), security headers, CORS; all in the one error shape."""

from __future__ import annotations

import httpx
import pytest

from serve_app.http.app import create_app
from tests.support.auth import dev_auth


async def test_oversized_body_is_413_before_any_work(client: httpx.AsyncClient) -> None:
    big = b'{"message": "' + b"x" * 1_100_000 + b'"}'
    r = await client.post("/api/chat", content=big, headers={"content-type": "application/json", "X-Request-ID": "r1"})
    assert r.status_code == 413
    assert r.json() == {"error": {"type": "payload_too_large", "message": "body: at most 1000000 bytes",
                                  "request_id": "r1"}}  # fmt: skip


async def test_streamed_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    async def chunks():  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield b"x" * 50_000

    r = await client.post("/api/chat", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"


async def test_wrong_content_type_is_415(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/chat", content=b"message=hi", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 415 and r.json()["error"]["type"] == "unsupported_media_type"


async def test_control_characters_and_bad_utf8_are_handled(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/chat", json={"message": "hi\u0000\u001b[31m there"})
    assert r.status_code == 200
    r = await client.post("/api/chat", content=b'{"message": "\xff\xfe"}', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "bad_request"


async def test_security_headers_on_every_response(client: httpx.AsyncClient) -> None:
    for r in [await client.get("/live"), await client.get("/api/nope"), await client.post("/api/chat", json={})]:
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["content-security-policy"].startswith("default-src 'none'")
    r = await client.get("/live", headers={"X-Forwarded-Proto": "https"})
    assert "max-age" in r.headers["strict-transport-security"]


async def test_cors_only_for_configured_origins(client: httpx.AsyncClient) -> None:
    app = create_app(client._transport.app.state.agent_service, auth=dev_auth(), cors_origins=["https://app.example"])  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
        r = await c.options("/api/chat", headers=pre)
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        r = await c.options("/api/chat", headers={**pre, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
    with pytest.raises(ValueError, match="CORS_ORIGINS"):
        create_app(app.state.agent_service, auth=dev_auth(), cors_origins=["*"])
