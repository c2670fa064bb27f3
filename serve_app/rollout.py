"""``agentserve rollout CONFIG`` and ``agentserve rollback``: deploy, watch, undo.

``rollout`` validates the config, saves what the cluster runs now (when it is
healthy) as the last good config, deploys the new one with Serve's declarative
API and watches it: every application RUNNING and every deployment HEALTHY for
``--stable-s`` within ``--timeout``, and optionally ``/ready`` probes
(``--probe-url``) and the real traffic's 5xx share in Ray Serve's own counters
(``--metrics-url``) under ``--max-error-rate``. On failure it redeploys the last good config
(unless ``--no-auto-rollback``) and exits 1; on success the new config becomes
the last good one. ``rollback`` redeploys the previous good config explicitly.

Good configs are kept as the cluster reports them (``GET /api/serve/applications/``:
each application's ``deployed_app_config``), so two captures compare equal when
the same config runs, whatever file it came from.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import yaml

from serve_app.config_file import load_serve_config, validate_serve_config

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
DEFAULT_STATE_DIR = Path.home() / ".agentserve" / "rollouts"
BAD_STATUSES = {"DEPLOY_FAILED", "UNHEALTHY"}
# NOTE: Ray 2.60 keeps a failing rolling update UPDATING while it retries (up to
# 3 times the replica count) and says so only in the deployment's message; a
# rollout gives up at the first replica of the new version that fails to start.
START_FAILURE_MARK = "failed to start"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ServeCluster(Protocol):
    """What a rollout needs from the cluster (the dashboard's Serve REST API)."""

    def details(self) -> dict[str, Any]: ...
    def deploy(self, config: dict[str, Any]) -> None: ...


class DashboardServeCluster:
    """The Serve REST API of a Ray dashboard, with Ray 2.60's token auth handled.

    Ray's own ``ServeSubmissionClient`` (what ``serve deploy``/``serve status`` use)
    finds the cluster's auth token and checks the Ray version.
    """

    def __init__(self, address: str) -> None:
        for key, value in {"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}.items():
            os.environ.setdefault(key, value)
        from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

        self.client = ServeSubmissionClient(address)

    def details(self) -> dict[str, Any]:
        return dict(self.client.get_serve_details())

    def deploy(self, config: dict[str, Any]) -> None:
        self.client.deploy_applications(config)


def config_from_details(details: dict[str, Any]) -> dict[str, Any] | None:
    """The deploy config the cluster runs now; None when no config-deployed app runs."""
    apps = details.get("applications") or {}
    configs = [a.get("deployed_app_config") for a in apps.values() if a.get("status") != "DELETING"]
    if not configs or any(c is None for c in configs):
        return None  # nothing deployed, or an app from `serve.run` that no config describes
    config: dict[str, Any] = {"applications": sorted(configs, key=lambda c: str(c.get("name")))}
    for key in ("proxy_location", "http_options"):
        if details.get(key) is not None:
            config[key] = details[key]
    return config


def brief(message: str) -> str:
    """A status message in one line: Ray's carry whole tracebacks (with ANSI colours)."""
    lines = [line.strip() for line in ANSI.sub("", message).splitlines() if line.strip()]
    return " ... ".join(lines[:1] + lines[-1:]) if len(lines) > 1 else "".join(lines)


@dataclass
class Verdict:
    state: Literal["pending", "healthy", "failed"]
    reason: str = ""


def judge(details: dict[str, Any], app_names: list[str], deployed_before: dict[str, float]) -> Verdict:
    """How the apps of a config stand now (pure: unit-tested).

    Args:
        details: The cluster's Serve details.
        app_names: The applications of the config being watched.
        deployed_before: Each app's ``last_deployed_time_s`` before the deploy; an app
            whose time has not moved still shows the previous config's status.
    """
    apps = details.get("applications") or {}
    pending: list[str] = []
    for name in app_names:
        app = apps.get(name)
        if app is None or app.get("last_deployed_time_s") == deployed_before.get(name):
            pending.append(f"{name}: not applied yet")
            continue
        if app.get("status") in BAD_STATUSES:
            return Verdict("failed", f"application {name!r} is {app['status']}: {brief(str(app.get('message') or ''))}")
        for dep_name, dep in sorted((app.get("deployments") or {}).items()):
            message = str(dep.get("message") or "")
            if dep.get("status") in BAD_STATUSES or START_FAILURE_MARK in message:
                return Verdict("failed", f"deployment {name}/{dep_name} is {dep.get('status')}: {brief(message)}")
            if dep.get("status") != "HEALTHY":
                pending.append(f"{name}/{dep_name}: {dep.get('status')}")
        if app.get("status") != "RUNNING":
            pending.append(f"{name}: {app.get('status')}")
    return Verdict("pending", "; ".join(pending)) if pending else Verdict("healthy")


@dataclass
class WatchOptions:
    timeout_s: float = 300.0
    stable_s: float = 10.0
    interval_s: float = 2.0
    max_error_rate: float = 0.2
    min_probes: int = 5
    min_requests: int = 20  # HTTP responses seen before their 5xx share is judged


@dataclass
class ProbeStats:
    sent: int = 0
    failed: int = 0

    @property
    def error_rate(self) -> float:
        return self.failed / self.sent if self.sent else 0.0


def serve_http_counts(text: str, apps: list[str]) -> tuple[float, float]:
    """(responses, 5xx responses) of ``apps`` in Ray Serve's proxy counters, from Prometheus text.

    ``ray_serve_num_http_error_requests`` counts 4xx too; a client's own mistakes
    are no sign of a bad rollout, so only 5xx count as errors.
    """
    from prometheus_client.parser import text_string_to_metric_families

    total = errors = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("application") not in apps or not sample.name.endswith("_total"):
                continue
            if sample.name == "ray_serve_num_http_requests_total":
                total += sample.value
            elif sample.name == "ray_serve_num_http_error_requests_total":
                errors += sample.value if str(sample.labels.get("error_code", "")).startswith("5") else 0.0
    return total, errors


def metrics_counter(url: str, apps: list[str]) -> Callable[[], tuple[float, float]]:
    def counts() -> tuple[float, float]:
        return serve_http_counts(httpx.get(url, timeout=10).text, apps)

    return counts


def http_probe(url: str) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            return httpx.get(url, timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    return probe


@dataclass
class Watch:
    """Polls the cluster until the apps are healthy and stay so, fail, or time runs out."""

    cluster: ServeCluster
    options: WatchOptions
    probe: Callable[[], bool] | None = None
    http_counts: Callable[[list[str]], Callable[[], tuple[float, float]]] | None = None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    log: Callable[[str], None] = print
    probes: ProbeStats = field(default_factory=ProbeStats)
    http: tuple[float, float] = (0.0, 0.0)  # (responses, 5xx) during the last run

    def run(self, app_names: list[str], deployed_before: dict[str, float]) -> Verdict:
        deadline = self.clock() + self.options.timeout_s
        healthy_since: float | None = None
        last = ""
        counts = self.http_counts(app_names) if self.http_counts else None
        start = counts() if counts else (0.0, 0.0)
        self.http = (0.0, 0.0)
        while True:
            verdict = judge(self.cluster.details(), app_names, deployed_before)
            if counts is not None:
                now_counts = counts()
                self.http = (now_counts[0] - start[0], now_counts[1] - start[1])
                responses, errors = self.http
                if responses >= self.options.min_requests and errors / responses > self.options.max_error_rate:
                    return Verdict(
                        "failed",
                        f"HTTP 5xx: {errors:.0f} of {responses:.0f} responses > {self.options.max_error_rate:.0%}",
                    )
            if self.probe is not None:
                self.probes.sent += 1
                self.probes.failed += 0 if self.probe() else 1
                if self.probes.sent >= self.options.min_probes and self.probes.error_rate > self.options.max_error_rate:
                    return Verdict(
                        "failed",
                        f"readiness probes failing: {self.probes.failed}/{self.probes.sent} "
                        f"> {self.options.max_error_rate:.0%}",
                    )
            if verdict.state == "failed":
                return verdict
            now = self.clock()
            if verdict.state == "healthy":
                healthy_since = now if healthy_since is None else healthy_since
                if now - healthy_since >= self.options.stable_s:
                    return verdict
            else:
                healthy_since = None
                if verdict.reason != last:
                    self.log(f"  waiting: {verdict.reason}")
                    last = verdict.reason
            if now >= deadline:
                return Verdict("failed", f"not healthy within {self.options.timeout_s:.0f}s ({verdict.reason})")
            self.sleep(self.options.interval_s)

    def report(self) -> None:
        if self.probe is not None:
            self.log(f"  readiness probes: {self.probes.sent} sent, {self.probes.failed} failed")
        if self.http_counts is not None:
            self.log(f"  HTTP responses during the watch: {self.http[0]:.0f}, of them 5xx: {self.http[1]:.0f}")


class RolloutState:
    """Good configs, newest last, in ``<state_dir>/good/NNNNNN.yaml``; ``keep`` of them."""

    def __init__(self, state_dir: Path, keep: int = 5) -> None:
        self.dir = state_dir / "good"
        self.keep = keep

    def good(self) -> list[Path]:
        return sorted(self.dir.glob("*.yaml")) if self.dir.exists() else []

    def newest(self, skip: int = 0) -> dict[str, Any] | None:
        files = self.good()
        return load_serve_config(files[-1 - skip]) if len(files) > skip else None

    def remember(self, config: dict[str, Any]) -> bool:
        """Save ``config`` as the newest good one unless it already is; True if saved."""
        if self.newest() == config:
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        files = self.good()
        number = int(files[-1].stem) + 1 if files else 1
        tmp = self.dir / f".{number:06d}.tmp"
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        tmp.replace(self.dir / f"{number:06d}.yaml")
        for old in self.good()[: -self.keep]:
            old.unlink()
        return True

    def forget_newest(self) -> None:
        files = self.good()
        if files:
            files[-1].unlink()


def app_names(config: dict[str, Any]) -> list[str]:
    return [str(a["name"]) for a in config.get("applications", [])]


def deploy_times(details: dict[str, Any]) -> dict[str, float]:
    return {name: app.get("last_deployed_time_s", 0.0) for name, app in (details.get("applications") or {}).items()}


def deploy_and_watch(cluster: ServeCluster, config: dict[str, Any], watch: Watch) -> Verdict:
    before = deploy_times(cluster.details())
    cluster.deploy(config)
    return watch.run(app_names(config), before)


def rollout(
    cluster: ServeCluster, state: RolloutState, config: dict[str, Any], watch: Watch, auto_rollback: bool = True
) -> int:
    """Deploy ``config``; on failure redeploy the last good one. 0 healthy, 1 failed."""
    details = cluster.details()
    current = config_from_details(details)
    if current is not None and judge(details, app_names(current), {}).state == "healthy":
        if state.remember(current):
            watch.log("saved the running config as the last good one")
    elif current is not None:
        watch.log("the running config is not healthy now: it is not saved as good")
    last_good = state.newest()
    watch.log(f"deploying {', '.join(app_names(config))} ...")
    verdict = deploy_and_watch(cluster, config, watch)
    watch.report()
    if verdict.state == "healthy":
        captured = config_from_details(cluster.details())
        state.remember(captured if captured is not None else config)
        watch.log("rollout succeeded: every application RUNNING, every deployment HEALTHY")
        return 0
    watch.log(f"ROLLOUT FAILED: {verdict.reason}")
    if not auto_rollback:
        watch.log("not rolling back (--no-auto-rollback); `agentserve rollback` redeploys the last good config")
        return 1
    if last_good is None:
        watch.log("no last good config to roll back to")
        return 1
    watch.log("rolling back to the last good config ...")
    watch.probes = ProbeStats()
    back = deploy_and_watch(cluster, last_good, watch)
    watch.report()
    watch.log(
        "rolled back: the last good config is healthy" if back.state == "healthy" else f"ROLLBACK FAILED: {back.reason}"
    )
    return 1


def rollback(cluster: ServeCluster, state: RolloutState, watch: Watch) -> int:
    """Redeploy the newest good config that is not what runs now. 0 healthy, 1 failed."""
    current = config_from_details(cluster.details())
    runs_newest = current is not None and current == state.newest()
    target = state.newest(skip=1 if runs_newest else 0)
    if target is None:
        watch.log("no earlier good config to roll back to")
        return 1
    watch.log(f"rolling back to {', '.join(app_names(target))} ...")
    verdict = deploy_and_watch(cluster, target, watch)
    watch.report()
    if verdict.state != "healthy":
        watch.log(f"ROLLBACK FAILED: {verdict.reason}")
        return 1
    if runs_newest:
        state.forget_newest()  # so a second rollback goes one further back
    watch.log("rolled back: every application RUNNING, every deployment HEALTHY")
    return 0


def _watch_from_args(args: argparse.Namespace, cluster: ServeCluster) -> Watch:
    options = WatchOptions(
        timeout_s=args.timeout, stable_s=args.stable_s, interval_s=args.interval, max_error_rate=args.max_error_rate
    )
    probe = http_probe(args.probe_url) if args.probe_url else None
    counts = (lambda apps: metrics_counter(args.metrics_url, apps)) if args.metrics_url else None
    return Watch(cluster, options, probe=probe, http_counts=counts, log=lambda line: print(line, flush=True))


def _connect(address: str) -> DashboardServeCluster | None:
    try:
        return DashboardServeCluster(address)
    except Exception as exc:
        print(f"cannot reach the Ray dashboard at {address}: {exc}", file=sys.stderr)
        return None


def cmd_rollout(args: argparse.Namespace) -> int:
    try:
        config = load_serve_config(args.config)
        validate_serve_config(config)
    except Exception as exc:
        print(f"{args.config}: invalid, nothing deployed: {exc}", file=sys.stderr)
        return 2
    cluster = _connect(args.address)
    if cluster is None:
        return 2
    state = RolloutState(Path(args.state_dir), keep=args.keep)
    return rollout(cluster, state, config, _watch_from_args(args, cluster), auto_rollback=args.auto_rollback)


def cmd_rollback(args: argparse.Namespace) -> int:
    cluster = _connect(args.address)
    if cluster is None:
        return 2
    return rollback(cluster, RolloutState(Path(args.state_dir), keep=args.keep), _watch_from_args(args, cluster))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=DEFAULT_ADDRESS, help="the Ray dashboard")
    p.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR), help="where good configs are kept")
    p.add_argument("--keep", type=int, default=5, help="good configs kept")
    p.add_argument("--timeout", type=float, default=300, help="seconds to become healthy")
    p.add_argument("--stable-s", type=float, default=10, help="seconds it must stay healthy")
    p.add_argument("--interval", type=float, default=2, help="seconds between status polls")
    p.add_argument("--probe-url", default=None, help="also probe this URL (e.g. http://127.0.0.1:8000/ready)")
    p.add_argument(
        "--metrics-url",
        default=None,
        help="Ray's Prometheus endpoint (e.g. http://127.0.0.1:8080/metrics): judge the 5xx share of real traffic",
    )
    p.add_argument("--max-error-rate", type=float, default=0.2, help="of the probes and of the HTTP responses, at most")


def add_rollout_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registers ``rollout`` and ``rollback`` on the CLI's subparsers."""
    p = sub.add_parser("rollout", help="deploy a config, watch it, roll back on failure")
    p.add_argument("config", help="a Serve config file (checked with `agentserve check-config`'s rules first)")
    p.add_argument(
        "--no-auto-rollback", dest="auto_rollback", action="store_false", help="on failure, leave the new config"
    )
    _common(p)
    p.set_defaults(func=cmd_rollout)
    r = sub.add_parser("rollback", help="redeploy the previous good config")
    _common(r)
    r.set_defaults(func=cmd_rollback)


__all__ = ["DashboardServeCluster", "RolloutState", "Verdict", "Watch", "WatchOptions", "judge", "rollback", "rollout"]
