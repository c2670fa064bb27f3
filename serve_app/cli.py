"""The ``agentserve`` command: run the platform locally, check configs, see status, tokens and keys."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import yaml

from serve_app.cli_auth import add_auth_commands
from serve_app.cli_backup import add_backup_commands
from serve_app.config_file import CONFIG_ERRORS, config_problem, load_serve_config, validate_serve_config
from serve_app.kuberay import add_kuberay_commands
from serve_app.local_runs import STATE_PREFIX, STATE_ROOT, LocalRun, live_runs, record
from serve_app.ports import free_port, port_in_use
from serve_app.procfs import descendants
from serve_app.rollout import add_rollout_commands
from serve_app.run_guard import RunGuard
from serve_app.serve_switches import SERVE_FAST_PATH

DASHBOARD_PORT = 8265
LOCAL_LLM_APP = "local-llm"
DEFAULT_CONFIG = "configs/local.yaml"


# How long Ctrl-C lets Serve shut down gracefully (in-flight requests finish) before Ray
# stops. NOTE: a stopping Ingress replica stays reachable for Ray's 30 s direct-ingress
# drain first, on one machine too: HAProxy's soft-stopping workers keep routing to it
# after a reload; with a 1 s drain, rollouts and downscales lost requests
# (docs/benchmarks.md, sixth session). Stopping everything needs no such wait.
STOP_TIMEOUT_S = 10.0
# What Serve's own stop gets after HAProxy's drain, however long that took: the Agent
# replicas store their queued memory writes (deployments/agent.py, MEMORY_DRAIN_S).
MIN_SERVE_STOP_S = 10.0


def ray_serve_env(state_dir: str) -> dict[str, str]:
    """Serve's fast path (``SERVE_FAST_PATH``) plus HAProxy files and ports private to one cluster.

    NOTE: HAProxy's defaults are machine-wide (/tmp/haproxy-serve, ports 8404 and
    9101): a second cluster on the same machine (tests, benchmarks) would take over
    the first one's admin socket. Keep ``state_dir`` short: Ray adds a 56-character
    directory under it and HAProxy refuses socket paths over 97 characters.
    With HAProxy on, Serve also starts a Python "fallback" proxy on the head (for
    scale from zero) on fixed ports 8500 and 9500; with 8500 taken (another cluster,
    Consul's default) Serve failed to start, a traceback naming a port no one had set.
    """

    return {
        **SERVE_FAST_PATH,
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": os.path.join(state_dir, "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": os.path.join(state_dir, "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": state_dir,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": os.path.join(state_dir, "server-state"),
        # HAProxy's per-request log datagrams (Serve's HTTP metrics); by default under
        # /tmp/haproxy-serve/<node id>/, a directory Serve leaves behind.
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": os.path.join(state_dir, "metrics.sock"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port()),
    }


def ray_cli_env() -> dict[str, str]:
    """Environment for Ray's own CLIs: usage stats off, token auth on (Ray 2.60 default)."""
    env = dict(os.environ)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("RAY_AUTH_MODE", "token")
    return env


def use_ray_cli_env() -> None:
    """Put ``ray_cli_env``'s Ray settings into this process, before it starts or joins Ray."""
    os.environ.update({k: v for k, v in ray_cli_env().items() if k.startswith("RAY_")})


def config_path(given: str | None) -> Path:
    """``--config`` as given; by default ``configs/local.yaml`` of the working directory (a
    checkout, the image's WORKDIR), else of the checkout this package runs from (its venv's
    ``agentserve`` started elsewhere)."""
    if given is not None:
        return Path(given)
    here = Path(DEFAULT_CONFIG)
    beside = Path(__file__).resolve().parents[1] / DEFAULT_CONFIG
    return beside if not here.exists() and beside.exists() else here


def prepare_config(path: str, port: int | None, host: str | None = None) -> dict[str, Any]:
    """The config to deploy: the local model only without LLM_BASE_URL; the chosen host/port."""
    config = load_serve_config(path)
    validate_serve_config(config)  # as written (the edits below assume its shape), and again after
    if host is not None:
        config.setdefault("http_options", {})["host"] = host
    if os.environ.get("LLM_BASE_URL"):
        config["applications"] = [a for a in config["applications"] if a["name"] != LOCAL_LLM_APP]
    if port is not None:
        config.setdefault("http_options", {})["port"] = port
        for app in config["applications"]:
            llm = app.get("args", {}).get("llm", {})
            if "local_base_url" in llm:
                llm["local_base_url"] = f"http://127.0.0.1:{port}/llm/v1"
    validate_serve_config(config)
    return config


class DeployFailed(Exception):
    """Serve gave up deploying an application (``DEPLOY_FAILED``)."""


def wait_ready(url: str, timeout_s: float, failures: Callable[[], list[str]] = list) -> bool:
    """Whether ``url`` answered 200 within ``timeout_s``.

    Raises:
        DeployFailed: ``failures()`` named applications Serve gave up on; waiting on
            would only wait out the timeout (300 s by default) in silence.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if failed := failures():
            raise DeployFailed("\n".join(failed))
        time.sleep(1)
    return False


def deploy_failures() -> list[str]:
    """The applications Serve gave up deploying, each with Serve's message (a bad import
    path, a constructor that kept raising)."""
    from ray import serve

    try:
        apps = serve.status().applications
    except Exception:  # the controller busy or not up yet: nothing known
        return []
    failed = []
    for name, app in apps.items():
        if str(app.status).endswith("DEPLOY_FAILED"):
            failed.append(f"{name}: {app.message}")
            failed += [
                f"{name}/{deployment}: {condensed(d.message)}"
                for deployment, d in app.deployments.items()
                if str(d.status).endswith("DEPLOY_FAILED") and d.message
            ]
    return failed


def condensed(message: str) -> str:
    """Serve's message about a deployment without the replica's traceback: its first line (what
    Serve did) and the traceback's last (the exception, which names the cause); the whole
    traceback stays in the replica's log (``serve_logs_dir``)."""
    lines = [line for line in message.splitlines() if line.strip()]
    if not any("Traceback (most recent call last)" in line for line in lines) or len(lines) < 3:
        return message
    return f"{lines[0]}\n  {lines[-1].strip()}"


