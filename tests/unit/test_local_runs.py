"""Which cluster a bare `agentserve status` reports on (``serve_app.local_runs``, ``status_target``).

Before, it asked Ray for "the newest local cluster": a `ray start` cluster of the user's own
whenever one ran beside `agentserve run`. tests/cluster/test_g_run_beside_a_cluster.py checks
the whole command beside such a cluster.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.server
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve_app import cli
from serve_app.cli import StatusTarget, cmd_status, status_target
from serve_app.local_runs import RUN_FILE, STATE_PREFIX, LocalRun, live_runs, record
from serve_app.ports import free_port
from serve_app.procfs import proc_of


def _started(pid: int) -> int:
    proc = proc_of(pid)
    assert proc is not None
    return proc[1]


def _write(root: Path, name: str, run: LocalRun | str) -> None:
    state = root / name
    state.mkdir()
    text = run if isinstance(run, str) else json.dumps(dataclasses.asdict(run))
    (state / RUN_FILE).write_text(text)


def _dead_pid() -> tuple[int, int]:
    child = subprocess.Popen(["sleep", "30"])
    started = _started(child.pid)
    child.kill()
    child.wait()
    return child.pid, started


def test_a_recorded_run_is_found_while_its_process_lives(tmp_path: Path) -> None:
    state = tmp_path / f"{STATE_PREFIX}x"
    state.mkdir()
    record(str(state), "127.0.0.1:6379", None, 8000)
    assert not list(state.glob("*.partial"))
    assert live_runs(str(tmp_path)) == [LocalRun(os.getpid(), _started(os.getpid()), "127.0.0.1:6379", None, 8000)]


def test_records_of_gone_processes_and_others_files_are_skipped(tmp_path: Path) -> None:
    me = _started(os.getpid())
    dead_pid, dead_started = _dead_pid()
    _write(tmp_path, f"{STATE_PREFIX}dead", LocalRun(dead_pid, dead_started, "127.0.0.1:1", None, 1))
    # a pid that lives, but is not the recorded process (started at another time): a reused pid
    _write(tmp_path, f"{STATE_PREFIX}reused", LocalRun(os.getpid(), me + 1, "127.0.0.1:2", None, 2))
    _write(tmp_path, f"{STATE_PREFIX}half", '{"pid": 1')
    _write(tmp_path, f"{STATE_PREFIX}other", '{"something": "else"}')
    _write(tmp_path, "not-ours", LocalRun(os.getpid(), me, "127.0.0.1:3", None, 3))
    (tmp_path / f"{STATE_PREFIX}empty").mkdir()
    _write(tmp_path, f"{STATE_PREFIX}live", LocalRun(os.getpid(), me, "127.0.0.1:4", "http://127.0.0.1:9", 4))
    assert [r.ray_address for r in live_runs(str(tmp_path))] == ["127.0.0.1:4"]


@pytest.fixture
def no_dashboard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(cli, "DASHBOARD_PORT", free_port())  # nothing answers there


@pytest.fixture
def a_dashboard(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(cli, "DASHBOARD_PORT", server.server_address[1])
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


RUN = LocalRun(10, 100, "127.0.0.1:6380", None, 8000)
WITH_DASHBOARD = LocalRun(11, 101, "127.0.0.1:6381", "http://127.0.0.1:8265", 8001)


@pytest.mark.usefixtures("a_dashboard")
def test_the_live_run_comes_before_any_other_cluster() -> None:
    target = status_target([RUN])
    assert isinstance(target, StatusTarget)
    assert (target.dashboard, target.ray_address) == (None, "127.0.0.1:6380")
    target = status_target([WITH_DASHBOARD])
    assert isinstance(target, StatusTarget)
    assert (target.dashboard, target.ray_address) == ("http://127.0.0.1:8265", "127.0.0.1:6381")
    assert "port 8001 (pid 11)" in target.why


def test_ray_address_comes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    target = status_target([RUN, WITH_DASHBOARD])
    assert isinstance(target, StatusTarget)
    assert (target.dashboard, target.ray_address) == (None, "10.0.0.5:6379")
    assert "RAY_ADDRESS" in target.why


def test_without_a_run_a_dashboard_on_its_port(a_dashboard: str) -> None:
    target = status_target([])
    assert isinstance(target, StatusTarget)
    assert (target.dashboard, target.ray_address) == (a_dashboard, None)


@pytest.mark.usefixtures("no_dashboard")
def test_without_a_run_or_a_dashboard_the_newest_local_cluster() -> None:
    target = status_target([])
    assert isinstance(target, StatusTarget)
    assert (target.dashboard, target.ray_address) == (None, None)
    assert "newest local Ray cluster" in target.why


@pytest.mark.usefixtures("no_dashboard")
def test_several_live_runs_are_listed_and_none_is_picked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "live_runs", lambda: [RUN, WITH_DASHBOARD])
    code = cmd_status(argparse.Namespace(address=None, ray_address=None))
    err = capsys.readouterr().err
    assert code == 2
    assert "2 `agentserve run`s live here; name one:" in err
    assert "--ray-address 127.0.0.1:6380   (pid 10, port 8000)" in err
    assert "--ray-address 127.0.0.1:6381   (pid 11, port 8001)" in err


@pytest.mark.usefixtures("no_dashboard")
def test_the_cluster_chosen_is_named_and_a_dead_one_is_a_clean_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = f"127.0.0.1:{free_port()}"
    monkeypatch.setattr(cli, "live_runs", lambda: [LocalRun(10, 100, gone, None, 8000)])
    code = cmd_status(argparse.Namespace(address=None, ray_address=None))
    err = capsys.readouterr().err
    assert code == 2
    assert f"agentserve status: the `agentserve run` on port 8000 (pid 10), Ray at {gone}" in err
    assert f"no Ray cluster at {gone}: nothing answers there" in err
