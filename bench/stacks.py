"""What every goal benchmark needs: the scripted LLM, the baseline and the Serve app, started and stopped.

``Stacks`` is a context manager: everything it starts (subprocesses by PID, Ray
and Serve in this process, a temp data dir) is stopped on exit, also after an
error, Ctrl-C or SIGTERM. Both stacks use the embedded defaults (SQLite,
in-process session cache, LanceDB), each in a fresh data dir of its own, with
auth disabled and rate limits off (one client IP sends everything).

The baseline runs at the niceness of Ray's workers (15 by default, set both with
``--niceness``), so other work on a shared machine slows both stacks alike. The Serve stack runs
with the Ray environment switches that ``agentserve run`` sets
(``serve_app.cli.ray_serve_env``); ``--serve-env KEY=VALUE`` changes one.
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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from bench import procs
from bench.load import LoadResult, run_wrk
from serve_app.cli import ray_serve_env, stop_serve_and_ray
from serve_app.config_file import load_serve_config
from serve_app.ports import free_port

RESULTS = Path(__file__).parent / "results"
LOCAL_CONFIG = Path(__file__).parents[1] / "configs" / "local.yaml"
APP_NAME = "agentserve"
STORE_SETTINGS = ("DATABASE_URL", "REDIS_URL", "LANCEDB_URI", "AGENTSERVE_DATA_DIR")
# The goal-1 turn: one embedding (memory recall), one LLM call, the calculator, one LLM call.
TOOL_TURN = {"message": "calc: 17*23"}
TOOL_EXPECT = "The result is 391"
# Ray starts every worker process (so every replica) at this niceness (RAY_worker_niceness).
# NOTE: at 15, processes at 0 (anyone else's tests on a shared machine) get ~28x
# their CPU share; --niceness 0 makes both stacks compete evenly with them instead.
RAY_WORKER_NICENESS = 15


def local_logging_config() -> dict[str, Any] | None:
    """``configs/local.yaml``'s ``logging_config`` (``make run``'s: JSON, no access log)."""
    return load_serve_config(LOCAL_CONFIG).get("logging_config")


def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}; see bench/results/*.log")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s:g}s")


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", default="{}", help='AgentConfig overrides for both stacks, e.g. {"memory_top_k": 0}')
    parser.add_argument(
        "--niceness",
        type=int,
        default=RAY_WORKER_NICENESS,
        help="of Ray's workers (RAY_worker_niceness) and the baseline alike",
    )
    parser.add_argument(
        "--serve-env", action="append", default=[], metavar="KEY=VALUE", help="override a Ray switch (KEY= unsets it)"
    )
    parser.add_argument(
        "--deployments",
        type=json.loads,
        default={},
        metavar="JSON",
        help='deployment options over configs/local.yaml\'s, e.g. {"Agent": {"num_replicas": 2}}',
    )


def serve_env(overrides: list[str], state_dir: Path) -> dict[str, str]:
    """The Ray switches for this run: ``agentserve run``'s, with ``KEY=VALUE`` overrides (empty value: unset)."""
    env = ray_serve_env(str(state_dir))
    for kv in overrides:
        key, _, value = kv.partition("=")
        if value:
            env[key] = value
        else:
            env.pop(key, None)
    return env


