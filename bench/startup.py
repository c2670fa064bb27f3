"""Goal 5, start and size: ``agentserve run`` (what ``make run`` runs) to ready, and the app's memory.

Starts ``agentserve run`` on a free port exactly as ``make run`` does (local
Ray without the dashboard, ``configs/local.yaml`` deployed, the bundled models), times it from
launch to the first 200 on ``/ready``, then adds up the proportional set size
(PSS, from ``/proc/<pid>/smaps_rollup``) of every process it started, by role,
and stops it with Ctrl-C (SIGINT) as a user would. "Models excluded" leaves
out the LocalLLM replica and the Embedding replica's model (its PSS above the
ToolExecutor replica's, which runs the same Ray worker without torch).
Goals: ready ≤ 20 s; the app at one replica each ≤ 1.5 GB PSS, models excluded.
The single-process baseline's PSS (with its in-process model) is measured too,
and each stack's CPU while idle (``--idle-s``, after its first requests: what
it costs a machine to keep it up, by role). ::

    python -m bench.startup                          # ~1.5 min
    python -m bench.startup --runs 3 --floor         # and Ray and Serve's own start, alternating (~4 min)
    python -m bench.startup --run-arg=--dashboard    # with Ray's dashboard, as before

``--floor`` also starts ``agentserve run`` with trivial deployments in place of
the app's (``bench.floor_app``: the same config, names, options and Serve
switches), alternating with the app's runs: what Ray and Serve take by
themselves, so the difference is what the app's code and models add.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import yaml

from bench import procs
from bench.stacks import LOCAL_CONFIG, Stacks, free_port, verdict

READY_GOAL_S = 20.0
PSS_GOAL_MB = 1500.0
STEPS = ("starting", "deploying", "sent the config", "agentserve is ready")


def write_floor_config(directory: str) -> str:
    """``configs/local.yaml`` with ``bench.floor_app``'s trivial deployments, as a file in ``directory``."""
    from bench.floor_app import floor_config
    from serve_app.config_file import load_serve_config

    path = os.path.join(directory, "floor.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(floor_config(load_serve_config(LOCAL_CONFIG)), f, sort_keys=False)
    return path


def pss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0.0


def pss_by_role(root: int, roles: dict[int, str] | None = None) -> dict[str, float]:
    out: dict[str, float] = {}
    for pid in [root, *procs.descendants(root)]:
        name = (roles or {}).get(pid) or procs.role(pid)
        out[name] = out.get(name, 0.0) + pss_mb(pid)
    return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v > 0}


def idle_cpu(pids: list[int], roles: dict[int, str], seconds: float) -> dict[str, float]:
    """Percent of one core each role used over ``seconds`` with no request."""
    before = procs.snapshot(pids)
    time.sleep(seconds)
    after = procs.snapshot(pids)
    wall = after.wall_s - before.wall_s
    return {k: round(v / wall * 100, 2) for k, v in procs.cpu_by_role(before, after, roles).items() if v > 0}


