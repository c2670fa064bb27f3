"""Rate limits on the whole app: one budget per authenticated principal, one limiter call per request.

The app authenticates with HS256 tokens and API keys (in the store); the limiter
is the in-process one, counting its calls (``CountingLimiter``), so a test can
say how many decisions a request took. The same decision on the real Redis is in
``tests/contract/test_rate_limiter.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from fastapi import FastAPI

from agent.keys import ApiKeyRecord
from memory.in_memory import InMemoryConversationStore
from serve_app.auth.api_keys import create_api_key
from serve_app.ratelimit.limiter import Bucket, InProcessRateLimiter, RateLimitDecision
from serve_app.scripted_llm import ScriptedLLMServer
from tests.http.app_support import bearer, build_full_app, client_of, token


class CountingLimiter(InProcessRateLimiter):
    """The in-process limiter, counting its decisions and charges."""

    def __init__(self) -> None:
        super().__init__()
        self.decisions: list[list[str]] = []
        self.charges: list[str] = []

    async def hit_all(self, buckets: Sequence[Bucket]) -> list[RateLimitDecision]:
        self.decisions.append([b.key for b in buckets])
        return await super().hit_all(buckets)

    async def charge(self, key: str, limit: int, window_s: float, cost: int) -> RateLimitDecision:
        self.charges.append(key)
        return await super().charge(key, limit, window_s, cost)


class CountingKeyStore(InMemoryConversationStore):
    """The in-memory store, counting API key lookups (one per credential check)."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    async def get_api_key_by_prefix(self, prefix: str) -> ApiKeyRecord | None:
        self.lookups += 1
        return await super().get_api_key_by_prefix(prefix)


@pytest.fixture
def store() -> CountingKeyStore:
    return CountingKeyStore()


@pytest.fixture
def limiter() -> CountingLimiter:
    return CountingLimiter()


def app_with(
    scripted_llm: ScriptedLLMServer, store: CountingKeyStore, limiter: CountingLimiter, **limits: int
) -> FastAPI:
    return build_full_app(scripted_llm.base_url, store=store, limiter=limiter, rate_limits=limits)


async def test_one_principal_with_two_keys_and_a_token_has_one_budget(
    scripted_llm: ScriptedLLMServer, store: CountingKeyStore, limiter: CountingLimiter
) -> None:
    app = app_with(scripted_llm, store, limiter, requests_per_minute=3)
    first = await create_api_key(store, "alice", "laptop", ["chat"])
    second = await create_api_key(store, "alice", "ci", ["chat"])
    other = await create_api_key(store, "bob", "laptop", ["chat"])
    async with client_of(app) as c:
        codes = [
            (await c.get("/api/sessions", headers=headers)).status_code
            for headers in ({"X-API-Key": first.key}, {"X-API-Key": second.key}, bearer(token("alice")))
        ]
        refused = await c.get("/api/sessions", headers={"X-API-Key": second.key})
        bob = await c.get("/api/sessions", headers={"X-API-Key": other.key})
    assert codes == [200, 200, 200]
    assert refused.status_code == 429 and refused.json()["error"]["message"] == "too many requests"
    assert bob.status_code == 200
    assert {key for keys in limiter.decisions for key in keys} == {"ip:10.0.0.1", "p:alice", "p:bob"}


async def test_each_request_is_one_decision_and_authenticates_once(
    scripted_llm: ScriptedLLMServer, store: CountingKeyStore, limiter: CountingLimiter
) -> None:
    app = app_with(scripted_llm, store, limiter, requests_per_minute=100)
    key = await create_api_key(store, "alice", "laptop", ["chat"])
    async with client_of(app) as c:
        listed = await c.get("/api/sessions", headers={"X-API-Key": key.key})
        chatted = await c.post("/api/chat", headers={"X-API-Key": key.key}, json={"message": "hello"})
    assert listed.status_code == 200 and chatted.status_code == 200, chatted.text
    # The chat path adds the token pre-check to the same decision.
    assert limiter.decisions == [["ip:10.0.0.1", "p:alice"], ["ip:10.0.0.1", "p:alice", "tok:alice"]]
    assert store.lookups == 2  # the limiter's authentication is the route's: the key is checked once
    assert limiter.charges == ["tok:alice"]  # the turn's tokens, to the principal


