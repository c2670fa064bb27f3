"""CpuOrRequestsPolicy and CpuMeter: the Agent's autoscaling signal, without a cluster.

The policy is called as Serve's controller calls it, through Serve's own wrapper
(bounds, scaling factors, delays) with Serve's ``AutoscalingContext``.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from serve_app.autoscaling import CPU_METRIC, CpuMeter, CpuOrRequestsPolicy
from serve_app.config_file import load_serve_config

ROOT = Path(__file__).parents[2]


def context(
    running: int,
    requests: float,
    cpu: dict[str, float] | None,
    *,
    target_requests: float = 1024,
    target_replicas: int | None = None,
    policy_state: dict[str, Any] | None = None,
    **config: Any,
) -> Any:
    from ray.serve._private.common import DeploymentID
    from ray.serve.config import AutoscalingConfig, AutoscalingContext

    cfg = AutoscalingConfig(
        min_replicas=config.pop("min_replicas", 1),
        max_replicas=config.pop("max_replicas", 4),
        target_ongoing_requests=target_requests,
        upscale_delay_s=config.pop("upscale_delay_s", 0),
        downscale_delay_s=config.pop("downscale_delay_s", 0),
        **config,
    )
    return AutoscalingContext(
        deployment_id=DeploymentID(name="Agent", app_name="agentserve"),
        deployment_name="Agent",
        app_name="agentserve",
        current_num_replicas=running,
        target_num_replicas=running if target_replicas is None else target_replicas,
        running_replicas=[],
        total_num_requests=requests,
        total_queued_requests=0,
        aggregated_metrics={} if cpu is None else {CPU_METRIC: cpu},
        raw_metrics={},
        capacity_adjusted_min_replicas=cfg.min_replicas,
        capacity_adjusted_max_replicas=cfg.max_replicas,
        policy_state=policy_state or {},
        last_scale_up_time=None,
        last_scale_down_time=None,
        current_time=time.time(),
        config=cfg,
    )


def decide(policy: CpuOrRequestsPolicy, ctx: Any) -> int:
    """What Serve's controller does with a custom policy's answer."""
    from ray.serve.autoscaling_policy import _apply_autoscaling_config

    replicas, _ = _apply_autoscaling_config(policy)(ctx)
    return replicas


def test_many_open_streams_on_an_idle_replica_do_not_scale() -> None:
    """1,000 streams waiting on the LLM at 0.3 cores: Serve's default policy (32 a replica) would want 32."""
    policy = CpuOrRequestsPolicy(target_cpu_per_replica=0.75)
    assert decide(policy, context(1, 1000, {"r1": 0.3})) == 1


def test_a_busy_replica_scales_out_on_cpu_with_few_requests() -> None:
    policy = CpuOrRequestsPolicy(target_cpu_per_replica=0.75)
    assert decide(policy, context(1, 8, {"r1": 0.95})) == 2
    # Two replicas at 0.9 cores each need three.
    assert decide(policy, context(2, 8, {"r1": 0.9, "r2": 0.9})) == 3


def test_requests_beyond_the_target_scale_out_whatever_the_cpu() -> None:
    policy = CpuOrRequestsPolicy(target_cpu_per_replica=0.75)
    assert decide(policy, context(1, 1500, {"r1": 0.1})) == 2
    # No CPU reported yet (a replica's first seconds): requests alone decide.
    assert decide(policy, context(1, 1500, None)) == 2
    assert decide(policy, context(1, 10, None)) == 1


def test_a_new_replica_that_has_not_reported_does_not_read_as_more_load() -> None:
    """One replica at 0.9 cores asked for a second; until it reports, still 2 (not 3)."""
    policy = CpuOrRequestsPolicy(target_cpu_per_replica=0.75)
    wanted, signals = policy.desired(context(2, 8, {"r1": 0.9}))
    assert signals["cpu_cores"] == pytest.approx(0.9)
    assert math.ceil(wanted) == 2
    assert decide(policy, context(2, 8, {"r1": 0.9}, max_replicas=8)) == 2


def test_idle_replicas_scale_in() -> None:
    policy = CpuOrRequestsPolicy(target_cpu_per_replica=0.75)
    assert decide(policy, context(2, 10, {"r1": 0.05, "r2": 0.04})) == 1
    assert decide(policy, context(3, 10, {"r1": 0.5, "r2": 0.5, "r3": 0.5})) == 2


def test_serves_delays_apply_to_the_policy() -> None:
    """Scale-up waits upscale_delay_s of consecutive decisions, as with Serve's own policy."""
    policy = CpuOrRequestsPolicy(target_cpu_per_replica=0.75)
    ctx = context(1, 8, {"r1": 0.95}, upscale_delay_s=60)
    assert decide(policy, ctx) == 1


@pytest.mark.parametrize("target", [0, -1, 65])
def test_a_bad_target_is_refused_naming_it(target: float) -> None:
    with pytest.raises(ValueError, match="target_cpu_per_replica"):
        CpuOrRequestsPolicy(target_cpu_per_replica=target)


def test_cpu_meter_reads_cores_used_by_every_thread() -> None:
    meter = CpuMeter()
    time.sleep(0.3)
    idle = meter.sample()
    assert 0 <= idle < 0.3

    def burn(seconds: float) -> None:
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass

    # A thread's CPU counts too (a replica's store and gRPC threads are its CPU).
    worker = threading.Thread(target=burn, args=(0.4,))
    worker.start()
    worker.join()
    busy = meter.sample()
    assert busy > 0.5, busy


@pytest.mark.parametrize("name", ["local.yaml", "production.yaml"])
def test_configs_agent_policy_resolves_as_serve_resolves_it(name: str) -> None:
    """The import path and kwargs in the configs build the policy in Serve's controller."""
    from ray.serve._private.autoscaling_state import _resolve_policy_callable
    from ray.serve.config import AutoscalingConfig

    config = load_serve_config(ROOT / "configs" / name)
    [app] = [a for a in config["applications"] if a["name"] == "agentserve"]
    agent = next(d for d in app["deployments"] if d["name"] == "Agent")
    cfg = AutoscalingConfig(**agent["autoscaling_config"])
    cfg.policy.serialize_policy()
    policy = _resolve_policy_callable(cfg.policy)
    assert isinstance(policy, CpuOrRequestsPolicy)
    assert (
        policy.target_cpu_per_replica
        == agent["autoscaling_config"]["policy"]["policy_kwargs"]["target_cpu_per_replica"]
    )
