"""The Agent scales out on its replicas' CPU, through Serve's custom metrics and our policy.

``test_d_autoscaling`` scales on ongoing requests (Serve's own policy); here the
request target is out of reach (1,000 a replica against 12 clients), so only the
CPU the replica reports (``record_autoscaling_stats``) can ask for the second
replica, and the controller's log says which signal did.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

from serve_app.autoscaling import CPU_METRIC
from serve_app.rollout import DashboardServeCluster
from tests.cluster.ray_head import RayHead
from tests.cluster.test_d_autoscaling import autoscale_agent, wait_until
from tests.cluster.traffic import Traffic

POLICY_LINE = re.compile(
    r"CpuOrRequestsPolicy: (\d+) replica\(s\) wanted \(running 1\): ([\d.]+) by requests, ([\d.]+) by CPU"
)


def policy_lines(ray_head: RayHead) -> list[tuple[int, float, float]]:
    """The policy's decisions in the controller's log: (replicas wanted, by requests, by CPU)."""
    found = []
    pattern = os.path.join(ray_head.temp_dir, "session_latest", "logs", "serve", "controller_*.log")
    for path in glob.glob(pattern):
        for m in POLICY_LINE.finditer(Path(path).read_text(errors="replace")):
            found.append((int(m.group(1)), float(m.group(2)), float(m.group(3))))
    return found


def test_agent_scales_out_on_cpu_with_few_requests(
    deployed: str, cluster: DashboardServeCluster, ray_head: RayHead, tmp_path: Path
) -> None:
    # NOTE: spelled out, not serve_app.builder's AGENT_POLICY: importing the builder
    # imports Ray at collection, before DashboardServeCluster turns token auth on, and
    # Ray's client then sends no token (every cluster test failed at setup).
    policy = {
        "policy_function": "serve_app.autoscaling:CpuOrRequestsPolicy",
        "policy_kwargs": {"target_cpu_per_replica": 0.25},
    }
    # The request target is out of reach: only the CPU the replica reports can scale it.
    idle = autoscale_agent(
        cluster, ray_head, tmp_path, max_replicas=2, target_ongoing_requests=1000, look_back_period_s=12,
        upscale_delay_s=1, downscale_delay_s=5, policy=policy,
    )  # fmt: skip

    # Zero-latency LLM: 12 clients sending turns back to back keep the Agent's loop busy.
    with Traffic(deployed, clients=12, stream_tokens=5) as traffic:
        peak, up_s = wait_until(cluster, lambda n: n > 1, timeout_s=180)
        ray_head.remember_processes()
    back, down_s = wait_until(cluster, lambda n: n == 1, timeout_s=180)
    print(f"[cluster] CPU autoscaling: Agent {idle} -> {peak} replicas in {up_s:.0f}s under 12 clients, "
          f"back to {back} in {down_s:.0f}s; traffic {traffic.summary()}")  # fmt: skip
    assert traffic.failures == [], traffic.summary()
    # The controller asked for 2 because of CPU: requests alone asked for under one replica.
    decisions = policy_lines(ray_head)
    assert any(wanted >= 2 and by_cpu >= 1 > by_requests for wanted, by_requests, by_cpu in decisions), (
        f"no CPU-driven decision in the controller's log ({CPU_METRIC}): {decisions}"
    )
