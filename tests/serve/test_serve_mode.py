"""The Serve tier runs in the mode ``agentserve run`` starts, and the Python caller does not.

``agentserve run`` starts Ray with Serve's throughput-optimised mode and Ray's bundled
HAProxy in front (``serve_app.cli.ray_serve_env``); ``tests/serve/conftest.py`` starts the
session's cluster with the same switches. These tests look at the running processes
themselves: the switches are in the environment of the controller, the HAProxy manager
and the replicas, the HAProxy process reads this session's private config and listens on
the Serve port, the Ingress replica serves HTTP itself (direct ingress), and this pytest
process (the driver, a Python caller of the handles) is in Serve's normal mode.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.serve


def processes() -> dict[int, list[str]]:
    """Every process's command line (Ray names its workers ``ray::<actor class>...``)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:  # gone meanwhile
                continue
            found[int(entry.name)] = [a.decode(errors="replace") for a in argv if a]
    return found


def environment(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode(errors="replace").partition("=")[::2] for p in pairs if b"=" in p)


def parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])  # after "pid (comm) state"


def ray_workers(title: str) -> list[int]:
    """This cluster's worker processes (children of its raylet) titled ``ray::<title>...``."""
    from ray._private.worker import global_worker

    # NOTE: by the raylet's PID: another test run may have its own cluster on this machine.
    (raylet,) = global_worker.node.all_processes["raylet"]
    pids = []
    for pid, argv in processes().items():
        if argv and argv[0].startswith(f"ray::{title}"):
            try:
                if parent(pid) == raylet.process.pid:
                    pids.append(pid)
            except OSError:
                continue
    return pids


def test_the_driver_keeps_serves_normal_mode(deployed_app: str, ray_switches: dict[str, str]) -> None:
    from ray.serve._private import constants

    assert not constants.RAY_SERVE_THROUGHPUT_OPTIMIZED
    assert not constants.RAY_SERVE_ENABLE_HA_PROXY and not constants.RAY_SERVE_ENABLE_DIRECT_INGRESS
    assert not constants.RAY_SERVE_USE_GRPC_BY_DEFAULT
    assert [key for key in ray_switches if key in os.environ] == []


@pytest.mark.parametrize(
    "title", ["ServeController", "HAProxyManager", "ServeReplica:agentserve:Ingress", "ServeReplica:agentserve:Agent"]
)
def test_the_cluster_runs_with_agentserve_runs_switches(
    deployed_app: str, ray_switches: dict[str, str], title: str
) -> None:
    pids = ray_workers(title)
    assert pids, f"no ray::{title} process of this session"
    for pid in pids:
        env = environment(pid)
        assert {key: env.get(key) for key in ray_switches} == ray_switches


def test_haproxy_serves_the_port_from_this_sessions_private_config(
    deployed_app: str, serve_port: int, serve_state_dir: str
) -> None:
    (manager,) = ray_workers("HAProxyManager")
    haproxies = [
        (pid, argv)
        for pid, argv in processes().items()
        if argv and argv[0].endswith("/haproxy") and parent(pid) == manager
    ]
    assert len(haproxies) >= 1, "the HAProxy manager has no haproxy child"
    for _, argv in haproxies:
        config = Path(argv[argv.index("-f") + 1])
        assert config.is_relative_to(serve_state_dir) and config.is_file()
        assert f":{serve_port}\n" in config.read_text()  # its http frontend binds the Serve port
    r = httpx.get(f"{deployed_app}/live", timeout=30)
    assert r.status_code == 200


def test_the_ingress_replica_serves_http_itself(deployed_app: str) -> None:
    from ray.serve._private.logging_utils import get_serve_logs_dir

    logs = Path(get_serve_logs_dir()).glob("replica_agentserve_Ingress_*.log")
    assert any("Successfully started RequestProtocol.HTTP server on port" in p.read_text() for p in logs)


def test_haproxy_passes_the_longest_valid_url_to_the_app(deployed_app: str) -> None:
    # q may be 2,000 characters; a 4-byte character is 12 bytes percent-encoded: a ~24 KB
    # request line, over HAProxy's default buffer (16 KiB, where it answers its own HTML 400).
    q = "\U0001d757" * 2000
    r = httpx.get(f"{deployed_app}/api/memory/search", params={"q": q, "user_id": "long-url"}, timeout=60)
    assert r.status_code == 200, r.text[:300]
    assert r.json() == []
    r = httpx.get(f"{deployed_app}/api/memory/search", params={"q": q + "x", "user_id": "long-url"}, timeout=60)
    assert r.status_code == 422 and r.json()["error"]["field"] == "q"
