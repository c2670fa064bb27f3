"""The `ray start` cluster runs Serve's fast path, as the RayService's pods do (their env: SERVE_FAST_PATH).

Runs last: it only looks at the processes of the cluster the earlier tests deployed to.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from serve_app.procfs import cmdline, descendants
from serve_app.serve_switches import SERVE_FAST_PATH
from tests.cluster.ray_head import RayHead


def environment(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode(errors="replace").partition("=")[::2] for p in pairs if b"=" in p)


def test_serve_runs_its_fast_path_behind_haproxy(deployed: str, ray_head: RayHead, http_port: int) -> None:
    assert ray_head.proc is not None
    assert httpx.get(f"{deployed}/ready", timeout=30).status_code == 200
    procs = {pid: cmdline(pid) for pid, _ in descendants(ray_head.proc.pid)}
    controllers = [pid for pid, argv in procs.items() if argv and argv[0].startswith("ray::ServeController")]
    ingresses = [
        pid for pid, argv in procs.items() if argv and argv[0].startswith("ray::ServeReplica:agentserve:Ingress")
    ]
    assert controllers and ingresses
    for pid in [*controllers, *ingresses]:
        env = environment(pid)
        assert {k: env.get(k) for k in SERVE_FAST_PATH} == SERVE_FAST_PATH
    # HAProxy holds the Serve port, from this cluster's private config.
    haproxies = [argv for argv in procs.values() if argv and Path(argv[0]).name == "haproxy"]
    assert haproxies
    for argv in haproxies:
        config = Path(argv[argv.index("-f") + 1])
        assert config.is_relative_to(ray_head.temp_dir) and config.is_file()
        assert f":{http_port}\n" in config.read_text()  # its http frontend binds the Serve port
