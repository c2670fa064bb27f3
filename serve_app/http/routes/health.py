"""Liveness, readiness and a detailed health report."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from serve_app.http.deps import AgentServiceDep
from serve_app.http.services import CheckResult

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_S = 5.0
CACHE_S = 2.0


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]


class HealthReport(BaseModel):
    # degraded: every required check passes, some other does not (turns go on without it)
    status: Literal["healthy", "degraded", "unhealthy"]
    checks: dict[str, CheckResult]


def _answers(model: type[BaseModel], unhealthy: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"model": model}, 503: {"model": model, "description": unhealthy}}


async def _checks(request: Request, agent: AgentServiceDep) -> dict[str, CheckResult]:
    """Run the dependency checks, cached for a moment so probes stay cheap."""
    cache = request.app.state.health_cache
    now = time.monotonic()
    if cache and now - cache[0] < CACHE_S:
        return dict(cache[1])
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            checks = await agent.health()
    except Exception as exc:
        error = "timed out" if isinstance(exc, TimeoutError) else "agent unreachable"
        checks = {"agent": CheckResult(ok=False, latency_ms=(time.perf_counter() - started) * 1000, error=error)}
    request.app.state.health_cache = (now, checks)
    return checks


@router.get("/live")
async def live() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/ready", responses=_answers(Readiness, "A dependency does not answer"))
async def ready(request: Request, agent: AgentServiceDep) -> JSONResponse:
    """200 once every dependency that turns need answers, 503 before."""
    checks = await _checks(request, agent)
    ok = all(c.ok for c in checks.values() if c.required)
    body = Readiness(status="ready" if ok else "not_ready")
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/health", responses=_answers(HealthReport, "A dependency that turns need is unhealthy"))
async def health(request: Request, agent: AgentServiceDep) -> JSONResponse:
    """Each dependency's status and latency: 503 when one that turns need fails, "degraded" when another does."""
    checks = await _checks(request, agent)
    ok = all(c.ok for c in checks.values() if c.required)
    status = ("healthy" if all(c.ok for c in checks.values()) else "degraded") if ok else "unhealthy"
    body = HealthReport(status=status, checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
