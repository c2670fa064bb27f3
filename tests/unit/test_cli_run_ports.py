"""``agentserve run`` refuses at once a port something else listens on, before Ray starts.

Before, HAProxy failing to bind the app's port showed only as a /ready that never
answered (or another server's /ready answered for it), and a taken metrics port made
``ray.init`` time out after 30 s ("The current node timed out during startup").
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve_app.ports import free_port

AGENTSERVE = str(Path(sys.executable).with_name("agentserve"))


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", free_port()))
        s.listen()
        yield s.getsockname()[1]


def _run(*args: str, metrics_port: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "METRICS_PORT": str(metrics_port), "LLM_BASE_URL": "http://127.0.0.1:9/v1"}
    return subprocess.run([AGENTSERVE, "run", *args], env=env, capture_output=True, text=True, timeout=60)


def test_the_apps_port_in_use_is_refused_before_ray_starts(listener: int) -> None:
    done = _run(f"--port={listener}", metrics_port=free_port())
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"127.0.0.1:{listener} (the app's; --port)" in done.stderr
    assert "starting Ray" not in done.stdout


def test_the_metrics_port_in_use_is_refused_before_ray_starts(listener: int) -> None:
    done = _run(f"--port={free_port()}", metrics_port=listener)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{listener} (metrics; METRICS_PORT)" in done.stderr
    assert "starting Ray" not in done.stdout


def test_the_dashboard_port_in_use_is_refused_before_ray_starts_with_dashboard(listener: int) -> None:
    """Another cluster's dashboard on the port: before, ``ray.init`` died with a traceback."""
    done = _run(f"--port={free_port()}", "--dashboard", f"--dashboard-port={listener}", metrics_port=free_port())
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{listener} (the dashboard's; --dashboard-port)" in done.stderr
    assert "starting Ray" not in done.stdout
