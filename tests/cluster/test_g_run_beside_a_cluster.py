"""`agentserve run` beside another Ray cluster on the machine, with RAY_ADDRESS naming it.

A developer's shell often has RAY_ADDRESS set, or a `ray start` cluster of their own
running. `agentserve run` starts a Ray of its own anyway, and leaves the other cluster's Serve
as it was, through its start and its Ctrl-C, and a bare `agentserve status` reports on the
run, not on the other cluster. Before, ray.init (no address) joined the
cluster RAY_ADDRESS named, or else the newest `ray start` here. The app's config was then
deployed onto that cluster: a config deploy replaces its applications, and the config's
port was not applied, so /ready never answered. Ctrl-C then shut that cluster's Serve down.

This file runs last, beside the session's `ray start --head` cluster and its app.
"""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import httpx
import yaml

from serve_app.cli import ray_cli_env
from serve_app.ports import free_port
from serve_app.procfs import Proc, descendants
from serve_app.rollout import DashboardServeCluster
from serve_app.scripted_llm import ScriptedLLMServer
from tests.cluster.agentserve_run import AGENTSERVE, ended, start_run, wait_run_ready
from tests.cluster.conftest import replica_ids
from tests.cluster.ray_head import RayHead


def _serve_state(cluster: DashboardServeCluster) -> dict[str, object]:
    """The other cluster's applications (status, route) and RUNNING replicas."""
    apps = cluster.details()["applications"]
    return {
        "apps": {name: (app["status"], app["route_prefix"]) for name, app in apps.items()},
        "replicas": replica_ids(cluster),
    }


def test_run_starts_a_ray_of_its_own_and_leaves_another_clusters_serve_alone(
    deployed: str,
    cluster: DashboardServeCluster,
    ray_head: RayHead,
    scripted_llm: ScriptedLLMServer,
    tmp_path: Path,
) -> None:
    before = _serve_state(cluster)
    assert before["apps"] == {"agentserve": ("RUNNING", "/")}, before
    port = free_port()
    proc, lines, reader, _ = start_run(
        port, scripted_llm.base_url, tmp_path, env={"RAY_ADDRESS": f"127.0.0.1:{ray_head.port}"}
    )
    seen: set[Proc] = set()
    try:
        wait_run_ready(proc, port, lines, seen)
        r = httpx.post(f"http://127.0.0.1:{port}/api/chat", json={"message": "What is 17*23?"}, timeout=60)
        assert r.status_code == 200 and "391" in r.json()["response"], r.text
        during = _serve_state(cluster)
        # A bare `agentserve status` reports on the run, not on the newest `ray start` cluster.
        status_env = {k: v for k, v in ray_cli_env().items() if k != "RAY_ADDRESS"}
        status = subprocess.run([AGENTSERVE, "status"], env=status_env, capture_output=True, text=True, timeout=120)
        seen |= descendants(proc.pid)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=90)
    finally:
        left = ended(proc, reader, seen)
    out = "".join(lines)
    assert code == 0, out
    assert "RAY_ADDRESS is set and ignored" in out, out
    gcs = re.search(r"Ray is up at \S+:(\d+)", out)
    assert gcs and int(gcs.group(1)) != ray_head.port, out
    assert not left, f"processes of agentserve run left after Ctrl-C: {left}"
    assert status.returncode == 0, status.stderr
    assert f"agentserve status: the `agentserve run` on port {port} (pid {proc.pid})" in status.stderr
    # the run's Serve (its one node), not the other cluster's
    reported = set(yaml.safe_load(status.stdout)["proxies"])
    assert reported and not reported & set(cluster.details()["proxies"]), status.stdout
    # The other cluster: the same applications and replicas while the run served and after
    # its Ctrl-C, and its app still answers.
    assert during == before
    assert _serve_state(cluster) == before
    assert httpx.get(f"{deployed}/ready", timeout=10).status_code == 200
    r = httpx.post(f"{deployed}/api/chat", json={"message": "What is 17*23?"}, timeout=60)
    assert r.status_code == 200 and "391" in r.json()["response"], r.text
