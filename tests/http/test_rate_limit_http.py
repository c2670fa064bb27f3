"""The rate-limit middleware on a small FastAPI app, in-process: headers, 429, exemptions, order, live config."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from serve_app.http.middleware import RequestIdMiddleware
from serve_app.ratelimit.config import LiveRateLimitConfig, RateLimitConfig, apply_env
from serve_app.ratelimit.http import RateLimitMiddleware, charge_tokens
from serve_app.ratelimit.limiter import InProcessRateLimiter

LIMIT_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")


@dataclass
class Harness:
    app: FastAPI
    live: LiveRateLimitConfig
    limiter: InProcessRateLimiter

    def client(self, ip: str = "10.0.0.1") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(ip, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://test")


def build(**config: Any) -> Harness:
    live = LiveRateLimitConfig(config)
    limiter = InProcessRateLimiter()
    app = FastAPI()

    @app.get("/live")
    async def live_probe() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/things")
    async def things() -> list[str]:
        return []

    @app.post("/api/chat")
    async def chat(user_id: str, tokens: int = 150) -> dict[str, int]:
        await charge_tokens(limiter, live.get(), user_id, tokens)  # as the chat routes do after a turn
        return {"tokens": tokens}

    @app.get("/api/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"data: 1\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    app.add_middleware(RateLimitMiddleware, limiter=limiter, config_provider=live.get)
    app.add_middleware(RequestIdMiddleware)  # outermost, so a 429 names the request
    return Harness(app, live, limiter)


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RATE_LIMIT_PER_MINUTE", raising=False)


def limits(response: httpx.Response) -> tuple[int, int, int]:
    limit, remaining, reset = (int(response.headers[h]) for h in LIMIT_HEADERS)
    return limit, remaining, reset


async def test_every_response_carries_the_tightest_limit() -> None:
    h = build(requests_per_minute=5, ip_requests_per_minute=120)
    async with h.client() as c:
        ok = await c.get("/api/things", params={"user_id": "alice"})
        missing = await c.get("/nowhere", headers={"X-User-ID": "alice"})
        anonymous = await c.get("/api/things")
    assert ok.status_code == 200
    assert limits(ok) == (5, 4, 12)
    assert missing.status_code == 404
    assert limits(missing) == (5, 3, 24)
    assert limits(anonymous)[:2] == (120, 117)  # no principal: the IP limit alone
    assert "retry-after" not in ok.headers


async def test_past_the_limit_429_with_retry_after_in_the_error_shape() -> None:
    h = build(requests_per_minute=3)
    async with h.client() as c:
        codes = [(await c.get("/api/things", params={"user_id": "alice"})).status_code for _ in range(3)]
        refused = await c.get("/api/things", params={"user_id": "alice"}, headers={"X-Request-ID": "req-1"})
        other = await c.get("/api/things", params={"user_id": "bob"})
    assert codes == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.json() == {"error": {"type": "rate_limited", "message": "too many requests", "request_id": "req-1"}}
    assert refused.headers["retry-after"] == "20"
    assert limits(refused) == (3, 0, 60)
    assert other.status_code == 200


async def test_health_routes_are_exempt_and_carry_no_headers() -> None:
    h = build(requests_per_minute=1, ip_requests_per_minute=1)
    async with h.client() as c:
        probes = [await c.get(path, params={"user_id": "alice"}) for path in ("/live", "/ready") * 10]
        first = await c.get("/api/things", params={"user_id": "alice"})
    assert {p.status_code for p in probes} == {200}
    assert not any(name in p.headers for p in probes for name in LIMIT_HEADERS)
    assert first.status_code == 200


async def test_the_ip_limit_applies_before_the_principal() -> None:
    h = build(requests_per_minute=100, ip_requests_per_minute=2)
    async with h.client("10.0.0.1") as c:
        codes = [(await c.get("/api/things", params={"user_id": u})).status_code for u in ("a", "b", "alice")]
        refused = await c.get("/api/things", params={"user_id": "alice"})
    assert codes == [200, 200, 429]
    assert refused.json()["error"]["message"] == "too many requests from this address"
    assert limits(refused)[0] == 2
    spent = await h.limiter.hit("p:alice", 100, 60, cost=0)
    assert spent.remaining == 100  # refused by IP: the principal spent nothing
    async with h.client("10.0.0.2") as c:
        assert (await c.get("/api/things", params={"user_id": "alice"})).status_code == 200


async def test_the_principal_limit_holds_across_addresses() -> None:
    h = build(requests_per_minute=2, ip_requests_per_minute=100)
    codes = []
    for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        async with h.client(ip) as c:
            codes.append((await c.get("/api/things", headers={"X-User-ID": "alice"})).status_code)
    assert codes == [200, 200, 429]


async def test_a_config_change_applies_to_the_next_request() -> None:
    h = build(requests_per_minute=1)
    async with h.client() as c:
        assert (await c.get("/api/things", params={"user_id": "alice"})).status_code == 200
        before = await c.get("/api/things", params={"user_id": "alice"})
        h.live.update({"requests_per_minute": 4})  # what the Ingress's reconfigure does
        fresh = await c.get("/api/things", params={"user_id": "bob"})
        spent = await c.get("/api/things", params={"user_id": "alice"})
        h.live.update({"enabled": False})
        off = [await c.get("/api/things", params={"user_id": "alice"}) for _ in range(10)]
    assert (before.status_code, before.headers["retry-after"]) == (429, "60")
    assert (fresh.status_code, limits(fresh)[:2]) == (200, (4, 3))
    # GCRA keeps the spent fraction of the window: alice stays at zero but refills at the new rate.
    assert (spent.status_code, spent.headers["retry-after"], limits(spent)[:2]) == (429, "15", (4, 0))
    assert {r.status_code for r in off} == {200}
    assert not any("ratelimit-limit" in r.headers for r in off)


async def test_the_token_budget_refuses_chat_once_used_up() -> None:
    h = build(tokens_per_minute=100)
    async with h.client() as c:
        first = await c.post("/api/chat", params={"user_id": "alice", "tokens": 150})
        refused = await c.post("/api/chat", params={"user_id": "alice"})
        other_route = await c.get("/api/things", params={"user_id": "alice"})
        other_user = await c.post("/api/chat", params={"user_id": "bob"})
    assert first.status_code == 200  # the turn that overdraws still runs: tokens are known after it
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limited"
    assert "token" in refused.json()["error"]["message"]
    assert refused.headers["retry-after"] == "30"
    assert refused.headers["ratelimit-limit"] == "100"
    assert other_route.status_code == 200
    assert other_user.status_code == 200


async def test_streaming_responses_carry_the_headers() -> None:
    h = build()
    async with h.client() as c:
        response = await c.get("/api/stream", params={"user_id": "alice"})
    assert response.text == "data: 1\n\n"
    assert limits(response)[:2] == (60, 59)


async def test_an_invalid_user_id_counts_against_the_address_only() -> None:
    h = build(requests_per_minute=1)
    async with h.client() as c:
        codes = [(await c.get("/api/things", params={"user_id": "not a valid id!"})).status_code for _ in range(3)]
    assert codes == [200, 200, 200]


async def test_rate_limit_per_minute_overrides_the_principal_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_LIMIT_PER_MINUTE", "2")
    h = build(requests_per_minute=50)
    async with h.client() as c:
        codes = [(await c.get("/api/things", params={"user_id": "alice"})).status_code for _ in range(3)]
        h.live.update({"requests_per_minute": 70})  # the override survives a reconfigure
        again = await c.get("/api/things", params={"user_id": "bob"})
    assert codes == [200, 200, 429]
    assert limits(again)[0] == 2


@pytest.mark.parametrize("raw", ["zero", "0", "-5", "1.5"])
def test_an_invalid_override_names_the_variable(raw: str) -> None:
    with pytest.raises(ValueError, match="RATE_LIMIT_PER_MINUTE"):
        apply_env(RateLimitConfig(), {"RATE_LIMIT_PER_MINUTE": raw})


def test_an_empty_override_is_ignored_and_others_are_kept() -> None:
    cfg = RateLimitConfig(requests_per_minute=9, tokens_per_minute=5)
    assert apply_env(cfg, {"RATE_LIMIT_PER_MINUTE": " "}) == cfg
    assert apply_env(cfg, {"RATE_LIMIT_PER_MINUTE": "30"}) == cfg.model_copy(update={"requests_per_minute": 30})


def test_an_invalid_update_changes_nothing() -> None:
    live = LiveRateLimitConfig({"requests_per_minute": 7})
    with pytest.raises(ValueError, match="requests_per_minute"):
        live.update({"requests_per_minute": 0})
    with pytest.raises(ValueError, match="burst"):
        live.update({"burst": 3})
    assert live.get().requests_per_minute == 7
