"""The cluster tier: one real `ray start --head` cluster per session, the app deployed with configs.

Deploys go through the dashboard's Serve REST API (what `serve deploy` and
`agentserve rollout` use), from configs derived from ``configs/local.yaml``:
the scripted LLM (a real HTTP server in this process) instead of the local
model, auth disabled, rate limits off, SQLite in a temp dir, a free HTTP port.

NOTE: the test files run in name order (a_, b_, ...) on the same cluster: the
metrics test counts from a fresh deployment, the later ones change what runs.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from serve_app.cli import ray_cli_env
from serve_app.config_file import load_serve_config, validate_serve_config
from serve_app.rollout import DashboardServeCluster, Verdict, Watch, WatchOptions, deploy_and_watch
from serve_app.scripted_llm import ScriptedLLMServer
from tests.cluster.ray_head import RayHead, free_port

ROOT = Path(__file__).resolve().parents[2]
APP = "agentserve"
# Fixed replica counts: rollouts are compared replica by replica (autoscaling has its own test).
# Two Ingress and two Agent replicas: a rolling update replaces one at a time, so one always serves.
REPLICAS = {"Ingress": 2, "Agent": 2, "ToolExecutor": 1, "Embedding": 1}


def deployments(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The app's deployment entries by name (mutable views into ``config``)."""
    app = next(a for a in config["applications"] if a["name"] == APP)
    return {d["name"]: d for d in app["deployments"]}


def make_v1_config(llm_base_url: str, http_port: int, data_dir: str) -> dict[str, Any]:
    config = load_serve_config(ROOT / "configs" / "local.yaml")
    config["applications"] = [a for a in config["applications"] if a["name"] == APP]
    config["http_options"]["port"] = http_port
    app = config["applications"][0]
    app["runtime_env"]["env_vars"].update(
        AGENTSERVE_DATA_DIR=data_dir,
        # NOTE: the default store-failure grace (120 s): a replica that never reached its
        # store fails its first health check anyway, which the broken rollout relies on.
    )
    app["args"]["llm"] = {"base_url": llm_base_url, "model": "scripted", "timeout_s": 60, "max_retries": 2}
    deps = deployments(config)
    deps["Ingress"]["user_config"]["rate_limit"]["enabled"] = False  # one client IP drives all the load
    for name, n in REPLICAS.items():
        # NOTE: null, not absent: the builder sets autoscaling in code, which a bare
        # num_replicas in the config does not turn off (Ray 2.60 keeps both, autoscaling wins).
        deps[name]["autoscaling_config"] = None
        deps[name]["num_replicas"] = n
    # No semantic memory: the Embedding model is not on the paths under test.
    deps["Agent"]["user_config"].update(memory_top_k=0, remember_messages=False)
    validate_serve_config(config)
    return config


def replica_ids(cluster: DashboardServeCluster) -> dict[str, set[str]]:
    """RUNNING replica ids per deployment of the app."""
    deps = cluster.details()["applications"][APP]["deployments"]
    return {name: {r["replica_id"] for r in dep["replicas"] if r["state"] == "RUNNING"} for name, dep in deps.items()}


def deploy(cluster: DashboardServeCluster, config: dict[str, Any], timeout_s: float = 300) -> Verdict:
    """Deploy and wait until every deployment is HEALTHY (the rollout command's own watch)."""
    watch = Watch(cluster, WatchOptions(timeout_s=timeout_s, stable_s=4, interval_s=1), log=print)
    verdict = deploy_and_watch(cluster, config, watch)
    assert verdict.state == "healthy", verdict.reason
    return verdict


def agentserve(*args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).with_name("agentserve"))
    result = subprocess.run([exe, *args], capture_output=True, text=True, env=ray_cli_env(), timeout=timeout_s)
    print(f"[cluster] agentserve {args[0]} -> {result.returncode}\n{result.stdout}{result.stderr}")
    return result


def write(config: dict[str, Any], path: Path) -> str:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def wait_ready(base_url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{base_url}/ready", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the app never became ready"
        time.sleep(1)


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayHead]:
    head = RayHead()
    started = time.monotonic()
    try:
        head.start()
        print(f"\n[cluster] ray start --head: dashboard up in {time.monotonic() - started:.1f}s")
        yield head
    finally:
        left = head.stop()
        leftover_by_dir = head_processes_by_temp_dir(head.temp_dir)
        print(f"[cluster] stopped: {len(head.seen)} processes seen, {len(left)} left, by dir {leftover_by_dir}")
        if not left and not leftover_by_dir:
            shutil.rmtree(head.temp_dir, ignore_errors=True)
        assert not left and not leftover_by_dir, (
            f"processes of the test cluster left running: {left or leftover_by_dir}"
        )


def head_processes_by_temp_dir(temp_dir: str) -> list[int]:
    """Processes whose command line names this cluster's temp dir (GCS, raylet, dashboard, ...)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if temp_dir.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture(scope="session")
def cluster(ray_head: RayHead) -> DashboardServeCluster:
    return DashboardServeCluster(ray_head.dashboard)


@pytest.fixture(scope="session")
def http_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def base_url(http_port: int) -> str:
    return f"http://127.0.0.1:{http_port}"


@pytest.fixture(scope="session")
def v1_config(
    scripted_llm_server: ScriptedLLMServer, http_port: int, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    data_dir = str(tmp_path_factory.mktemp("cluster-data"))
    return make_v1_config(scripted_llm_server.base_url, http_port, data_dir)


@pytest.fixture(scope="session")
def deployed(cluster: DashboardServeCluster, ray_head: RayHead, v1_config: dict[str, Any], base_url: str) -> str:
    """v1 deployed and ready; returns the HTTP base URL."""
    started = time.monotonic()
    deploy(cluster, v1_config, timeout_s=420)
    wait_ready(base_url)
    ray_head.remember_processes()
    print(f"[cluster] v1 deployed and ready in {time.monotonic() - started:.1f}s")
    return base_url


@pytest.fixture
def v1(v1_config: dict[str, Any]) -> dict[str, Any]:
    """A copy of v1 for a test to change."""
    return copy.deepcopy(v1_config)
