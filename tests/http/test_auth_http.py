"""Authentication over HTTP: a small app built here with the real auth dependencies and key routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI

from agent.dto import utcnow
from memory.in_memory import InMemoryConversationStore
from serve_app.auth.api_keys import create_api_key
from serve_app.auth.config import AuthSettings
from serve_app.auth.deps import ChatPrincipal, PrincipalDep, ToolsPrincipal, install_auth, unprotected_routes
from serve_app.http.errors import install_error_handlers
from serve_app.http.identity import Principal
from serve_app.http.middleware import RequestIdMiddleware
from serve_app.http.routes import health, keys
from serve_app.http.services import CheckResult
from tests.http.app_support import bearer
from tests.http.app_support import token as shared_token
from tests.unit.auth.support import SECRET, make_settings

settings = make_settings


class HealthyService:
    async def health(self) -> dict[str, CheckResult]:
        return {"store": CheckResult(ok=True, latency_ms=1.0)}


def who(p: Principal) -> dict[str, Any]:
    return {"id": p.id, "kind": p.kind, "scopes": sorted(p.scopes)}


def build_app(auth: AuthSettings | None, store: InMemoryConversationStore) -> FastAPI:
    app = FastAPI()
    app.state.agent_service = HealthyService()
    app.state.health_cache = None
    install_error_handlers(app)
    if auth is not None:
        install_auth(app, auth, store)

    @app.get("/api/whoami")
    async def whoami(principal: PrincipalDep) -> dict[str, Any]:
        return who(principal)

    @app.post("/api/chat")
    async def chat(principal: ChatPrincipal) -> dict[str, Any]:
        return who(principal)

    @app.post("/api/tools/{name}")
    async def run_tool(name: str, principal: ToolsPrincipal) -> dict[str, Any]:
        return who(principal)

    @app.get("/v1/models")
    async def models(principal: PrincipalDep) -> dict[str, Any]:
        return {"object": "list", "data": []}

    app.include_router(health.router)
    app.include_router(keys.router)
    app.add_middleware(RequestIdMiddleware)
    return app


@pytest.fixture
def store() -> InMemoryConversationStore:
    return InMemoryConversationStore()


ClientFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def make_client(store: InMemoryConversationStore) -> AsyncIterator[ClientFactory]:
    made: list[httpx.AsyncClient] = []

    def make(auth: AuthSettings | None = None, *, install: bool = True) -> httpx.AsyncClient:
        app = build_app((auth or settings()) if install else None, store)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        made.append(httpx.AsyncClient(transport=transport, base_url="http://test"))
        return made[-1]

    yield make
    for c in made:
        await c.aclose()


@pytest.fixture
def client(make_client: ClientFactory) -> httpx.AsyncClient:
    return make_client()


def token(sub: str = "alice", scope: str = "chat memory", **extra: Any) -> str:
    return shared_token(sub, scope, **extra)


def assert_401(r: httpx.Response, *secrets: str) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["error"]["type"] == "unauthorized"
    for s in (SECRET, *secrets):
        assert s not in r.text and s not in str(r.headers)


# ---------------------------------------------------------------- 401 / 200 / 403


async def test_no_credentials_is_401_with_www_authenticate(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/whoami")
    assert_401(r)
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
    assert_401(await client.post("/api/chat"))
    assert_401(await client.get("/api/whoami", headers={"Authorization": "Basic YWxpY2U6cHc="}))


async def test_the_openai_api_answers_401_in_openai_shape(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models", headers=bearer("garbage"))
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["error"]["type"] == "authentication_error" and r.json()["error"]["code"] == "unauthorized"
    assert (await client.get("/v1/models", headers=bearer(token()))).status_code == 200


async def test_a_user_id_is_no_credential_when_auth_is_required(client: httpx.AsyncClient) -> None:
    assert_401(await client.get("/api/whoami?user_id=alice", headers={"X-User-ID": "alice"}))


async def test_bad_tokens_are_401_and_never_echoed(client: httpx.AsyncClient) -> None:
    wrong_secret = jwt.encode({"sub": "alice", "exp": utcnow() + timedelta(minutes=5)}, "x" * 40, algorithm="HS256")
    expired = token(exp=utcnow() - timedelta(hours=1))
    for bad in ("garbage", wrong_secret, expired, token() + "x"):
        assert_401(await client.get("/api/whoami", headers=bearer(bad)), bad)
    r = await client.get("/api/whoami", headers=bearer(expired))
    assert r.json()["error"]["message"] == "token expired"


async def test_a_valid_jwt_is_the_principal(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/whoami", headers=bearer(token("bob", "chat")))
    assert r.status_code == 200 and r.json() == {"id": "bob", "kind": "jwt", "scopes": ["chat"]}
    assert (await client.post("/api/chat", headers=bearer(token("bob", "chat")))).status_code == 200


async def test_an_api_key_works_in_its_header_and_as_a_bearer(
    client: httpx.AsyncClient, store: InMemoryConversationStore
) -> None:
    made = await create_api_key(store, "carol", "ci", ["chat", "tools:execute"])
    expected = {"id": "carol", "kind": "api_key", "scopes": ["chat", "tools:execute"]}
    for headers in ({"X-API-Key": made.key}, bearer(made.key)):
        r = await client.post("/api/tools/calculator", headers=headers)
        assert r.status_code == 200 and r.json() == expected
    assert (await store.list_api_keys())[0].last_used_at is not None


async def test_a_wrong_api_key_is_401_and_never_echoed(
    client: httpx.AsyncClient, store: InMemoryConversationStore
) -> None:
    made = await create_api_key(store, "carol", "ci", ["chat"])
    forged = made.key[:-4] + "AAAA"
    for headers in ({"X-API-Key": forged}, bearer(forged), {"X-API-Key": "nope"}):
        r = await client.get("/api/whoami", headers=headers)
        assert_401(r, forged, made.key)
        assert r.json()["error"]["message"] == "invalid API key"


async def test_two_credentials_at_once_are_refused(client: httpx.AsyncClient, store: InMemoryConversationStore) -> None:
    made = await create_api_key(store, "carol", "ci", ["chat"])
    assert_401(await client.get("/api/whoami", headers={"X-API-Key": made.key, **bearer(token())}), made.key)


async def test_a_missing_scope_is_403(client: httpx.AsyncClient, store: InMemoryConversationStore) -> None:
    r = await client.post("/api/tools/calculator", headers=bearer(token(scope="chat memory")))
    assert r.status_code == 403 and r.json()["error"]["type"] == "forbidden"
    assert "tools:execute" in r.json()["error"]["message"]
    assert "www-authenticate" not in r.headers
    made = await create_api_key(store, "carol", "ci", ["memory"])
    assert (await client.post("/api/chat", headers={"X-API-Key": made.key})).status_code == 403


async def test_health_routes_need_no_credentials(client: httpx.AsyncClient) -> None:
    for path in ("/live", "/ready", "/health"):
        assert (await client.get(path)).status_code == 200, path


def test_every_route_but_the_health_probes_asks_for_the_principal(store: InMemoryConversationStore) -> None:
    app = build_app(settings(), store)
    assert unprotected_routes(app) == []

    @app.get("/api/forgotten")
    async def forgotten() -> dict[str, str]:
        return {}

    assert unprotected_routes(app) == ["GET /api/forgotten"]


async def test_an_app_without_auth_installed_fails_closed(make_client: ClientFactory) -> None:
    c = make_client(install=False)
    r = await c.get("/api/whoami", headers=bearer(token()))
    assert r.status_code == 500 and r.json()["error"]["type"] == "internal_error"


# ---------------------------------------------------------------- key administration


async def test_admins_create_list_and_revoke_keys(client: httpx.AsyncClient) -> None:
    admin = bearer(token("root", "admin"))
    r = await client.post("/api/keys", headers=admin, json={"owner": "dave", "name": "bot", "scopes": ["chat"]})
    assert r.status_code == 201, r.text
    created = r.json()
    key, record = created["key"], created["record"]
    assert key.startswith(f"as_{record['prefix']}_") and record["owner"] == "dave" and record["revoked_at"] is None
    assert (await client.post("/api/chat", headers={"X-API-Key": key})).json()["id"] == "dave"

    listed = await client.get("/api/keys", headers=admin)
    assert listed.status_code == 200 and [k["id"] for k in listed.json()] == [record["id"]]
    assert key not in listed.text and "hash" not in listed.text
    assert (await client.get("/api/keys?owner=nobody", headers=admin)).json() == []

    assert (await client.delete(f"/api/keys/{record['id']}", headers=admin)).status_code == 204
    assert_401(await client.post("/api/chat", headers={"X-API-Key": key}), key)
    r = await client.post("/api/chat", headers={"X-API-Key": key})
    assert r.json()["error"]["message"] == "API key revoked"
    assert (await client.get("/api/keys", headers=admin)).json()[0]["revoked_at"] is not None


async def test_key_routes_need_admin(client: httpx.AsyncClient, store: InMemoryConversationStore) -> None:
    body = {"owner": "dave", "name": "bot", "scopes": ["admin"]}
    assert_401(await client.post("/api/keys", json=body))
    user = bearer(token("eve", "chat memory tools:execute"))
    assert (await client.post("/api/keys", headers=user, json=body)).status_code == 403
    assert (await client.get("/api/keys", headers=user)).status_code == 403
    made = await create_api_key(store, "eve", "mine", ["chat"])
    assert (await client.delete(f"/api/keys/{made.record.id}", headers=user)).status_code == 403
    assert not (await store.list_api_keys())[0].revoked


async def test_key_route_errors(client: httpx.AsyncClient) -> None:
    admin = bearer(token("root", "admin"))
    r = await client.post("/api/keys", headers=admin, json={"owner": "dave", "name": "bot", "scopes": ["root"]})
    assert r.status_code == 422 and r.json()["error"]["field"].startswith("scopes")
    r = await client.post("/api/keys", headers=admin, json={"owner": "dave smith", "name": "bot", "scopes": ["chat"]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "owner"
    r = await client.delete("/api/keys/key_missing", headers=admin)
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"


# ---------------------------------------------------------------- development mode


async def test_disabled_auth_trusts_the_user_id_without_admin(make_client: ClientFactory) -> None:
    c = make_client(settings(auth_mode="disabled"))
    dev_scopes = ["chat", "memory", "tools:execute", "tools:http_get"]  # every tool's scope, never admin
    r = await c.get("/api/whoami")
    assert r.status_code == 200 and r.json() == {"id": "anonymous", "kind": "anonymous", "scopes": dev_scopes}
    assert (await c.get("/api/whoami?user_id=alice")).json()["id"] == "alice"
    assert (await c.get("/api/whoami", headers={"X-User-ID": "bob"})).json() == {
        "id": "bob",
        "kind": "development",
        "scopes": dev_scopes,
    }
    assert (await c.post("/api/tools/calculator")).status_code == 200
    assert (await c.get("/api/keys")).status_code == 403
    assert (await c.get("/api/whoami?user_id=not%20valid")).status_code == 422


async def test_disabled_auth_uses_valid_credentials_and_ignores_invalid_ones(make_client: ClientFactory) -> None:
    c = make_client(settings(auth_mode="disabled"))
    # OpenAI SDKs always send some key: with auth disabled a bad one falls back to the dev principal
    r = await c.get("/api/whoami", headers=bearer("garbage"))
    assert r.status_code == 200 and r.json()["kind"] == "anonymous"
    r = await c.get("/api/keys", headers=bearer(token("root", "admin")))
    assert r.status_code == 200
    # ...which never has admin
    assert (await c.get("/api/keys", headers=bearer("garbage"))).status_code == 403