def serve_logs_dir() -> Path:
    """Where the Serve logs (controller, replicas) of the Ray this process just started are:
    its session's, under Ray's default temp dir (RAY_TMPDIR, TMPDIR, /tmp: Ray's own rule).

    NOTE: resolved at once: ``session_latest`` moves to the next cluster started here."""
    from ray._common.utils import get_default_ray_temp_dir

    return (Path(get_default_ray_temp_dir()) / "session_latest").resolve() / "logs" / "serve"


def serve_cli() -> str:
    """The ``serve`` executable of this environment."""
    return str(Path(sys.executable).with_name("serve"))


def serve_deploy(config: dict[str, Any]) -> None:
    """Deploy ``config`` from this process, connected to Ray: what ``serve run CONFIG`` does.

    NOTE: ``serve deploy`` goes through the dashboard's REST API and starts a second
    Python that imports Ray (~3 s on 2 cores); this needs neither. It uses the calls
    Ray 2.60's own ``serve run`` makes for a config file (``ray/serve/scripts.py``).
    """
    from ray.serve._private import api as serve_api
    from ray.serve.config import gRPCOptions
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    client = serve_api.serve_start(
        http_options=schema.http_options.model_dump(),
        proxy_location=schema.proxy_location,
        grpc_options=gRPCOptions(**schema.grpc_options.model_dump()),
        controller_options=schema.controller_options,
    )
    client.deploy_apps(schema)
    print("sent the config to Serve", flush=True)