class Stacks:
    """Starts the pieces a benchmark needs and stops all of them on exit."""

    def __init__(self, name: str, niceness: int = RAY_WORKER_NICENESS) -> None:
        self.name = name
        self.niceness = niceness
        self.started: list[subprocess.Popen[bytes]] = []
        self.roles: dict[int, str] = {os.getpid(): "bench (driver)"}
        self.ray_up = False
        self.cleanup: list[Path] = []
        self.data = Path(tempfile.mkdtemp(prefix=f"agentserve-bench-{name}-"))
        self.results: dict[str, Any] = {
            "benchmark": name,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "argv": sys.argv,
            "loadavg_at_start": os.getloadavg(),
            "code": procs.code_version(),
            "niceness": niceness,
            "host_speed": procs.host_speed(),
        }
        speed = self.results["host_speed"]
        print(f"host: {speed['cpu_model']}, 2M Python additions in {speed['python_loop_2m_ms']} ms", flush=True)

    def __enter__(self) -> Stacks:
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        RESULTS.mkdir(exist_ok=True)
        _trap_signals()
        for name in STORE_SETTINGS:
            os.environ.pop(name, None)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self.ray_up:
                stop_serve_and_ray()
        finally:
            for proc in reversed(self.started):
                stop(proc)
            for path in [self.data, *self.cleanup]:
                shutil.rmtree(path, ignore_errors=True)

    def start(
        self, role: str, module: str, *args: str, env: dict[str, str] | None = None, nice: int = 0
    ) -> subprocess.Popen[bytes]:
        log = open(RESULTS / f"{self.name}-{role.replace(' ', '_')}.log", "wb")  # noqa: SIM115 (closed with the process)
        cmd = ["nice", f"-n{nice}", sys.executable, "-m", module, *args]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.started.append(proc)
        self.roles[proc.pid] = role
        return proc

    def llm(self, *args: str) -> str:
        """The scripted LLM (``bench.llm``) in its own process; returns its ``/v1`` URL."""
        port = free_port()
        proc = self.start("scripted LLM", "bench.llm", f"--port={port}", *args)
        url = f"http://127.0.0.1:{port}/v1"
        wait_http(f"{url}/models", proc)
        return url

    def baseline(self, llm_url: str, agent: str = "{}", role: str = "baseline uvicorn") -> str:
        """The single-process baseline; returns its base URL."""
        port = free_port()
        # NOTE: one OpenMP thread, as Ray gives each replica: torch's spinning threads
        # otherwise stall the baseline's event loop (p90 of a sequential turn 94 -> 822 ms).
        env = {"AGENTSERVE_DATA_DIR": str(self.data / role.replace(" ", "_")), "OMP_NUM_THREADS": "1"}
        # NOTE: at Ray's worker niceness, so that on a shared machine neither stack's
        # request path gets more of the CPU than the other's.
        args = (f"--port={port}", f"--llm-url={llm_url}", f"--agent={agent}")
        proc = self.start(role, "bench.baseline", *args, env=env, nice=self.niceness)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/live", proc)
        return url

    def ray(self, overrides: list[str]) -> None:
        """A private local Ray cluster in this process, with the Serve switches in every Ray process.

        NOTE: Serve reads its switches (RAY_SERVE_*) in the controller, the proxy and
        each replica when they start; they inherit this process's environment through
        the raylet, which a replica's runtime_env would not reach.
        """
        import ray

        # NOTE: short, under /tmp: HAProxy refuses socket paths over 97 characters.
        state = Path(tempfile.mkdtemp(prefix="ashp-", dir="/tmp"))
        self.cleanup.append(state)
        env = serve_env(overrides, state)
        if self.niceness != RAY_WORKER_NICENESS:
            env["RAY_worker_niceness"] = str(self.niceness)
        os.environ.update(env)
        self.results["serve_env"] = env
        t0 = time.monotonic()
        self.ray_up = True
        ray.init(
            address="local",  # its own cluster, never one RAY_ADDRESS or `ray start` left here
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={
                "env_vars": {
                    "HF_HUB_OFFLINE": "1",
                    "AGENTSERVE_DATA_DIR": str(self.data / "serve"),
                    "AUTH_MODE": "disabled",  # as the baseline: the bench measures turns, not auth
                }
            },
        )
        # NOTE: ray.init installs Ray's own SIGTERM handler, which ends the process at once
        # (the scripted LLM and the baseline were left running): ours again.
        _trap_signals()
        self.results.setdefault("startup", {})["ray_init_s"] = round(time.monotonic() - t0, 1)

    def serve_app(self, llm_url: str, agent: dict[str, Any], options: dict[str, dict[str, Any]] | None = None) -> str:
        """The app (``build_app``) behind Serve's HTTP on a free port; returns its base URL.

        Deployment options (replicas, ``max_ongoing_requests``, CPUs) and logging come
        from ``configs/local.yaml``, what ``make run`` deploys; the Agent's settings are
        ``agent`` (as the baseline's) and rate limits are off.
        """
        from ray import serve

        from serve_app.builder import build_app_with_options

        t0 = time.monotonic()
        port = free_port()
        config = load_serve_config(LOCAL_CONFIG)
        logging_config = config.get("logging_config")
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=logging_config)
        args = {"llm": {"base_url": llm_url, "model": "scripted", "max_retries": 0}, "agent": agent}
        [app] = [a for a in config["applications"] if a["name"] == APP_NAME]
        opts = {d.pop("name"): {k: v for k, v in d.items() if k != "user_config"} for d in app["deployments"]}
        # One client IP sends every request: rate limits off in both stacks.
        opts["Ingress"]["user_config"] = {"rate_limit": {"enabled": False}}
        for name, o in (options or {}).items():
            opts[name] = {**opts.get(name, {}), **o}
        self.results["deployment_options"] = opts
        serve.run(build_app_with_options(args, opts), name=APP_NAME, route_prefix="/", logging_config=logging_config)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/live")
        self.results.setdefault("startup", {})["serve_deploy_s"] = round(time.monotonic() - t0, 1)
        return url

    def write(self) -> Path:
        self.results["code_at_end"] = procs.code_version()
        self.results["machine"] = procs.machine()
        out = RESULTS / f"{self.name}.json"
        out.write_text(json.dumps(self.results, indent=2))
        if self.results["code"] != self.results["code_at_end"]:
            print(f"WARNING: the code changed during the run: {self.results['code']} -> {self.results['code_at_end']}")
        return out


