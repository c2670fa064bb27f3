"""The Agent scales out under load and back in after it (Serve's autoscaler, seen from the controller)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serve_app.rollout import DashboardServeCluster, config_from_details
from serve_app.scripted_llm import ScriptedLLMServer
from tests.cluster.conftest import agentserve, deployments, write
from tests.cluster.ray_head import RayHead
from tests.cluster.traffic import Traffic


def agent_replicas(cluster: DashboardServeCluster) -> int:
    agent = cluster.details()["applications"]["agentserve"]["deployments"]["Agent"]
    return sum(1 for r in agent["replicas"] if r["state"] == "RUNNING")


def wait_until(cluster: DashboardServeCluster, done: Callable[[int], bool], timeout_s: float) -> tuple[int, float]:
    """Polls the Agent's RUNNING replica count until ``done(count)``; returns it and the time taken."""
    started = time.monotonic()
    count = agent_replicas(cluster)
    while not done(count):
        assert time.monotonic() - started < timeout_s, f"Agent replicas stayed at {count}"
        time.sleep(1)
        count = agent_replicas(cluster)
    return count, time.monotonic() - started


def autoscale_agent(cluster: DashboardServeCluster, ray_head: RayHead, tmp_path: Path, **autoscaling: Any) -> int:
    """Rolls the running app out with the Agent autoscaled from one replica; returns its count once idle."""
    running = config_from_details(cluster.details())
    assert running is not None
    config = copy.deepcopy(running)
    agent = deployments(config)["Agent"]
    agent.pop("num_replicas", None)
    agent["autoscaling_config"] = {"min_replicas": 1, "initial_replicas": 1, **autoscaling}
    r = agentserve("rollout", write(config, tmp_path / "autoscale.yaml"), "--address", ray_head.dashboard,
                   "--state-dir", str(tmp_path / "state"), "--timeout", "300", "--stable-s", "3")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    idle, _ = wait_until(cluster, lambda n: n == 1, timeout_s=120)
    return idle


def test_agent_scales_out_under_load_and_back_in(
    deployed: str,
    cluster: DashboardServeCluster,
    ray_head: RayHead,
    scripted_llm_server: ScriptedLLMServer,
    tmp_path: Path,
) -> None:
    idle = autoscale_agent(
        cluster, ray_head, tmp_path, max_replicas=3, target_ongoing_requests=2, upscale_delay_s=2, downscale_delay_s=5
    )

    cfg = scripted_llm_server.app.state.cfg
    cfg.latency_s = 1.0  # every LLM call takes a second: 12 clients keep ~12 turns in flight
    try:
        with Traffic(deployed, clients=12, stream_tokens=5) as traffic:
            peak, up_s = wait_until(cluster, lambda n: n > 1, timeout_s=180)
            ray_head.remember_processes()
        cfg.latency_s = 0.0
        back, down_s = wait_until(cluster, lambda n: n == 1, timeout_s=180)
    finally:
        cfg.latency_s = 0.0
    print(f"[cluster] autoscaling: Agent {idle} -> {peak} replicas in {up_s:.0f}s under 12 clients, "
          f"back to {back} in {down_s:.0f}s; traffic {traffic.summary()}")  # fmt: skip
    assert traffic.failures == [], traffic.summary()
