"""The rollout's decisions, on a working fake of the Serve REST API (the real one: tests/cluster)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from serve_app.rollout import (
    RolloutState,
    Verdict,
    Watch,
    WatchOptions,
    config_from_details,
    judge,
    rollback,
    rollout,
    serve_http_counts,
)

HEALTHY = ("RUNNING", {"Ingress": ("HEALTHY", ""), "Agent": ("HEALTHY", "")})
UPDATING = ("DEPLOYING", {"Ingress": ("HEALTHY", ""), "Agent": ("UPDATING", "Updating")})
START_FAILED = (
    "DEPLOYING",
    {"Ingress": ("HEALTHY", ""), "Agent": ("UPDATING", "A replica failed to start with exception. Retrying 5 more time(s). Error:\n\x1b[36mray::Agent\x1b[39m\nRuntimeError: store down")},
)  # fmt: skip
DEPLOY_FAILED = ("DEPLOY_FAILED", {"Ingress": ("HEALTHY", ""), "Agent": ("DEPLOY_FAILED", "gave up")})


def app_config(prompt: str) -> dict[str, Any]:
    return {
        "name": "agentserve",
        "import_path": "serve_app.builder:build_app",
        "deployments": [{"name": "Agent", "user_config": {"system_prompt": prompt}}],
    }


def config(prompt: str) -> dict[str, Any]:
    return {"applications": [app_config(prompt)]}


class FakeServeCluster:
    """Applies a config like the controller: a new deploy time, then the states ``plan`` gives it."""

    def __init__(self, plan: dict[str, list[tuple[str, dict[str, tuple[str, str]]]]]) -> None:
        self.plan = plan  # by system prompt: the states the app goes through, the last one stays
        self.deployed: list[dict[str, Any]] = []
        self.app: dict[str, Any] | None = None
        self.states: list[tuple[str, dict[str, tuple[str, str]]]] = []
        self.time = 0.0

    def deploy(self, config: dict[str, Any]) -> None:
        self.deployed.append(copy.deepcopy(config))
        self.time += 1
        app = config["applications"][0]
        self.app = {"deployed_app_config": copy.deepcopy(app), "last_deployed_time_s": self.time}
        self.states = list(self.plan[app["deployments"][0]["user_config"]["system_prompt"]])

    def details(self) -> dict[str, Any]:
        if self.app is None:
            return {"applications": {}}
        status, deps = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        self.app.update(
            status=status,
            message="",
            deployments={n: {"status": s, "message": m} for n, (s, m) in deps.items()},
        )
        return {"proxy_location": "HeadOnly", "applications": {"agentserve": copy.deepcopy(self.app)}}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def make_watch(cluster: FakeServeCluster, probe: Any = None, **options: float) -> tuple[Watch, list[str]]:
    clock, lines = Clock(), list[str]()
    opts = WatchOptions(**{"timeout_s": 60, "stable_s": 4, "interval_s": 1, **options})  # type: ignore[arg-type]
    return Watch(cluster, opts, probe=probe, clock=clock, sleep=clock.sleep, log=lines.append), lines


def details_with(state: tuple[str, dict[str, tuple[str, str]]], deployed_at: float = 1.0) -> dict[str, Any]:
    status, deps = state
    app = {
        "status": status,
        "last_deployed_time_s": deployed_at,
        "deployments": {n: {"status": s, "message": m} for n, (s, m) in deps.items()},
    }
    return {"applications": {"agentserve": app}}


@pytest.mark.parametrize(
    ("state", "expected"),
    [(HEALTHY, "healthy"), (UPDATING, "pending"), (START_FAILED, "failed"), (DEPLOY_FAILED, "failed")],
)
def test_judge_reads_app_and_deployment_statuses(state: Any, expected: str) -> None:
    assert judge(details_with(state), ["agentserve"], {"agentserve": 0.0}).state == expected


def test_judge_waits_until_the_new_config_is_applied() -> None:
    # Still the old deploy time: a RUNNING status belongs to the previous config.
    verdict = judge(details_with(HEALTHY, deployed_at=5.0), ["agentserve"], {"agentserve": 5.0})
    assert verdict == Verdict("pending", "agentserve: not applied yet")
    assert judge({"applications": {}}, ["agentserve"], {}).state == "pending"


def test_a_failure_reason_is_one_line_naming_the_deployment_and_the_error() -> None:
    reason = judge(details_with(START_FAILED), ["agentserve"], {}).reason
    assert "\n" not in reason and "\x1b" not in reason
    assert reason.startswith("deployment agentserve/Agent is UPDATING: A replica failed to start")
    assert reason.endswith("RuntimeError: store down")


def test_healthy_only_after_staying_healthy_for_stable_s() -> None:
    cluster = FakeServeCluster({"v2": [UPDATING, HEALTHY, UPDATING, HEALTHY]})
    watch, _ = make_watch(cluster, stable_s=4)
    cluster.deploy(config("v2"))
    assert watch.run(["agentserve"], {"agentserve": 0.0}).state == "healthy"
    # UPDATING, HEALTHY (t=1), UPDATING (t=2: the clock restarts), HEALTHY from t=3 to t=7
    assert watch.clock() == 7


def test_timeout_fails_with_the_last_state() -> None:
    cluster = FakeServeCluster({"v2": [UPDATING]})
    watch, _ = make_watch(cluster, timeout_s=10)
    cluster.deploy(config("v2"))
    verdict = watch.run(["agentserve"], {})
    assert (
        verdict.state == "failed" and "not healthy within 10s" in verdict.reason and "Agent: UPDATING" in verdict.reason
    )


def test_failing_probes_fail_a_healthy_looking_rollout() -> None:
    answers = iter([True, False, False, True, False, False])
    cluster = FakeServeCluster({"v2": [HEALTHY]})
    watch, _ = make_watch(cluster, probe=lambda: next(answers), stable_s=30, max_error_rate=0.2)
    cluster.deploy(config("v2"))
    verdict = watch.run(["agentserve"], {})
    assert verdict.state == "failed" and "3/5" in verdict.reason


def test_state_keeps_distinct_good_configs_newest_last(tmp_path: Path) -> None:
    state = RolloutState(tmp_path, keep=3)
    assert state.newest() is None
    for prompt in ["a", "b", "b", "c", "d"]:
        state.remember(config(prompt))
    assert [p.name for p in state.good()] == ["000002.yaml", "000003.yaml", "000004.yaml"]  # "b" once
    assert state.newest() == config("d") and state.newest(skip=2) == config("b")
    assert state.newest(skip=3) is None


def test_a_good_rollout_becomes_the_last_good_config(tmp_path: Path) -> None:
    cluster = FakeServeCluster({"v1": [HEALTHY], "v2": [UPDATING, HEALTHY]})
    cluster.deploy(config("v1"))
    state = RolloutState(tmp_path)
    watch, _ = make_watch(cluster)
    assert rollout(cluster, state, config("v2"), watch) == 0
    assert [c["applications"][0]["deployments"][0]["user_config"]["system_prompt"] for c in cluster.deployed] == [
        "v1",
        "v2",
    ]
    assert state.newest(skip=1)["applications"][0] == app_config("v1")  # type: ignore[index]
    assert state.newest()["applications"][0] == app_config("v2")  # type: ignore[index]


def test_a_failed_rollout_redeploys_the_last_good_config(tmp_path: Path) -> None:
    cluster = FakeServeCluster({"v1": [UPDATING, HEALTHY], "broken": [UPDATING, START_FAILED]})
    cluster.deploy(config("v1"))
    assert cluster.details()["applications"]["agentserve"]["status"] == "DEPLOYING"  # then RUNNING
    state = RolloutState(tmp_path)
    watch, lines = make_watch(cluster)
    assert rollout(cluster, state, config("broken"), watch) == 1
    assert [c["applications"][0] for c in cluster.deployed] == [
        app_config("v1"),
        app_config("broken"),
        app_config("v1"),
    ]
    assert any(line.startswith("ROLLOUT FAILED: deployment agentserve/Agent") for line in lines)
    assert lines[-1] == "rolled back: the last good config is healthy"
    assert len(state.good()) == 1 and state.newest()["applications"][0] == app_config("v1")  # type: ignore[index]


def test_no_auto_rollback_leaves_the_failed_config_and_rollback_undoes_it(tmp_path: Path) -> None:
    cluster = FakeServeCluster({"v1": [HEALTHY], "broken": [DEPLOY_FAILED]})
    cluster.deploy(config("v1"))
    state = RolloutState(tmp_path)
    watch, _ = make_watch(cluster)
    assert rollout(cluster, state, config("broken"), watch, auto_rollback=False) == 1
    assert cluster.deployed[-1] == config("broken")
    # What runs is not a good config: rollback deploys the newest good one and keeps it.
    assert rollback(cluster, state, watch) == 0
    assert cluster.deployed[-1]["applications"][0] == app_config("v1") and len(state.good()) == 1


def test_an_unhealthy_running_config_is_never_saved_as_good(tmp_path: Path) -> None:
    cluster = FakeServeCluster({"bad": [DEPLOY_FAILED], "v2": [DEPLOY_FAILED]})
    cluster.deploy(config("bad"))
    state = RolloutState(tmp_path)
    watch, lines = make_watch(cluster)
    assert rollout(cluster, state, config("v2"), watch) == 1
    assert state.good() == [] and lines[-1] == "no last good config to roll back to"
    assert len(cluster.deployed) == 2


def test_rollback_after_a_good_rollout_goes_one_back_each_time(tmp_path: Path) -> None:
    cluster = FakeServeCluster({p: [HEALTHY] for p in ["v1", "v2", "v3"]})
    state = RolloutState(tmp_path)
    watch, _ = make_watch(cluster, stable_s=0)
    cluster.deploy(config("v1"))
    for prompt in ["v2", "v3"]:
        assert rollout(cluster, state, config(prompt), watch) == 0
    assert rollback(cluster, state, watch) == 0
    assert cluster.deployed[-1]["applications"][0] == app_config("v2")
    assert rollback(cluster, state, watch) == 0
    assert cluster.deployed[-1]["applications"][0] == app_config("v1")
    assert rollback(cluster, state, watch) == 1  # nothing earlier


def test_config_from_details() -> None:
    assert config_from_details({"applications": {}}) is None
    # An app from `serve.run` has no config to redeploy.
    assert config_from_details({"applications": {"a": {"status": "RUNNING", "deployed_app_config": None}}}) is None
    details = {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": 8000},
        "applications": {
            "b": {"status": "RUNNING", "deployed_app_config": {"name": "b"}},
            "a": {"status": "RUNNING", "deployed_app_config": {"name": "a"}},
            "old": {"status": "DELETING", "deployed_app_config": {"name": "old"}},
        },
    }
    assert config_from_details(details) == {
        "applications": [{"name": "a"}, {"name": "b"}],
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": 8000},
    }


SERVE_METRICS = """\
# TYPE ray_serve_num_http_requests_total counter
ray_serve_num_http_requests_total{application="agentserve",method="POST",route="/",status_code="200"} 90.0
ray_serve_num_http_requests_total{application="agentserve",method="POST",route="/",status_code="503"} 6.0
ray_serve_num_http_requests_total{application="agentserve",method="POST",route="/",status_code="422"} 4.0
ray_serve_num_http_requests_total{application="other",method="GET",route="/o",status_code="500"} 50.0
# TYPE ray_serve_num_http_error_requests_total counter
ray_serve_num_http_error_requests_total{application="agentserve",error_code="503",method="POST",route="/"} 6.0
ray_serve_num_http_error_requests_total{application="agentserve",error_code="422",method="POST",route="/"} 4.0
ray_serve_num_http_error_requests_total{application="other",error_code="500",method="GET",route="/o"} 50.0
"""


def test_serve_http_counts_takes_5xx_of_the_watched_apps_only() -> None:
    assert serve_http_counts(SERVE_METRICS, ["agentserve"]) == (100.0, 6.0)
    assert serve_http_counts(SERVE_METRICS, ["agentserve", "other"]) == (150.0, 56.0)


def test_5xx_in_real_traffic_fail_the_rollout() -> None:
    samples = iter([(1000.0, 0.0), (1010.0, 0.0), (1030.0, 1.0), (1060.0, 11.0)])
    cluster = FakeServeCluster({"v2": [UPDATING]})
    watch, _ = make_watch(cluster, max_error_rate=0.1)
    watch.http_counts = lambda apps: lambda: next(samples)
    cluster.deploy(config("v2"))
    verdict = watch.run(["agentserve"], {})
    # 10 responses: too few to judge; 30 with 1 error: 3%; 60 with 11: 18% > 10%
    assert verdict == Verdict("failed", "HTTP 5xx: 11 of 60 responses > 10%")
    assert watch.http == (60.0, 11.0)
