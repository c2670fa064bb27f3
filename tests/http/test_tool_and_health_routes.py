"""Tool and health routes through httpx.ASGITransport."""

from __future__ import annotations

import httpx
import pytest

from serve_app.http.app import create_app
from serve_app.http.services import CheckResult
from tests.support.auth import dev_auth


async def test_list_tools_gives_schemas(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/tools")
    assert r.status_code == 200
    tools = {t["name"]: t for t in r.json()}
    assert {"calculator", "current_time", "sleep"} <= set(tools)
    assert tools["calculator"]["parameters"]["properties"]["expression"]["type"] == "string"


async def test_run_tool(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/tools/calculator", json={"expression": "(2+3)*4"})
    assert r.status_code == 200 and r.json()["result"] == "20"


async def test_unknown_tool_is_404(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/tools/nope", json={})
    assert r.status_code == 404 and r.json()["error"]["type"] == "tool_not_found"


async def test_invalid_tool_arguments_are_422_naming_the_field(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/tools/calculator", json={"expression": 5})
    assert r.status_code == 422 and r.json()["error"]["field"] == "expression"
    r = await client.post("/api/tools/current_time", json={"timezone": "Mars/Olympus"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "timezone"


async def test_tool_failure_is_a_clear_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/tools/calculator", json={"expression": "1/0"})
    assert r.status_code == 422
    assert r.json()["error"]["type"] == "tool_error" and "division by zero" in r.json()["error"]["message"]


async def test_health_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/live")).json() == {"status": "ok"}
    r = await client.get("/ready")
    assert r.status_code == 200 and r.json() == {"status": "ready"}
    r = await client.get("/health")
    assert r.status_code == 200 and r.json()["checks"]["llm"]["ok"] is True


async def test_openapi_documents_error_responses(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    responses = spec["paths"]["/api/chat"]["post"]["responses"]
    assert {"200", "404", "422", "500", "503"} <= set(responses)


class _Checks:
    """An ``AgentService`` whose health report is given: the routes' verdicts are what is tested."""

    def __init__(self, checks: dict[str, CheckResult]) -> None:
        self.checks = checks

    async def health(self) -> dict[str, CheckResult]:
        return dict(self.checks)


def _report(**failing: bool) -> dict[str, CheckResult]:
    """Checks "store" (required) and "embedding" (not), each failing when named True."""
    return {
        "store": CheckResult(
            ok=not failing.get("store"), latency_ms=1.0, error="down" if failing.get("store") else None
        ),
        "embedding": CheckResult(ok=not failing.get("embedding"), latency_ms=2000.0, error="timed out", required=False),
    }


@pytest.mark.parametrize(
    ("failing", "ready", "health", "status"),
    [
        ({}, 200, 200, "healthy"),
        ({"embedding": True}, 200, 200, "degraded"),
        ({"store": True}, 503, 503, "unhealthy"),
        ({"store": True, "embedding": True}, 503, 503, "unhealthy"),
    ],
)
async def test_ready_needs_the_required_checks_and_health_reports_all(
    failing: dict[str, bool], ready: int, health: int, status: str
) -> None:
    app = create_app(_Checks(_report(**failing)), auth=dev_auth())  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        r = await client.get("/ready")
        assert r.status_code == ready
        r = await client.get("/health")
        assert r.status_code == health and r.json()["status"] == status
        embedding = r.json()["checks"]["embedding"]
        assert embedding["required"] is False and embedding["ok"] is not failing.get("embedding", False)
        assert r.json()["checks"]["store"]["required"] is True