def _trap_signals() -> None:
    """Ctrl-C (also when started in the background, where SIGINT is ignored) and SIGTERM
    become exceptions, so ``Stacks.__exit__`` still stops everything."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def check_turn(base_url: str, turn: dict[str, str], expect: str, tools: list[str]) -> None:
    body = httpx.post(f"{base_url}/api/chat", json=turn, timeout=60).raise_for_status().json()
    calls = [c["name"] for c in body["tool_calls"]]
    if expect not in body["response"] or calls != tools:
        raise RuntimeError(f"{base_url} answered {body}")


def replica_counts() -> dict[str, int]:
    """Each deployment's running replicas."""
    return {name: running for name, (_, running) in deployment_states().items()}


def deployment_states() -> dict[str, tuple[str, int]]:
    """Each deployment's status (``HEALTHY``, ``UPSCALING``, ...) and its running replicas."""
    from ray import serve

    deployments = serve.status().applications[APP_NAME].deployments
    return {
        name: (
            str(d.status).rsplit(".", 1)[-1],
            sum(n for state, n in d.replica_states.items() if str(state).endswith("RUNNING")),
        )
        for name, d in deployments.items()
    }


def warm_up(
    url: str,
    connections: int,
    min_s: float,
    body: str,
    expect: str,
    users: int = 1,
    serve: bool = False,
) -> float:
    """Load ``url`` for at least ``min_s``; on Serve, until its autoscaler has settled too
    (``until_settled``). Returns the seconds of warm-up."""

    def load(seconds: float) -> None:
        run_wrk(url, connections, seconds, body=body, expect=expect, users=users)

    return until_settled(load, min_s, deployment_states if serve else None)


def until_settled(
    load: Callable[[float], object],
    min_s: float,
    states: Callable[[], dict[str, tuple[str, int]]] | None,
    steady_s: float = 10.0,
    max_s: float = 120.0,
    step_s: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
) -> float:
    """Run ``load(seconds)`` for ``min_s``; with ``states``, on in steps until it has settled.

    NOTE: settled: every deployment ``HEALTHY`` (none starting or stopping a replica) and
    no status or replica count changed for ``steady_s`` of load, at most ``max_s``. On 2
    cores the Agent's second replica came up ~27 s into a 30 s warm-up (look-back 15 s,
    upscale delay 5 s, its start), so the first measured round was its first load.
    """
    started = clock()
    if states is None:
        load(min_s)
        return round(clock() - started, 1)
    last, since = states(), started
    while True:
        load(step_s)
        now = clock()
        state = states()
        if state != last:
            last, since = state, now
        settled = all(status == "HEALTHY" for status, _ in state.values()) and now - since >= steady_s
        if now - started >= max_s or (now - started >= min_s and settled):
            return round(now - started, 1)


