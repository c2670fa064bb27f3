"""Per-turn latency of one tool-calling turn: Ray Serve app vs the single-process baseline.

One command starts everything, measures both stacks in the same run and stops
everything it started (its subprocesses by PID, then Serve and Ray), also on
Ctrl-C or an error::

    python -m bench.turn_latency

The LLM is the scripted OpenAI-compatible server with zero latency, so what is
measured is the serving stack: HTTP, the reasoning loop, two streamed LLM calls
over HTTP, one calculator call, the stores and (unless ``--agent`` turns it off)
semantic memory, all on the embedded defaults in a fresh temp dir. Each stack is checked for
the right answer, warmed up, then driven by wrk at concurrency 1 (sequential)
and 32. The baseline runs before Ray starts, so Ray's idle daemons do not slow it.
Results go to ``bench/results/turn_latency.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import procs
from bench.load import require_wrk, run_wrk
from bench.stacks import TOOL_EXPECT, TOOL_TURN, check_turn, free_port, measured, ratio, stop, wait_http

RESULTS = Path(__file__).parent / "results"
APP_NAME = "agentserve"
STORE_SETTINGS = ("DATABASE_URL", "REDIS_URL", "LANCEDB_URI", "AGENTSERVE_DATA_DIR")


def start(name: str, module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log = open(RESULTS / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
    cmd = [sys.executable, "-m", module, *args]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def measure_stack(base_url: str, a: argparse.Namespace, roles: dict[int, str]) -> dict[str, Any]:
    url = f"{base_url}/api/chat"
    check_turn(base_url, TOOL_TURN, TOOL_EXPECT, ["calculator"])
    run_wrk(url, a.concurrency, a.warmup_s, body=json.dumps(TOOL_TURN), expect=TOOL_EXPECT)
    return {
        "c1": measured(url, 1, a.seq_s, roles, TOOL_TURN, TOOL_EXPECT),
        f"c{a.concurrency}": measured(url, a.concurrency, a.conc_s, roles, TOOL_TURN, TOOL_EXPECT),
    }


def start_serve(llm_url: str, agent: dict[str, Any], data_dir: str) -> tuple[str, dict[str, float]]:
    """Ray in this process, the Serve proxy on a free port, the app deployed at ``/``."""
    import ray
    from ray import serve

    from serve_app.builder import build_app_with_options

    t0 = time.monotonic()
    ray.init(
        address="local",  # its own cluster, never one RAY_ADDRESS or `ray start` left here
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": {
                "RAY_USAGE_STATS_ENABLED": "0",
                "HF_HUB_OFFLINE": "1",
                "AGENTSERVE_DATA_DIR": data_dir,
                "AUTH_MODE": "disabled",  # as the baseline: the bench measures turns, not auth
            }
        },
    )
    t1 = time.monotonic()
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = {"llm": {"base_url": llm_url, "model": "scripted", "max_retries": 0}, "agent": agent}
    # One client IP sends every request: rate limits off in both stacks.
    no_limits = {"Ingress": {"user_config": {"rate_limit": {"enabled": False}}}}
    serve.run(build_app_with_options(args, no_limits), name=APP_NAME, route_prefix="/")
    timing = {"ray_init_s": round(t1 - t0, 1), "serve_deploy_s": round(time.monotonic() - t1, 1)}
    return f"http://127.0.0.1:{port}", timing


def replica_counts() -> dict[str, dict[str, int]]:
    from ray import serve

    deployments = serve.status().applications[APP_NAME].deployments
    return {name: {str(s): n for s, n in d.replica_states.items()} for name, d in deployments.items()}


def report(results: dict[str, Any], conc: int) -> None:
    print(f"\n{'stack':<9} {'conc':>4} {'turns':>6} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for key in ("c1", f"c{conc}"):
        for stack in ("baseline", "serve"):
            r = results[stack][key]["load"]
            bad = r["errors"] + r["mismatched"]
            row = f"{r['requests']:>6} {bad:>6} {r['rps']:>8.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}"
            print(f"{stack:<9} {r['connections']:>4} {row}")
        b, s = results["baseline"][key]["load"], results["serve"][key]["load"]
        print(
            f"{'serve/baseline':<20} {'':>6} {ratio(s['rps'], b['rps']):>8} "
            f"{ratio(s['p50_ms'], b['p50_ms']):>8} {ratio(s['p99_ms'], b['p99_ms']):>8}"
        )
    for stack in ("baseline", "serve"):
        r = results[stack][f"c{conc}"]
        parts = ", ".join(f"{k} {v:g}" for k, v in r["cpu_ms_per_turn"].items())
        print(f"\n{stack} CPU ms/turn at c{conc}: {parts}; wrk {r['wrk_cpu_ms_per_turn']:g}")
        print(f"  cores busy: ours {r['our_cores_busy']}, other processes {r['other_cores_busy']}")
    c = results["driver_ceiling"]
    print(
        f"\ndriver ceiling (wrk -c{conc} on the baseline's /live): {c['rps']:.0f} req/s, "
        f"wrk {c['driver_cpu_us_per_request']:.0f} µs CPU/request"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seq-s", type=float, default=8, help="seconds at concurrency 1")
    parser.add_argument("--conc-s", type=float, default=10, help="seconds at --concurrency")
    parser.add_argument("--warmup-s", type=float, default=3)
    parser.add_argument("--agent", default="{}", help='AgentConfig overrides for both stacks, e.g. {"memory_top_k": 0}')
    parser.add_argument("--out", type=Path, default=RESULTS / "turn_latency.json")
    parser.add_argument("--serve-env", action="append", default=[], metavar="KEY=VALUE", help="for Ray's processes")
    a = parser.parse_args()

    require_wrk()
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    RESULTS.mkdir(exist_ok=True)
    # NOTE: Ctrl-C (also when started in the background, where SIGINT is ignored) and
    # SIGTERM become exceptions, so the finally below still stops everything.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started: list[subprocess.Popen[bytes]] = []
    ray_up = False
    # NOTE: both stacks use the embedded defaults (SQLite, in-process session cache,
    # LanceDB), each in a fresh data dir of its own.
    for name in STORE_SETTINGS:
        os.environ.pop(name, None)
    data = Path(tempfile.mkdtemp(prefix="agentserve-bench-"))
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "loadavg_at_start": os.getloadavg(),
        "code": procs.code_version(),
        "stores": "embedded defaults (SQLite, in-process session cache, LanceDB), fresh per stack",
        "agent_config": json.loads(a.agent),
    }
    try:
        llm_port, base_port = free_port(), free_port()
        llm = start("scripted_llm", "serve_app.scripted_llm", "--port", str(llm_port))
        started.append(llm)
        llm_url = f"http://127.0.0.1:{llm_port}/v1"
        wait_http(f"{llm_url}/models", llm)
        # NOTE: one OpenMP thread, as Ray gives each replica: torch's spinning threads
        # otherwise stall the baseline's event loop (p90 of a sequential turn 94 -> 822 ms).
        env = {"AGENTSERVE_DATA_DIR": str(data / "baseline"), "OMP_NUM_THREADS": "1"}
        base_args = [f"--port={base_port}", f"--llm-url={llm_url}", f"--agent={a.agent}"]
        baseline = start("baseline", "bench.baseline", *base_args, env=env)
        started.append(baseline)
        base_url = f"http://127.0.0.1:{base_port}"
        wait_http(f"{base_url}/live", baseline)
        roles = {os.getpid(): "bench (Ray driver)", llm.pid: "scripted LLM", baseline.pid: "baseline uvicorn"}

        print("driver ceiling ...", flush=True)
        results["driver_ceiling"] = run_wrk(f"{base_url}/live", a.concurrency, 5).to_dict()
        print("baseline ...", flush=True)
        results["baseline"] = measure_stack(base_url, a, roles)
        print("starting Ray and Serve ...", flush=True)
        results["serve_env"] = dict(kv.split("=", 1) for kv in a.serve_env)
        os.environ.update(results["serve_env"])  # NOTE: Ray's processes inherit it from here.
        ray_up = True
        serve_url, results["startup"] = start_serve(llm_url, json.loads(a.agent), str(data / "serve"))
        print(f"  {results['startup']}\nserve ...", flush=True)
        results["serve"] = measure_stack(serve_url, a, roles)
        results["serve"]["replicas_after"] = replica_counts()
        if not (data / "serve" / "agentserve.db").exists():
            raise RuntimeError("the Agent replica did not use the benchmark's data dir")
        results["code_at_end"] = procs.code_version()
        results["machine"] = procs.machine()
    finally:
        if ray_up:
            from serve_app.cli import stop_serve_and_ray

            stop_serve_and_ray()
        for proc in reversed(started):
            stop(proc)
        shutil.rmtree(data, ignore_errors=True)
    a.out.write_text(json.dumps(results, indent=2))
    report(results, a.concurrency)
    print(f"\nreplicas after the run: {results['serve']['replicas_after']}\nwrote {a.out}")
    if results["code"] != results["code_at_end"]:
        print(f"WARNING: the code changed during the run: {results['code']} -> {results['code_at_end']}")


if __name__ == "__main__":
    main()