def stop_serve_and_ray(timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Drain HAProxy, stop Serve, then ``ray.shutdown()`` stops the rest.

    First HAProxy soft-stops: it takes no new connections or requests, and the requests in
    flight through it get up to ``timeout_s`` to end (``serve_app.front_door``: Serve's own
    shutdown kills HAProxy at once, cutting them). Then ``serve.shutdown()``, bounded by what is left of
    ``timeout_s`` but never under ``MIN_SERVE_STOP_S`` (the replicas' own graceful stop,
    e.g. the Agent's queued memory writes).

    NOTE: ``serve.shutdown()`` waits up to 30 s, all of it spent in the Ingress
    replicas' drain when the whole cluster is going away anyway. Serve's proxies
    (HAProxy included) stop within seconds, so the bound leaves nothing behind
    (tests/cluster/test_0_agentserve_run.py). ``serve.shutdown()`` takes no timeout, so
    this calls the client it wraps (Ray 2.60's ``_get_global_client``, as ``serve_deploy``
    uses Serve's own ``serve_start``).
    """
    import ray

    from serve_app.front_door import admin_sockets, drain

    started = time.monotonic()
    drained = False
    try:
        sockets = admin_sockets(os.environ.get("RAY_SERVE_HAPROXY_SOCKET_PATH"))  # none without HAProxy
        if sockets:
            left = drain(sockets, timeout_s)
            waited = time.monotonic() - started
            drained = not left
            if left:
                print(f"HAProxy still answering after {waited:.1f} s: what is in flight is cut now", flush=True)
            else:
                print(f"HAProxy drained in {waited:.1f} s", flush=True)
        _stop_serve(max(timeout_s - (time.monotonic() - started), MIN_SERVE_STOP_S), drained)
    finally:
        ray.shutdown()


def _stop_serve(timeout_s: float, drained: bool) -> None:
    """Serve's graceful stop, up to ``timeout_s``.

    With HAProxy ``drained`` (nothing in flight, no HAProxy process left), every application
    is deleted at once and the wait ends when every replica but the ingress ones has stopped.

    NOTE: Serve's own shutdown (Ray 2.60) stops deployments in tiers, callers first: the
    Agent's stop began only after the Ingress's, and an ingress replica stops only after
    Ray's direct-ingress drain (30 s, for requests a stale HAProxy worker might still send
    it). So within the bound the Agent was never stopped, and its queued memory writes
    (``AgentDeployment.__del__``) were never stored; an idle Ctrl-C waited out the bound.
    With HAProxy drained and the whole cluster going away, no request can reach an
    ingress replica any more: its drain is not waited for, the other replicas' stop is.
    """
    import ray
    from ray.serve.context import _get_global_client
    from ray.serve.exceptions import RayServeException

    try:
        client = _get_global_client()
    except RayServeException:
        return  # nothing deployed
    started = time.monotonic()
    apps = serve_apps(client) if drained else {}
    ingress = {(app, name) for app, name in apps.items() if name}
    # NOTE: only where every app's ingress is known and the replicas are seen as Ray names
    # them; else Serve's own stop, as before.
    at_once = bool(apps) and len(ingress) == len(apps) and bool(serve_replicas() - ingress)
    client.shutdown_cached_handles()
    if at_once:
        client._controller.delete_apps.remote(list(apps))
    else:
        shutdown = client._controller.graceful_shutdown.remote()

    def finished() -> bool:
        return not serve_replicas() - ingress if at_once else bool(ray.wait([shutdown], timeout=0)[0])

    while not finished() and (left := timeout_s - (time.monotonic() - started)) > 0:
        time.sleep(min(0.2, left))
    elapsed = time.monotonic() - started
    how = "every replica but the ingress ones stopped" if at_once else "Serve's shutdown"
    print(f"Serve's graceful stop: {elapsed:.1f} s ({how}; in-flight requests get {timeout_s:g} s); stopping Ray",
          flush=True)  # fmt: skip


def serve_apps(client: Any) -> dict[str, str | None]:
    """Each application's ingress deployment (None where Serve does not say), from Serve's details."""
    try:
        apps = client.get_serve_details().get("applications", {})
    except Exception:  # the controller busy or gone: Serve's whole stop then
        return {}
    return {name: (app.get("deployment_topology") or {}).get("ingress_deployment") for name, app in apps.items()}


def serve_replicas() -> set[tuple[str, str]]:
    """(application, deployment) of each Serve replica alive: Ray names their actors
    ``SERVE_REPLICA::<app>#<deployment>#<id>``."""
    import ray

    found = set()
    for actor in ray.util.list_named_actors(all_namespaces=True):
        name = str(actor["name"])
        if name.startswith("SERVE_REPLICA::"):
            app, _, rest = name.removeprefix("SERVE_REPLICA::").partition("#")
            found.add((app, rest.partition("#")[0]))
    return found


def is_tcp_port(value: object) -> bool:
    """A port a server can listen on: 1-65535, as an int or its digits."""
    return str(value).isdigit() and 1 <= int(str(value)) <= 65535


def tcp_port(value: str) -> int:
    """An argparse type: a TCP port."""
    if not is_tcp_port(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a TCP port (1-65535)")
    return int(value)


def bad_ports(ports: dict[str, object]) -> str:
    """What of ``ports`` (by where each was set) is not a TCP port, in one line; "" if all are."""
    return "; ".join(f"{where} {value!r} is not a TCP port (1-65535)" for where, value in ports.items()
                     if not is_tcp_port(value))  # fmt: skip


def taken_ports(host: str, port: int, metrics_port: int, dashboard_port: int | None = None) -> list[str]:
    """What of the app's HTTP port, the metrics port and (with ``--dashboard``) the dashboard's
    something else listens on already (the dashboard's: another cluster's dashboard, typically).

    NOTE: checked before Ray starts: HAProxy failing to bind is only seen as a /ready that
    never answers, and a server already on the port could answer it instead of the app.
    """
    taken = [f"{host}:{port} (the app's; --port)"] if port_in_use(host, port) else []
    if port_in_use("127.0.0.1", metrics_port):
        taken.append(f"{metrics_port} (metrics; METRICS_PORT)")
    if dashboard_port is not None and port_in_use("127.0.0.1", dashboard_port):
        taken.append(f"{dashboard_port} (the dashboard's; --dashboard-port)")
    return taken


def cmd_run(args: argparse.Namespace) -> int:
    use_ray_cli_env()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = config_path(args.config)
    try:
        config = prepare_config(str(path), args.port, args.host)
    except CONFIG_ERRORS as exc:
        print(f"agentserve run: not started: {path}: {config_problem(exc)}", file=sys.stderr)
        return 2
    http = config.get("http_options", {})
    port = http.get("port", 8000)
    metrics_port = os.environ.get("METRICS_PORT", "8080")
    if bad := bad_ports({f"{path}: http_options.port": port, "METRICS_PORT": metrics_port}):
        print(f"agentserve run: not started: {bad}", file=sys.stderr)
        return 2
    metrics_port = int(metrics_port)
    dashboard_port = args.dashboard_port if args.dashboard else None
    if taken := taken_ports(http.get("host", "127.0.0.1"), port, metrics_port, dashboard_port):
        print(f"agentserve run: in use already: {', '.join(taken)}; stop what listens there or "
              "choose another port", file=sys.stderr)  # fmt: skip
        return 2
    # NOTE: short and under /tmp: HAProxy refuses longer socket paths (see ray_serve_env).
    serve_state = tempfile.mkdtemp(prefix=STATE_PREFIX, dir=STATE_ROOT)
    for key, value in ray_serve_env(serve_state).items():
        os.environ.setdefault(key, value)  # an explicit RAY_SERVE_...=0 in the environment wins
    guard = RunGuard(serve_state)  # cleans up if this process is killed (serve_app.run_guard)
    import ray

    # NOTE: no dashboard unless asked: the app does not need it, and on 2 cores it cost
    # ~5 s of start and ~220 MB (docs/benchmarks.md, goal 5). Metrics export does not
    # need it (Ray's metrics agent runs on every node either way); `agentserve status`
    # works without it; `agentserve rollout` and `serve deploy` need it (--dashboard).
    shown = f"dashboard http://127.0.0.1:{dashboard_port}" if dashboard_port else "no dashboard; `--dashboard` adds it"
    if os.environ.pop("RAY_ADDRESS", ""):  # not passed on to Ray's processes either
        print("RAY_ADDRESS is set and ignored: agentserve run starts a Ray of its own "
              "(`serve deploy` or `agentserve rollout` deploy onto a cluster)", flush=True)  # fmt: skip
    print(f"starting Ray ({shown}) ...", flush=True)
    # NOTE: address="local": a Ray of its own, always. Without it ray.init joins the cluster
    # RAY_ADDRESS names, or else the newest `ray start` on this machine: the config went onto
    # that cluster (a config deploy replaces its applications) and Ctrl-C shut its Serve down.
    ray.init(address="local", include_dashboard=args.dashboard, dashboard_host="127.0.0.1",
             dashboard_port=args.dashboard_port, configure_logging=False, log_to_driver=False,
             _metrics_export_port=metrics_port)  # fmt: skip
    guard.watch(descendants(os.getpid()))  # Ray's own processes
    gcs_address = ray.get_runtime_context().gcs_address
    dashboard = f"http://127.0.0.1:{dashboard_port}" if dashboard_port else None
    try:
        record(serve_state, gcs_address, dashboard, port)  # what a bare `agentserve status` reports on
    except OSError as exc:  # a convenience: never a reason not to run
        print(f"(not recorded for `agentserve status`: {exc.strerror or exc}; use --ray-address)", flush=True)
    print(f"Ray is up at {gcs_address} (`agentserve status` reports on this run)", flush=True)
    print(f"Prometheus metrics (Ray Serve's and ours): http://127.0.0.1:{metrics_port}/metrics", flush=True)
    logs = serve_logs_dir()
    print(f"Serve's logs (controller, replicas): {logs}", flush=True)

    def _stop(*_: object) -> None:
        raise KeyboardInterrupt  # also while deploying or waiting for /ready

    # NOTE: SIGINT explicitly too: a process started in the background by a shell
    # inherits SIGINT ignored, and Ctrl-C (or `docker stop`'s SIGTERM) must always stop it,
    # at any point: a flag checked only once the app was ready left Ctrl-C unanswered
    # for the whole --ready-timeout (300 s) while /ready failed.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    # NOTE: a closed terminal (SIGHUP) stops it gently too, unless started under nohup.
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, _stop)
    try:
        print(
            f"deploying {path} ({', '.join(a['name'] for a in config['applications'])}) ...",
            flush=True,
        )
        serve_deploy(config)
        try:
            ready = wait_ready(f"http://127.0.0.1:{port}/ready", args.ready_timeout, deploy_failures)
        except DeployFailed as exc:
            print(f"agentserve run: Serve could not deploy the app:\n{exc}\n"
                  f"(the replicas' logs, with the whole tracebacks: {logs})", file=sys.stderr)  # fmt: skip
            return 1
        if not ready:
            print("the app did not become ready; see `agentserve status`", file=sys.stderr)
            return 1
        guard.watch(descendants(os.getpid()))  # and the app's
        print(f"\nagentserve is ready on http://127.0.0.1:{port}  (Ctrl-C stops it)\n"
              f"  curl -s localhost:{port}/api/chat -H 'content-type: application/json' "
              f"-d '{{\"message\": \"What is 17*23?\"}}'\n", flush=True)  # fmt: skip
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        # NOTE: a second Ctrl-C (or SIGTERM) during shutdown would leave Ray processes behind.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        print("stopping ...", flush=True)
        try:
            stop_serve_and_ray(args.stop_timeout)
        finally:
            shutil.rmtree(serve_state, ignore_errors=True)
        guard.release()  # not reached if stopping failed: the guard then sweeps what is left
    return 0


def unreachable(gcs_address: str, timeout_s: float = 3.0) -> str:
    """Why nothing answers at a GCS address ``host:port``; "" when something listens there.

    NOTE: ``ray.init`` retries an address where nothing listens for good (over 2 min here,
    still retrying), so ``status`` would hang on a mistyped one.
    """
    host, _, port = gcs_address.rpartition(":")
    if not host or not is_tcp_port(port):
        return "expected host:port (the address `agentserve run` prints)"
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        return f"nothing answers there ({exc.strerror or type(exc).__name__})"
    return ""


class StatusTarget(NamedTuple):
    """The cluster a bare ``agentserve status`` reports on, and why that one."""

    dashboard: str | None
    ray_address: str | None  # None with no dashboard either: the newest local cluster
    why: str


def status_target(runs: list[LocalRun]) -> StatusTarget | str:
    """Which cluster a bare ``agentserve status`` reports on, or why it cannot tell.

    In order: ``RAY_ADDRESS``; the one `agentserve run` live on this machine (its dashboard if it
    started one, else Ray itself); a dashboard on :8265; the newest local cluster (Ray's "auto").
    Several live runs: the caller must name one.
    """
    if env := os.environ.get("RAY_ADDRESS"):
        return StatusTarget(None, env, f"the Ray cluster RAY_ADDRESS names ({env})")
    if len(runs) > 1:
        listed = "".join(f"\n  --ray-address {r.ray_address}   (pid {r.pid}, port {r.port})" for r in runs)
        return f"agentserve status: {len(runs)} `agentserve run`s live here; name one:{listed}"
    if runs:
        run = runs[0]
        why = f"the `agentserve run` on port {run.port} (pid {run.pid}), Ray at {run.ray_address}"
        return StatusTarget(run.dashboard, run.ray_address, why)
    local = f"http://127.0.0.1:{DASHBOARD_PORT}"
    try:
        httpx.get(local, timeout=2)
        return StatusTarget(local, None, f"no `agentserve run` live here; the Ray dashboard at {local}")
    except httpx.HTTPError:
        return StatusTarget(None, None, "no `agentserve run` live here; the newest local Ray cluster")


def cmd_status(args: argparse.Namespace) -> int:
    """``serve status`` of the cluster the flags name, else of the one meant (``status_target``)."""
    dashboard, ray_address = args.address, args.ray_address
    if dashboard is None and ray_address is None:
        target = status_target(live_runs())
        if isinstance(target, str):
            print(target, file=sys.stderr)
            return 2
        dashboard, ray_address, why = target
        print(f"agentserve status: {why}", file=sys.stderr)
    if dashboard is not None:
        return subprocess.call([serve_cli(), "status", "--address", dashboard], env=ray_cli_env())
    if ray_address is not None and (problem := unreachable(ray_address)):
        print(f"no Ray cluster at {ray_address}: {problem}", file=sys.stderr)
        return 2
    use_ray_cli_env()
    import dataclasses

    import ray
    from ray import serve

    try:
        ray.init(address=ray_address or "auto", configure_logging=False, log_to_driver=False)
    except ConnectionError as exc:
        print(f"no Ray cluster at {ray_address or 'auto'}: {exc}", file=sys.stderr)
        return 2
    try:
        # NOTE: through JSON: the statuses are str enums, which yaml.safe_dump refuses.
        status = json.loads(json.dumps(dataclasses.asdict(serve.status()), default=str))
        print(yaml.safe_dump(status, sort_keys=False), end="")
        return 0
    finally:
        ray.shutdown()


def cmd_check_config(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            validate_serve_config(load_serve_config(path))
        except CONFIG_ERRORS as exc:
            print(f"{path}: {config_problem(exc, option=None)}", file=sys.stderr)
            failed += 1
        else:
            print(f"{path}: ok")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agentserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start a local Ray, deploy a config, serve until Ctrl-C")
    run.add_argument("--config", default=None,
                     help=f"a Serve config (default: {DEFAULT_CONFIG} here, else the project's)")  # fmt: skip
    run.add_argument("--port", type=tcp_port, default=None, help="HTTP port (default: the config's)")
    run.add_argument("--host", default=None, help="HTTP bind address (default: the config's, 127.0.0.1)")
    run.add_argument("--ready-timeout", type=float, default=300)
    run.add_argument("--stop-timeout", type=float, default=STOP_TIMEOUT_S,
                     help="Ctrl-C: seconds Serve may take to finish in-flight requests before Ray stops")  # fmt: skip
    run.add_argument("--dashboard", action="store_true",
                     help=f"also start Ray's dashboard on :{DASHBOARD_PORT} (serve deploy, rollout)")  # fmt: skip
    run.add_argument("--dashboard-port", type=tcp_port, default=DASHBOARD_PORT,
                     help="with --dashboard: its port (another cluster's dashboard may hold 8265)")  # fmt: skip
    run.set_defaults(func=cmd_run)
    status = sub.add_parser("status", help="`serve status` of the live `agentserve run` (apps, deployments, replicas)",
                            description="Without --address or --ray-address: the cluster RAY_ADDRESS names, else the "
                            "`agentserve run` live on this machine, else a dashboard on "
                            f":{DASHBOARD_PORT}, else the newest local Ray cluster (said on stderr).")  # fmt: skip
    status.add_argument("--address", default=None, help="a Ray dashboard's URL")
    status.add_argument("--ray-address", default=None,
                        help="a Ray cluster's GCS address (`agentserve run` prints it)")  # fmt: skip
    status.set_defaults(func=cmd_status)
    check = sub.add_parser("check-config", help="validate Serve configs with Ray's schema and our args")
    check.add_argument("files", nargs="+")
    check.set_defaults(func=cmd_check_config)
    add_auth_commands(sub)
    add_kuberay_commands(sub)  # agentserve kuberay render|validate|apply|status|delete
    add_backup_commands(sub)  # agentserve backup DEST, agentserve restore SRC
    add_rollout_commands(sub)  # agentserve rollout CONFIG, agentserve rollback
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