def run_once(
    port: int, timeout_s: float, extra: list[str], idle_s: float, env_extra: dict[str, str] | None = None
) -> dict[str, Any]:
    env = {**os.environ, "METRICS_PORT": str(free_port()), **(env_extra or {})}
    env.pop("LLM_BASE_URL", None)
    cmd = [os.path.join(os.path.dirname(sys.executable), "agentserve"), "run", f"--port={port}", *extra]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    lines: list[tuple[float, str]] = []

    def read() -> None:
        for line in proc.stdout or []:
            lines.append((round(time.monotonic() - t0, 1), line.rstrip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ready_s = None
    try:
        while time.monotonic() - t0 < timeout_s and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    ready_s = round(time.monotonic() - t0, 1)
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        if ready_s is None:
            raise RuntimeError(f"agentserve run was not ready within {timeout_s:g} s (exit {proc.poll()})")
        time.sleep(5)  # let replicas settle after their first requests
        roles = {proc.pid: "agentserve run (Ray driver)"}
        pss = pss_by_role(proc.pid, roles)
        idle = idle_cpu([proc.pid, *procs.descendants(proc.pid)], roles, idle_s)
    finally:
        stopping = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
    total = sum(pss.values())
    # The Embedding's model lives in its child process (memory.encoder_process): the
    # model is what the replica and its child hold beyond a replica's own baseline.
    embedding = pss.get("replica Embedding", 0.0) + pss.get("Embedding model process", 0.0)
    embedding_model = embedding - pss.get("replica ToolExecutor", 0.0)
    model = pss.get("replica LocalLLM", 0.0) + max(embedding_model, 0.0)
    return {
        "ready_s": ready_s,
        "pss_mb": pss,
        "pss_total_mb": round(total, 1),
        "pss_models_mb": round(model, 1),
        "pss_without_models_mb": round(total - model, 1),
        "idle_cpu_pct": idle,
        # When each step of `agentserve run` printed its line (s after launch).
        "phases": {text[:60]: t for t, text in lines if text.startswith(STEPS)},
        "stop_s": round(time.monotonic() - stopping, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--timeout-s", type=float, default=180)
    parser.add_argument("--idle-s", type=float, default=10, help="how long each stack's idle CPU is measured")
    parser.add_argument("--run-arg", action="append", default=[],
                        help="an extra argument for `agentserve run` (e.g. --run-arg=--dashboard)")  # fmt: skip
    parser.add_argument(
        "--floor", action="store_true", help="also time the start with trivial deployments (bench.floor_app)"
    )
    a = parser.parse_args()
    with Stacks("startup") as st:
        runs, floors = [], []
        floor_args = [*a.run_arg, f"--config={write_floor_config(str(st.data))}"] if a.floor else []
        # NOTE: the workers import bench.floor_app from the repository, which is not installed.
        repository = str(LOCAL_CONFIG.parents[1])
        floor_env = {"PYTHONPATH": os.pathsep.join(p for p in (repository, os.environ.get("PYTHONPATH")) if p)}
        for i in range(a.runs):
            order = ["app", "floor"] if i % 2 == 0 else ["floor", "app"]
            for which in order if a.floor else ["app"]:
                if which == "floor":
                    r = run_once(free_port(), a.timeout_s, floor_args, a.idle_s, floor_env)
                    floors.append(r)
                else:
                    r = run_once(free_port(), a.timeout_s, a.run_arg, a.idle_s)
                    runs.append(r)
                print(f"run {i + 1} ({which}): ready in {r['ready_s']} s ({r['phases']}); "
                      f"PSS {r['pss_total_mb']:.0f} MB, {r['pss_without_models_mb']:.0f} MB without models",
                      flush=True)  # fmt: skip
        if floors:
            st.results["floor_runs"] = floors
        llm = st.llm()
        base = st.baseline(llm)
        httpx.post(f"{base}/api/chat", json={"message": "calc: 1+1"}, timeout=60)
        baseline_pid = next(p for p, r in st.roles.items() if r == "baseline uvicorn")
        st.results["baseline_pss_mb"] = round(pss_mb(baseline_pid), 1)
        st.results["baseline_idle_cpu_pct"] = idle_cpu([baseline_pid], st.roles, a.idle_s)
        st.results["runs"] = runs
        out = st.write()

    last = runs[-1]
    print("\nPSS by process role (MB, last run):")
    for name, mb in last["pss_mb"].items():
        print(f"  {name:<40} {mb:>8.1f}")
    print(f"  {'total':<40} {last['pss_total_mb']:>8.1f}")
    print(f"  {'models (LocalLLM, Embedding model)':<40} {last['pss_models_mb']:>8.1f}")
    print(f"baseline process (with its sentence model): {st.results['baseline_pss_mb']} MB")
    print(f"\nCPU while idle ({a.idle_s:g} s, % of one core, last run):")
    for name, pct in last["idle_cpu_pct"].items():
        print(f"  {name:<40} {pct:>8.2f}")
    print(f"  {'total':<40} {sum(last['idle_cpu_pct'].values()):>8.2f}")
    print(f"baseline process: {sum(st.results['baseline_idle_cpu_pct'].values()):.2f} % of one core")
    if floors:
        app_ready = statistics.median(r["ready_s"] for r in runs)
        floor_ready = statistics.median(r["ready_s"] for r in floors)
        app_mb = statistics.median(r["pss_without_models_mb"] for r in runs)
        floor_mb = statistics.median(r["pss_without_models_mb"] for r in floors)
        print(f"\nthe floor (trivial deployments, same Ray and Serve): ready in {[r['ready_s'] for r in floors]} s, "
              f"{floor_mb:.0f} MB PSS without models")  # fmt: skip
        print(f"the app adds (medians): {app_ready - floor_ready:+.1f} s to ready, {app_mb - floor_mb:+.0f} MB")
    ready = max(r["ready_s"] for r in runs)
    size = max(r["pss_without_models_mb"] for r in runs)
    print(f"goal 5: ready in {ready} s (goal ≤ {READY_GOAL_S:g}): {verdict(ready <= READY_GOAL_S)}")
    print(f"goal 5: {size:.0f} MB PSS without models (goal ≤ {PSS_GOAL_MB:g}): {verdict(size <= PSS_GOAL_MB)}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
