"""``agentserve rollout`` / ``rollback`` against the real cluster, through the real CLI."""

from __future__ import annotations

import copy
import re
import time
from pathlib import Path
from typing import Any

import pytest

from serve_app.rollout import DashboardServeCluster, RolloutState, config_from_details, deploy_times
from tests.cluster.conftest import agentserve, deployments, replica_ids, write
from tests.cluster.ray_head import RayHead, free_port
from tests.cluster.traffic import Traffic


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rollouts")


def running_config(cluster: DashboardServeCluster) -> dict[str, Any]:
    config = config_from_details(cluster.details())
    assert config is not None
    return config


def test_an_invalid_config_is_refused_before_anything_is_deployed(
    deployed: str, cluster: DashboardServeCluster, ray_head: RayHead, v1: dict[str, Any], tmp_path: Path
) -> None:
    deployments(v1)["Agent"]["user_config"]["max_steps"] = 0
    before = deploy_times(cluster.details())
    r = agentserve("rollout", write(v1, tmp_path / "bad.yaml"), "--address", ray_head.dashboard,
                   "--state-dir", str(tmp_path / "state"))  # fmt: skip
    assert r.returncode == 2 and "max_steps" in r.stderr and "nothing deployed" in r.stderr
    assert deploy_times(cluster.details()) == before


def test_a_broken_rollout_is_rolled_back_under_traffic(
    deployed: str, cluster: DashboardServeCluster, ray_head: RayHead, state_dir: Path, tmp_path: Path
) -> None:
    good = running_config(cluster)
    good_agents = replica_ids(cluster)["Agent"]
    broken = copy.deepcopy(good)
    # A wrong DATABASE_URL (nothing listens there): the new Agent replicas cannot reach
    # their store, so they fail their first health check and never take traffic.
    actor = deployments(broken)["Agent"].setdefault("ray_actor_options", {})
    env = actor.setdefault("runtime_env", {}).setdefault("env_vars", {})
    env["DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:{free_port()}/test"

    started = time.monotonic()
    with Traffic(deployed, clients=4, stream_tokens=20) as traffic:
        traffic.wait_for(ok=8)
        r = agentserve("rollout", write(broken, tmp_path / "broken.yaml"), "--address", ray_head.dashboard,
                       "--state-dir", str(state_dir), "--timeout", "300", "--stable-s", "5",
                       "--probe-url", f"{deployed}/ready",
                       "--metrics-url", f"http://127.0.0.1:{ray_head.metrics_port}/metrics")  # fmt: skip
        traffic.wait_for(ok=8)
    ray_head.remember_processes()
    print(f"[cluster] broken rollout + rollback under traffic: {traffic.summary()}, "
          f"{time.monotonic() - started:.0f}s")  # fmt: skip

    assert r.returncode == 1
    assert "ROLLOUT FAILED" in r.stdout and "failed to start" in r.stdout
    assert "rolled back: the last good config is healthy" in r.stdout
    # The watch's own signals agree: /ready never failed, no 5xx in Serve's counters.
    assert len(re.findall(r"readiness probes: [1-9]\d* sent, 0 failed", r.stdout)) == 2, r.stdout
    assert len(re.findall(r"HTTP responses during the watch: [1-9]\d*, of them 5xx: 0\n", r.stdout)) == 2
    assert running_config(cluster) == good
    assert RolloutState(state_dir).newest() == good
    agents = replica_ids(cluster)["Agent"]
    assert len(agents) == 2 and agents & good_agents, "no replica of the good version survived the rollout"
    assert traffic.failures == [], traffic.summary()


def test_a_good_rollout_then_an_explicit_rollback(
    deployed: str, cluster: DashboardServeCluster, ray_head: RayHead, state_dir: Path, tmp_path: Path
) -> None:
    before = running_config(cluster)
    newer = copy.deepcopy(before)
    deployments(newer)["Agent"]["user_config"]["temperature"] = 0.7
    common = ["--address", ray_head.dashboard, "--state-dir", str(state_dir), "--timeout", "300", "--stable-s", "3"]

    assert agentserve("rollout", write(newer, tmp_path / "v3.yaml"), *common).returncode == 0
    agent = cluster.details()["applications"]["agentserve"]["deployments"]["Agent"]
    assert agent["deployment_config"]["user_config"]["temperature"] == 0.7
    assert RolloutState(state_dir).newest() == running_config(cluster)
    good_count = len(RolloutState(state_dir).good())

    assert agentserve("rollback", *common).returncode == 0
    assert running_config(cluster) == before
    assert len(RolloutState(state_dir).good()) == good_count - 1  # a second rollback goes further back