async def test_tokens_charged_to_one_key_refuse_the_principals_other_key(
    scripted_llm: ScriptedLLMServer, store: CountingKeyStore, limiter: CountingLimiter
) -> None:
    app = app_with(scripted_llm, store, limiter, tokens_per_minute=5)
    first = await create_api_key(store, "alice", "laptop", ["chat"])
    second = await create_api_key(store, "alice", "ci", ["chat"])
    async with client_of(app) as c:
        turn = await c.post("/api/chat", headers={"X-API-Key": first.key}, json={"message": "hello there my friend"})
        refused = await c.post("/api/chat", headers={"X-API-Key": second.key}, json={"message": "hello"})
        listed = await c.get("/api/sessions", headers={"X-API-Key": second.key})
    assert turn.status_code == 200 and turn.json()["usage"]["total_tokens"] > 5
    assert refused.status_code == 429 and "token" in refused.json()["error"]["message"]
    assert refused.headers["ratelimit-limit"] == "5"
    assert listed.status_code == 200  # only chat spends tokens


async def test_a_bad_credential_counts_against_its_address_only(
    scripted_llm: ScriptedLLMServer, store: CountingKeyStore, limiter: CountingLimiter
) -> None:
    app = app_with(scripted_llm, store, limiter, requests_per_minute=1, ip_requests_per_minute=3)
    async with client_of(app, "10.0.0.9") as c:
        r = await c.get("/api/sessions", headers=bearer("not-a-token"))
    assert r.status_code == 401
    assert limiter.decisions == [["ip:10.0.0.9"]]
    async with client_of(app, "10.0.0.1") as c:  # alice's budget is whole
        assert (await c.get("/api/sessions", headers=bearer(token("alice")))).status_code == 200


async def test_a_refused_address_is_refused_before_authentication(
    scripted_llm: ScriptedLLMServer, store: CountingKeyStore, limiter: CountingLimiter
) -> None:
    app = app_with(scripted_llm, store, limiter, ip_requests_per_minute=2)
    fake = "as_abcdefgh_" + "x" * 43
    async with client_of(app, "10.0.0.66") as c:
        codes = [(await c.get("/api/sessions", headers={"X-API-Key": fake})).status_code for _ in range(6)]
        last = await c.get("/api/sessions", headers={"X-API-Key": fake})
    assert codes == [401, 401, 429, 429, 429, 429]
    assert last.json()["error"]["message"] == "too many requests from this address"
    assert 1 <= int(last.headers["retry-after"]) <= 30
    # Three lookups reached the store (the third was refused after it), the rest never did;
    # and the limiter was asked three times, not seven.
    assert store.lookups == 3 and len(limiter.decisions) == 3
    async with client_of(app, "10.0.0.67") as c:  # another address is untouched
        assert (await c.get("/api/sessions", headers=bearer(token("alice")))).status_code == 200


async def test_a_raised_address_limit_asks_the_limiter_again(
    scripted_llm: ScriptedLLMServer, store: CountingKeyStore, limiter: CountingLimiter
) -> None:
    app = app_with(scripted_llm, store, limiter, ip_requests_per_minute=1)
    async with client_of(app, "10.0.0.5") as c:
        assert (await c.get("/api/sessions", headers=bearer(token()))).status_code == 200
        assert (await c.get("/api/sessions", headers=bearer(token()))).status_code == 429
        remembered = await c.get("/api/sessions", headers=bearer(token()))
        app.state.rate_limit_config.update({"ip_requests_per_minute": 1000})
        again = await c.get("/api/sessions", headers=bearer(token()))
    assert remembered.status_code == 429 and remembered.headers["retry-after"] == "60"
    assert len(limiter.decisions) == 3  # the remembered refusal was for the old limit: asked again
    # GCRA keeps the spent fraction (all of it), refilling at the new rate: one request per 60 ms.
    assert again.status_code == 429 and again.headers["retry-after"] == "1"


async def test_development_callers_are_limited_per_user_and_anonymous_per_address(
    scripted_llm: ScriptedLLMServer, store: CountingKeyStore, limiter: CountingLimiter
) -> None:
    from tests.unit.auth.support import make_settings

    app = build_full_app(
        scripted_llm.base_url,
        auth=make_settings(auth_mode="disabled"),
        store=store,
        limiter=limiter,
        rate_limits={"requests_per_minute": 100},
    )
    async with client_of(app, "10.0.0.3") as c:
        await c.get("/api/sessions", params={"user_id": "carol"})
        await c.get("/api/sessions")
    assert limiter.decisions == [["ip:10.0.0.3", "p:carol"], ["ip:10.0.0.3", "p:anonymous@10.0.0.3"]]
