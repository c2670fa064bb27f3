"""Helpers for the tests that start `agentserve run` (what `make run` runs) as a process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from serve_app.cli import ray_cli_env
from serve_app.ports import free_port
from serve_app.procfs import Proc, alive, descendants

AGENTSERVE = str(Path(sys.executable).with_name("agentserve"))
REPO = Path(__file__).resolve().parents[2]


def start_run(
    port: int, llm_url: str, tmp_path: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], list[str], threading.Thread, dict[str, str]]:
    """``agentserve run`` on ``port`` against ``llm_url``, its output collected in the returned list;
    ``env`` adds to (or overrides) its environment."""
    env = {
        **ray_cli_env(),
        "LLM_BASE_URL": llm_url,
        "AGENTSERVE_DATA_DIR": str(tmp_path / "data"),
        "METRICS_PORT": str(free_port()),
        "HF_HUB_OFFLINE": "1",
        **(env or {}),
    }
    for key in ("DATABASE_URL", "REDIS_URL", "LANCEDB_URI"):
        env.pop(key, None)
    proc = subprocess.Popen(
        [AGENTSERVE, "run", f"--port={port}", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    return proc, lines, reader, env


def wait_run_ready(proc: subprocess.Popen[str], port: int, lines: list[str], seen: set[Proc]) -> None:
    """Until ``/ready`` answers 200, adding what runs under ``proc`` to ``seen`` meanwhile."""
    deadline = time.monotonic() + 240
    while True:
        seen |= descendants(proc.pid)
        assert proc.poll() is None, f"agentserve run exited {proc.returncode}:\n{''.join(lines)}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"never ready:\n{''.join(lines)}"
        time.sleep(0.5)
    seen |= descendants(proc.pid)


def stop_leftovers(seen: set[Proc]) -> list[Proc]:
    """Wait a little for ``seen`` to exit, SIGKILL what is left, and say what that was."""
    deadline = time.monotonic() + 20
    while (left := [p for p in seen if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid, _ in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def ended(proc: subprocess.Popen[str], reader: threading.Thread, seen: set[Proc]) -> list[Proc]:
    """Kill ``proc`` if it still runs, collect its output, then stop and report what it left."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    reader.join(timeout=10)
    return stop_leftovers(seen)
