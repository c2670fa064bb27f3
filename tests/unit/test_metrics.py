"""Application metrics: the dashboard names only real metrics, the docs list them all,
and a known workload through the in-process app shows up on ``/metrics``."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from agent.config import AgentConfig
from agent.errors import StoreUnavailableError
from agent.llm import LLMEndpoint, OpenAILLMClient
from agent.loop import Agent
from agent.ports import Page, Session
from memory.in_memory import InMemoryConversationStore
from serve_app.http.app import create_app
from serve_app.inprocess import InProcessAgentService
from serve_app.observability import METRICS, NullBackend, PrometheusBackend, set_metrics_backend
from serve_app.observability.observer import MetricsObserver
from serve_app.ratelimit.config import LiveRateLimitConfig, RateLimitConfig
from serve_app.scripted_llm import ScriptedLLMServer
from tests.support.auth import dev_auth
from tests.support.prom import sample as _value
from tools import build_registry

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "configs" / "grafana" / "agentserve-dashboard.json"
DOCS = ROOT / "docs" / "metrics.md"

# Ray Serve's own metrics the dashboard uses: (name in Ray's source, exported series).
RAY_SERVE_METRICS = {
    "serve_deployment_request_counter": "ray_serve_deployment_request_counter_total",
    "serve_deployment_processing_latency_ms": "ray_serve_deployment_processing_latency_ms_bucket",
    "serve_replica_processing_queries": "ray_serve_replica_processing_queries",
}


def _series_names() -> set[str]:
    names = set(RAY_SERVE_METRICS.values())
    for d in METRICS:
        suffixes = ("_bucket", "_sum", "_count") if d.kind == "histogram" else ("",)
        names.update(d.exported + s for s in suffixes)
    return names


def _exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_every_dashboard_query_names_only_metrics_that_exist() -> None:
    known = _series_names()
    exprs = _exprs()
    assert len(exprs) >= 12
    for expr in exprs:
        used = set(re.findall(r"\bray_[a-z0-9_]+\b", expr))
        assert used, f"no metric in {expr!r}"
        assert used <= known, f"unknown metric(s) {used - known} in {expr!r}"
    used_app = {n for e in exprs for n in re.findall(r"\bray_agentserve_[a-z0-9_]+\b", e)}
    for d in METRICS:
        assert any(n.startswith(d.exported.removesuffix("_total")) for n in used_app), f"{d.name} has no panel"


def test_the_ray_serve_metrics_used_exist_in_the_installed_ray() -> None:
    spec = importlib.util.find_spec("ray.serve")
    assert spec is not None and spec.origin is not None
    source = "".join(p.read_text() for p in Path(spec.origin).parent.rglob("*.py"))
    for name in RAY_SERVE_METRICS:
        assert f'"{name}"' in source, name


def test_docs_list_exactly_the_registered_metrics() -> None:
    rows = [line for line in DOCS.read_text().splitlines() if line.startswith("| `ray_agentserve_")]
    documented = [re.match(r"\| `([a-z0-9_]+)`", r).group(1) for r in rows]  # type: ignore[union-attr]
    assert sorted(documented) == sorted(d.exported for d in METRICS)


class DownStore(InMemoryConversationStore):
    async def list_sessions(self, user_id: str, limit: int = 20, cursor: str | None = None) -> Page[Session]:
        raise StoreUnavailableError("the store is down")


@pytest.fixture
async def client(scripted_llm: ScriptedLLMServer, prometheus: PrometheusBackend) -> AsyncIterator[httpx.AsyncClient]:
    llm = OpenAILLMClient(LLMEndpoint(base_url=scripted_llm.base_url, model="scripted", max_retries=0))
    tools = build_registry()
    agent = Agent(llm, tools, DownStore(), AgentConfig(tool_timeout_s=1), observer=MetricsObserver())
    app = create_app(
        InProcessAgentService(agent, tools),
        auth=dev_auth(),
        rate_limits=LiveRateLimitConfig(RateLimitConfig(ip_requests_per_minute=7)),
        metrics_path="/metrics",
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


async def test_a_known_workload_is_counted_on_metrics(client: httpx.AsyncClient) -> None:
    for message in ("hello", "hi there", "calc: 2+3"):
        r = await client.post("/api/chat", json={"message": message, "user_id": "u1"})
        assert r.status_code == 200, r.text
    r = await client.post("/api/chat/stream", json={"message": "hello", "user_id": "u1"})
    assert r.status_code == 200 and "event: done" in r.text
    assert (await client.get("/api/sessions", params={"user_id": "u1"})).status_code == 503
    statuses = [(await client.post("/api/chat", json={"message": "x", "user_id": "u1"})).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]  # the IP limit: 7 a minute

    text = (await client.get("/metrics")).text
    ok = {"route": "/api/chat", "method": "POST", "status": "200"}
    assert _value(text, "ray_agentserve_http_requests_total", **ok) == 3 + statuses.count(200)
    assert _value(text, "ray_agentserve_http_request_duration_seconds_count", route="/api/chat") >= 3
    assert _value(text, "ray_agentserve_rate_limited_requests_total", route="/api/chat") == statuses.count(429)
    assert _value(text, "ray_agentserve_store_errors_total", route="/api/sessions") == 1
    assert _value(text, "ray_agentserve_tool_calls_total", tool="calculator", outcome="ok") == 1
    assert _value(text, "ray_agentserve_llm_calls_total", model="scripted", outcome="ok") >= 5
    assert _value(text, "ray_agentserve_llm_tokens_total", model="scripted", kind="prompt") > 0
    assert _value(text, "ray_agentserve_llm_tokens_total", model="scripted", kind="completion") > 0
    assert _value(text, "ray_agentserve_llm_time_to_first_token_seconds_count", model="scripted") >= 4
    assert _value(text, "ray_agentserve_llm_time_per_output_token_seconds_count", model="scripted") >= 1
    assert _value(text, "ray_agentserve_active_streams", route="/api/chat/stream") == 0
    stream = {"route": "/api/chat/stream", "status": "200"}
    assert _value(text, "ray_agentserve_http_requests_total", **stream) == 1


async def test_a_failed_llm_call_counts_as_an_error(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/chat", json={"message": "fail: 500", "user_id": "u1"})
    assert r.status_code >= 500
    text = (await client.get("/metrics")).text
    assert _value(text, "ray_agentserve_llm_calls_total", model="scripted", outcome="error") == 1
    assert _value(text, "ray_agentserve_http_requests_total", route="/api/chat", status=str(r.status_code)) == 1


async def test_unmatched_paths_share_one_label(client: httpx.AsyncClient) -> None:
    for path in ("/nope/1", "/nope/2"):
        assert (await client.get(path)).status_code == 404
    text = (await client.get("/metrics")).text
    assert _value(text, "ray_agentserve_http_requests_total", route="unmatched", status="404") == 2
    assert "/nope/" not in text


async def test_metrics_route_answers_404_when_ray_exports(client: httpx.AsyncClient) -> None:
    set_metrics_backend(NullBackend())
    assert (await client.get("/metrics")).status_code == 404
