"""The Serve tier: one Ray cluster for the whole test session, the app deployed once.

The cluster runs in the mode ``agentserve run`` starts (``serve_app.cli.ray_serve_env``:
Serve's throughput-optimised mode with direct ingress, Ray's bundled HAProxy in front,
HAProxy's files and ports private to the session). As in production, the Python caller
(this pytest process) is not in that mode: see ``ray_cluster``. The app talks to the
scripted LLM (a real HTTP server in this process) through the same ``openai`` client as
production. Everything started here is stopped here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import httpx
import pytest

from serve_app.cli import ray_serve_env, stop_serve_and_ray
from serve_app.ports import free_port
from serve_app.scripted_llm import ScriptedLLMServer

APP_NAME = "agentserve"
# The tests share one client IP; the limits themselves are tested in the http and contract tiers.
NO_RATE_LIMIT = {"Ingress": {"user_config": {"rate_limit": {"enabled": False}}}}
# As configs/production.yaml logs: JSON lines, no access log (the app writes one line per request).
PRODUCTION_LOGGING = {"encoding": "JSON", "enable_access_log": False}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Where the deployed app's SQLite store lives for this session."""
    return str(tmp_path_factory.mktemp("agentserve-data"))


def cluster_switches(state_dir: str) -> dict[str, str]:
    """The Ray switches ``agentserve run`` (``cmd_run``) starts its cluster with."""
    return ray_serve_env(state_dir)


@pytest.fixture(scope="session")
def serve_state_dir() -> Iterator[str]:
    """HAProxy's config, sockets and server state for this session (short: see ``ray_serve_env``)."""
    path = tempfile.mkdtemp(prefix="ashp-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_switches(serve_state_dir: str) -> dict[str, str]:
    return cluster_switches(serve_state_dir)


@pytest.fixture(scope="session")
def ray_cluster(data_dir: str, ray_switches: dict[str, str]) -> Iterator[None]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    # NOTE: Serve reads its switches into module constants on import: imported (at the
    # latest) here, before they are set, this process keeps Serve's normal mode, as the
    # Python caller in production (a separate process without them). In the fast mode the
    # driver's handle routers would run on the loop of the test that made them, closed
    # when the next test runs: the next handle call, and ``serve.shutdown()`` (cached
    # handles), would fail with "Event loop is closed".
    import ray.serve._private.constants

    env = {
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "AGENTSERVE_DATA_DIR": data_dir,
        "AUTH_MODE": "disabled",  # auth is tested in the http tier
    }
    # The switches only while Ray starts: the raylet inherits them, and every Ray
    # process (controller, HAProxy manager, replicas) inherits the raylet's environment.
    saved = {key: os.environ.get(key) for key in ray_switches}
    os.environ.update(ray_switches)
    try:
        ray.init(
            address="local",  # its own cluster, never one RAY_ADDRESS or `ray start` left here
            # NOTE: logical CPUs for scheduling fractional replicas: the session deploys
            # up to three apps at once (main, local model, PostgreSQL) on a 2-core machine.
            num_cpus=8,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env={"env_vars": env},
        )
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        yield
    finally:
        stop_serve_and_ray()  # bounded: the Ingress's 30 s drain is not worth waiting for here


@pytest.fixture(scope="session")
def serve_port(ray_cluster: None) -> int:
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return port


@pytest.fixture(scope="session")
def deployed_app(serve_port: int, scripted_llm_server: ScriptedLLMServer) -> str:
    """Deploys the whole app against the scripted LLM; returns the HTTP base URL."""
    from ray import serve

    from serve_app.builder import build_app_with_options

    args = {
        "llm": {"base_url": scripted_llm_server.base_url, "model": "scripted", "max_retries": 0},
        "agent": {"tool_timeout_s": 5},
    }
    serve.run(
        build_app_with_options(args, NO_RATE_LIMIT),
        name=APP_NAME,
        route_prefix="/",
        blocking=False,
        logging_config=PRODUCTION_LOGGING,
    )
    return f"http://127.0.0.1:{serve_port}"


@pytest.fixture
async def http(deployed_app: str) -> httpx.AsyncClient:
    async with httpx.AsyncClient(base_url=deployed_app, timeout=60) as client:
        yield client  # type: ignore[misc]