def settle(quiet_cores: float = 0.4, max_wait_s: float = 20.0) -> dict[str, float]:
    """Wait until the machine is quiet before a measured round.

    NOTE: the previous round's stack may still be busy: abandoned turns ending, or an
    Agent replica the autoscaler started (seconds of CPU) landing in the other stack's
    round. An idle Serve stack takes ~0.2 cores here.
    """
    started = time.monotonic()
    while True:
        t0, busy0 = time.monotonic(), procs.machine_busy_s()
        time.sleep(0.5)
        busy = (procs.machine_busy_s() - busy0) / (time.monotonic() - t0)
        if busy < quiet_cores or time.monotonic() - started >= max_wait_s:
            return {"settled_s": round(time.monotonic() - started, 1), "cores_busy_before": round(busy, 2)}


def measured(
    url: str,
    concurrency: int,
    seconds: float,
    roles: dict[int, str],
    body: dict[str, str],
    expect: str,
    users: int = 1,
) -> dict[str, Any]:
    """One wrk run, once the machine is quiet, with the CPU time of every process this benchmark started, by role."""
    quiet = settle()
    pids = [os.getpid(), *procs.descendants(os.getpid())]
    before = procs.snapshot(pids)
    load: LoadResult = run_wrk(url, concurrency, seconds, body=json.dumps(body), expect=expect, users=users)
    after = procs.snapshot([os.getpid(), *procs.descendants(os.getpid())])
    cpu = procs.cpu_by_role(before, after, roles)
    wall = after.wall_s - before.wall_s
    ours = sum(cpu.values()) + load.driver_cpu_s
    turns = max(load.requests, 1)
    return {
        "load": load.to_dict(),
        "cpu_ms_per_turn": {k: round(v / turns * 1000, 2) for k, v in cpu.items() if v > 0.005},
        "wrk_cpu_ms_per_turn": round(load.driver_cpu_s / turns * 1000, 3),
        "our_cores_busy": round(ours / wall, 2),
        "other_cores_busy": round(max(after.machine_busy_s - before.machine_busy_s - ours, 0) / wall, 2),
        **quiet,
    }


def driver_ceiling(url: str, concurrency: int, seconds: float = 4) -> dict[str, Any]:
    """wrk against a trivial route: how many requests/s the driver itself can make here."""
    result = run_wrk(url, concurrency, seconds).to_dict()
    print(
        f"driver ceiling (wrk -c{concurrency} on {url}): {result['rps']:.0f} req/s, "
        f"wrk {result['driver_cpu_us_per_request']:.0f} µs CPU/request",
        flush=True,
    )
    return result


VECTOR_SEARCHES = "ray_agentserve_memory_vector_searches_total"


def vector_searches(metrics_url: str, at_least: int = 0, wait_s: float = 0.0) -> dict[str, int]:
    """How a stack's vector searches were answered (``copy``, ``read``, ``lancedb``, ``empty``),
    from its ``/metrics`` page; waits up to ``wait_s`` for ``at_least`` in all (Ray exports late)."""
    from prometheus_client.parser import text_string_to_metric_families

    deadline = time.monotonic() + wait_s
    while True:
        paths: dict[str, int] = {}
        for family in text_string_to_metric_families(httpx.get(metrics_url, timeout=10).text):
            for sample in family.samples:
                if sample.name == VECTOR_SEARCHES:
                    path = sample.labels["path"]
                    paths[path] = paths.get(path, 0) + int(sample.value)
        if sum(paths.values()) >= at_least or time.monotonic() >= deadline:
            return paths
        time.sleep(1.0)


def ray_metrics_url() -> str:
    """Where this process's local Ray cluster exports its (and the replicas') metrics."""
    import ray

    return f"http://127.0.0.1:{ray.nodes()[0]['MetricsExportPort']}/metrics"


def searches_by_stack(baseline_url: str, serve_turns: int) -> dict[str, dict[str, int]]:
    """Each stack's vector searches by path so far (none with semantic memory off). The
    baseline's page is current; Ray's export lags by seconds: wait for ``serve_turns``."""
    searched = {"baseline": vector_searches(f"{baseline_url}/metrics")}
    at_least = serve_turns if searched["baseline"] else 0
    searched["serve"] = vector_searches(ray_metrics_url(), at_least=at_least, wait_s=30)
    return searched


def print_searches(searched: dict[str, dict[str, int]]) -> None:
    for name, paths in searched.items():
        print(f"{name} vector searches by path: " + (", ".join(f"{k} {v}" for k, v in sorted(paths.items())) or "none"))


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"
