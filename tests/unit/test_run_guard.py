"""``serve_app.run_guard``: what a killed ``agentserve run`` leaves is swept; a stopped run's is not touched.

The guard runs as ``agentserve run`` starts it (its own process, its own session); the
"cluster" is a ``sleep`` in a session of its own that inherited the run's id, as Ray's
processes and HAProxy do. The whole run is killed for real in
``tests/cluster/test_0_agentserve_run.py``.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve_app import run_guard
from serve_app.procfs import descendants
from serve_app.run_guard import RUN_ID_ENV, RunGuard, processes_with


def _gone(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> bool:
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        return False
    return True


@pytest.fixture
def run_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``RunGuard`` sets the run's id in ``os.environ``; undone after the test."""
    monkeypatch.delenv(RUN_ID_ENV, raising=False)
    yield


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def _cluster_process(
    sleepers: list[subprocess.Popen[bytes]], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)  # env None: os.environ, the run's id too
    sleepers.append(proc)
    return proc


def test_processes_with_finds_only_the_runs_own(sleepers: list[subprocess.Popen[bytes]]) -> None:
    ours = _cluster_process(sleepers, {**os.environ, RUN_ID_ENV: "run-a"})
    other = _cluster_process(sleepers, {**os.environ, RUN_ID_ENV: "run-b"})
    prefix = _cluster_process(sleepers, {**os.environ, RUN_ID_ENV: "run-a-longer"})
    found = processes_with(RUN_ID_ENV, "run-a")
    assert ours.pid in found
    assert other.pid not in found and prefix.pid not in found and os.getpid() not in found


def test_a_killed_run_is_swept(run_env: None, sleepers: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    state = tmp_path / "ashp"
    state.mkdir()
    guard = RunGuard(str(state))
    leftover = _cluster_process(sleepers)
    unrelated = _cluster_process(sleepers, {k: v for k, v in os.environ.items() if k != RUN_ID_ENV})
    assert guard._proc.stdin is not None
    guard._proc.stdin.write(b"4242")  # a line the CLI's death cut short
    guard._proc.stdin.close()  # the CLI died: its end of the pipe closed without "stopped"
    assert _gone(leftover), "the run's leftover process was not killed"
    assert guard._proc.wait(10) == 0
    assert not state.exists()
    assert unrelated.poll() is None, "a process of no run was killed"


def test_a_stopped_run_is_left_alone(run_env: None, sleepers: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    state = tmp_path / "ashp"
    state.mkdir()
    guard = RunGuard(str(state))
    survivor = _cluster_process(sleepers)
    started = time.monotonic()
    guard.release()
    assert guard._proc.returncode == 0 and time.monotonic() - started < 5
    assert survivor.poll() is None and state.exists()


def test_the_guard_does_not_carry_the_runs_id(run_env: None, tmp_path: Path) -> None:
    guard = RunGuard(str(tmp_path))
    try:
        assert os.environ[RUN_ID_ENV] == guard.run_id
        assert guard.pid not in run_guard.processes_with(RUN_ID_ENV, guard.run_id)
    finally:
        guard.release()


def test_watched_processes_are_swept_without_the_runs_id(
    run_env: None, sleepers: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """Ray's agents overwrite their environment with their process titles: the CLI names them instead."""
    guard = RunGuard(str(tmp_path / "ashp"))
    no_id = {k: v for k, v in os.environ.items() if k != RUN_ID_ENV}
    named = _cluster_process(sleepers, no_id)
    reused = _cluster_process(sleepers, no_id)  # named with another start time: a reused pid, not the run's
    guard.watch([(p, start) for p, start in descendants(os.getpid()) if p in (named.pid, guard.pid)])
    guard.watch([(reused.pid, 1)])
    assert guard._proc.stdin is not None
    guard._proc.stdin.close()
    assert _gone(named), "a process the CLI named was not killed"
    assert guard._proc.wait(10) == 0, "the guard killed itself"
    assert reused.poll() is None
