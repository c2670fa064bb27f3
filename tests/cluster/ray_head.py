"""A real `ray start --head --block` cluster for the cluster tier, stopped by its own process group.

Other Ray clusters may run on the same machine (and Redis owns 6379, Ray's default
GCS port), so every port is chosen free and nothing here stops a process it did not start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from serve_app.cli import ray_cli_env, ray_serve_env
from serve_app.ports import free_port
from serve_app.procfs import Proc, alive, descendants
from serve_app.rollout import DashboardServeCluster


@dataclass
class RayHead:
    """Ports and process of one head node; ``start()`` blocks until the dashboard serves Serve's API."""

    num_cpus: int = 8
    port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    client_port: int = field(default_factory=free_port)
    agent_port: int = field(default_factory=free_port)
    temp_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="ascl-", dir="/tmp"))
    proc: subprocess.Popen[bytes] | None = None
    seen: set[Proc] = field(default_factory=set)

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, timeout_s: float = 240) -> DashboardServeCluster:
        env = ray_cli_env()
        # As the RayService's containers and `agentserve run`: Serve's fast path (HAProxy
        # ingress, throughput-optimised replicas, Ray's 30 s direct-ingress drain), HAProxy's
        # files and ports private to this cluster.
        haproxy_dir = os.path.join(self.temp_dir, "hp")
        os.makedirs(haproxy_dir, exist_ok=True)
        env.update(ray_serve_env(haproxy_dir))
        env.update(
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            # Replicas push metrics every second (Ray's floor), so a test waits seconds, not tens.
            RAY_metrics_report_interval_ms="1000",
        )
        ray = str(Path(sys.executable).with_name("ray"))
        cmd = [
            ray, "start", "--head", "--block", "--disable-usage-stats",
            f"--port={self.port}", f"--num-cpus={self.num_cpus}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
            f"--metrics-export-port={self.metrics_port}", f"--ray-client-server-port={self.client_port}",
            f"--dashboard-agent-listen-port={self.agent_port}", f"--temp-dir={self.temp_dir}",
        ]  # fmt: skip
        # NOTE: `ray start` (unlike `ray.init`) refuses to make the token auth needs: on a
        # machine where nothing made ~/.ray/auth_token yet (this tier run alone), make it
        # as `ray.init` would. The command prints the token: it goes nowhere.
        subprocess.run([ray, "get-auth-token", "--generate"], env=env, stdout=subprocess.DEVNULL, check=True)
        log = open(Path(self.temp_dir) / "ray-start.log", "wb")  # noqa: SIM115  # closed with the process
        # NOTE: its own session, so stop() can signal exactly this cluster's process group.
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited {self.proc.returncode}: {self.log_tail()}")
            try:
                cluster = DashboardServeCluster(self.dashboard)
                cluster.details()
                return cluster
            except Exception as exc:  # the dashboard is still starting
                last = exc
                time.sleep(2)
        raise RuntimeError(f"the dashboard did not answer within {timeout_s:.0f}s: {last!r}\n{self.log_tail()}")

    def log_tail(self) -> str:
        return (Path(self.temp_dir) / "ray-start.log").read_text(errors="replace")[-3000:]

    def stop(self, timeout_s: float = 60) -> set[Proc]:
        """SIGTERM the group (``ray start --block`` then stops its children), SIGKILL what is left.

        Returns the processes of this cluster still alive afterwards (empty when all is well).
        """
        if self.proc is None:
            return set()
        self.seen |= descendants(self.proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(alive(p) for p in self.seen):
            time.sleep(0.5)
        for proc in [p for p in self.seen if alive(p)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc[0], signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        time.sleep(1)
        return {p for p in self.seen if alive(p)}

    def remember_processes(self) -> None:
        """Record the cluster's processes now (replicas come and go; stop() checks all it saw)."""
        if self.proc is not None:
            self.seen |= descendants(self.proc.pid)
