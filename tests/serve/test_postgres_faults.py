"""The app on PostgreSQL and Redis: the database made unreachable mid-test, then back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import httpx
import pytest

from serve_app.scripted_llm import ScriptedLLMServer
from tests.serve.conftest import NO_RATE_LIMIT
from tests.support.services import redis_url_or_fail
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def pg_app(
    serve_port: int, scripted_llm_server: ScriptedLLMServer, make_pg_database: Callable[[], str], data_dir: str
) -> Iterator[tuple[str, TcpProxy]]:
    from ray import serve

    from serve_app.builder import build_app_with_options

    dsn = make_pg_database()
    proxy = TcpProxy("127.0.0.1", 5432).start()
    proxied = dsn.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    env = {"DATABASE_URL": proxied, "REDIS_URL": redis_url_or_fail(), "AGENTSERVE_DATA_DIR": data_dir + "-pg"}
    args = {"llm": {"base_url": scripted_llm_server.base_url, "model": "scripted", "max_retries": 0}}
    options = {
        "Agent": {"ray_actor_options": {"num_cpus": 0.25, "runtime_env": {"env_vars": env}}},
        **NO_RATE_LIMIT,
    }
    serve.run(build_app_with_options(args, options), name="agentserve-pg", route_prefix="/pg", blocking=False)
    try:
        yield f"http://127.0.0.1:{serve_port}/pg", proxy
    finally:
        serve.delete("agentserve-pg")
        proxy.stop()


async def test_database_outage_gives_503_then_recovers_with_nothing_lost(
    pg_app: tuple[str, TcpProxy],
) -> None:
    base, proxy = pg_app
    acknowledged: list[str] = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        first = await http.post("/api/chat", json={"message": "before the outage", "user_id": "pg"})
        assert first.status_code == 200, first.text
        sid = first.json()["session_id"]
        acknowledged.append("before the outage")

        proxy.cut()
        statuses = []
        for i in range(3):
            r = await http.post("/api/chat", json={"message": f"during {i}", "user_id": "pg", "session_id": sid})
            statuses.append(r.status_code)
            if r.status_code == 200:
                acknowledged.append(f"during {i}")
            else:
                assert r.status_code == 503 and r.headers["retry-after"]
                assert r.json()["error"]["type"] == "store_unavailable"
                assert "5432" not in r.text and "postgresql://" not in r.text
        assert 503 in statuses
        r = await http.get("/ready")
        assert r.status_code == 503

        proxy.restore()
        for _ in range(60):
            r = await http.post("/api/chat", json={"message": "after", "user_id": "pg", "session_id": sid})
            if r.status_code == 200:
                acknowledged.append("after")
                break
            await asyncio.sleep(1)
        assert r.status_code == 200, r.text

        msgs = (await http.get(f"/api/sessions/{sid}/messages", params={"user_id": "pg", "limit": 200})).json()
        users = [m["content"] for m in msgs["items"] if m["role"] == "user"]
        assert users == acknowledged  # every acknowledged turn stored, nothing else
        assert len(msgs["items"]) == 2 * len(acknowledged)
