"""`agentserve run` (what `make run` runs), end to end: start, serve, status, metrics, Ctrl-C.

It runs before the session's `ray start --head` cluster exists (file name order), as
its own local Ray, against the scripted LLM (LLM_BASE_URL, so the local model is not
deployed), with its stores in a temp dir. Every process it started must be gone after
Ctrl-C.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from serve_app.cli import DASHBOARD_PORT
from serve_app.config_file import load_serve_config
from serve_app.ports import free_port, port_in_use
from serve_app.procfs import Proc, alive, cmdline, descendants
from serve_app.scripted_llm import ScriptedLLMServer
from tests.cluster.agentserve_run import AGENTSERVE, REPO, ended, start_run, stop_leftovers, wait_run_ready


@contextlib.contextmanager
def _taken(port: int) -> Iterator[None]:
    """``port`` listened on by someone else meanwhile (as it may be already: then left as it is)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):
            s.bind(("0.0.0.0", port))
            s.listen()
        yield


def test_agentserve_run_serves_reports_and_stops_cleanly(scripted_llm: ScriptedLLMServer, tmp_path: Path) -> None:
    # Serve's fallback proxy's default port taken (Consul's default, another cluster): ours
    # gets a port of its own (ray_serve_env); before, Serve's start failed on 8500.
    with _taken(8500):
        _serves_reports_and_stops_cleanly(scripted_llm, tmp_path)


def _serves_reports_and_stops_cleanly(scripted_llm: ScriptedLLMServer, tmp_path: Path) -> None:
    port = free_port()
    proc, lines, reader, env = start_run(port, scripted_llm.base_url, tmp_path)
    base = f"http://127.0.0.1:{port}"
    seen: set[Proc] = set()
    kept = httpx.Client()
    try:
        wait_run_ready(proc, port, lines, seen)

        r = httpx.post(f"{base}/api/chat", json={"message": "What is 17*23?"}, timeout=60)
        assert r.status_code == 200, r.text
        assert "391" in r.json()["response"] and r.json()["tool_calls"][0]["name"] == "calculator"

        # No dashboard unless asked; `agentserve status` works through Ray itself.
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{DASHBOARD_PORT}", timeout=2)
        text = "".join(lines)
        gcs = re.search(r"Ray is up at (\S+)", text)
        assert gcs, text
        # NOTE: /ready answers for the Ingress, the Agent and its store; the Embedding may still be
        # starting then (a turn goes on without memories meanwhile), so Serve says DEPLOYING a while.
        app_running = re.compile(r"agentserve:\n\s+status: RUNNING")
        status_deadline = time.monotonic() + 120
        while True:
            status = subprocess.run(
                [AGENTSERVE, "status", "--ray-address", gcs.group(1)],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert status.returncode == 0, status.stderr
            if app_running.search(status.stdout) or time.monotonic() > status_deadline:
                break
            time.sleep(2)
        assert app_running.search(status.stdout), status.stdout
        for name in ("Ingress", "Agent", "ToolExecutor", "Embedding"):
            assert re.search(rf"{name}:\n\s+status: HEALTHY", status.stdout), status.stdout

        # Ray's metrics agent exports the app's metrics without the dashboard.
        deadline = time.monotonic() + 60
        while True:
            body = httpx.get(f"http://127.0.0.1:{env['METRICS_PORT']}/metrics", timeout=10).text
            if re.search(r'ray_agentserve_tool_calls_total\{[^}]*tool="calculator"', body):
                break
            assert time.monotonic() < deadline, "the app's metrics never reached the export port"
            time.sleep(2)

        # Ctrl-C with a turn in flight (60 tokens, 3 s): HAProxy soft-stops and the turn ends
        # well before Serve stops (Serve alone kills HAProxy and cuts it).
        seen |= descendants(proc.pid)
        turn: dict[str, object] = {}

        def slow_turn() -> None:
            try:
                turn["response"] = httpx.post(f"{base}/api/chat", json={"message": "slow: 60"}, timeout=60)
            except httpx.HTTPError as exc:
                turn["error"] = repr(exc)

        # ... and a connection kept alive, idle until the run has ended (as nginx's and the local
        # model's client's are): HAProxy's soft-stop keeps it open, and the drain must not wait for it.
        assert kept.get(f"{base}/live", timeout=10).status_code == 200
        in_flight = threading.Thread(target=slow_turn)
        in_flight.start()
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        in_flight.join(timeout=60)
        response = turn.get("response")
        assert isinstance(response, httpx.Response), turn
        assert response.status_code == 200 and "t59" in response.json()["response"], response.text
    finally:
        seen |= descendants(proc.pid)
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        kept.close()
        reader.join(timeout=10)
        left = stop_leftovers(seen)  # anything left (a raylet, a replica) is stopped, then reported
    assert code == 0, "".join(lines)
    assert "stopping" in "".join(lines)
    assert re.search(r"HAProxy drained in [\d.]+ s", "".join(lines)), "".join(lines)  # not "still answering"
    # Ctrl-C, HAProxy drained: every replica was stopped at once, not callers first (Serve's own
    # shutdown, which waited out the Ingress's 30 s drain before it stopped the Agent) ...
    out = "".join(lines)
    assert re.search(r"Serve's graceful stop: [\d.]+ s \(every replica but the ingress ones stopped; in-flight", out)
    # ... so the Agent's graceful stop ran: it stores its queued memory writes, then says so.
    logs = re.search(r"Serve's logs \(controller, replicas\): (\S+)", out)
    assert logs, out
    agent_logs = "".join(
        p.read_text(errors="replace") for p in Path(logs.group(1)).glob("replica_agentserve_Agent_*.log")
    )
    assert "graceful stop: every queued memory write stored" in agent_logs, agent_logs[-3000:]
    assert len(seen) >= 8, f"expected Ray's processes and the replicas under agentserve run, saw {len(seen)}"
    assert not left, f"processes of agentserve run left after Ctrl-C: {left}"


def test_an_app_serve_cannot_deploy_ends_the_run_at_once_with_serves_reason(tmp_path: Path) -> None:
    """A tool that does not import (the ToolExecutor's constructor raises on each try): Serve
    gives the application up, and ``agentserve run`` says why and stops, instead of waiting
    out --ready-timeout (300 s) in silence and then pointing at ``agentserve status``."""
    config = load_serve_config(REPO / "configs" / "local.yaml")
    [app] = [a for a in config["applications"] if a["name"] == "agentserve"]
    app["args"]["tools"] = ["agentserve_no_such_module:WeatherTool"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    proc, lines, reader, _ = start_run(
        free_port(), f"http://127.0.0.1:{free_port()}/v1", tmp_path, f"--config={path}", "--ready-timeout=280"
    )
    seen: set[Proc] = set()
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            seen |= descendants(proc.pid)
            time.sleep(0.5)
    finally:
        left = ended(proc, reader, seen)
    out = "".join(lines)
    assert proc.returncode == 1, out
    assert "Serve could not deploy the app" in out and "agentserve_no_such_module" in out, out
    assert "did not become ready" not in out, out  # Serve's verdict ended it, not --ready-timeout
    assert not left, f"processes of agentserve run left: {left}"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "terminal-closed"])
def test_ctrl_c_while_waiting_for_ready_stops_at_once(sig: signal.Signals, tmp_path: Path) -> None:
    """Ctrl-C (or a closed terminal's SIGHUP) before /ready answers (here: the LLM is
    unreachable, so it never does) stops the run gently.

    Ctrl-C used to be heard only once the app was ready: for the whole --ready-timeout
    (300 s). SIGHUP used to kill the CLI without its stop.
    """
    port = free_port()
    proc, lines, reader, _ = start_run(port, f"http://127.0.0.1:{free_port()}/v1", tmp_path)  # nothing there
    seen: set[Proc] = set()
    try:
        deadline = time.monotonic() + 180
        while not any("sent the config to Serve" in line for line in lines):
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            seen |= descendants(proc.pid)
            time.sleep(0.5)
        time.sleep(3)  # waiting for /ready now
        seen |= descendants(proc.pid)
        try:
            ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200
        except httpx.HTTPError:
            ready = False
        assert not ready, "the app must still be waiting for /ready here"
        proc.send_signal(sig)
        code = proc.wait(timeout=90)
    finally:
        left = ended(proc, reader, seen)
    assert code == 0, "".join(lines)
    assert "stopping" in "".join(lines) and "did not become ready" not in "".join(lines)
    assert not left, f"processes of agentserve run left after Ctrl-C: {left}"


def test_a_killed_run_leaves_nothing_behind(scripted_llm: ScriptedLLMServer, tmp_path: Path) -> None:
    """SIGKILL (or the OOM killer) on ``agentserve run``: its guard (``serve_app.run_guard``)
    kills what Ray leaves, so the port is free again at once.

    Without it HAProxy outlived the cluster in one of five trials, holding the port, and
    Ray's dashboard and runtime-env agents lingered 60-75 s, holding the metrics port.
    """
    port = free_port()
    proc, lines, reader, env = start_run(port, scripted_llm.base_url, tmp_path)
    seen: set[Proc] = set()
    try:
        wait_run_ready(proc, port, lines, seen)
        assert any(cmdline(pid)[:1] and cmdline(pid)[0].endswith("haproxy") for pid, _ in seen), seen
        proc.kill()
        proc.wait()
        killed = time.monotonic()
        while [p for p in seen if alive(p)] and time.monotonic() - killed < 15:
            time.sleep(0.2)
        left = [(pid, cmdline(pid)) for pid, start in seen if alive((pid, start))]
        free = not port_in_use("127.0.0.1", port) and not port_in_use("127.0.0.1", int(env["METRICS_PORT"]))
    finally:
        ended(proc, reader, seen)  # it failed before the kill: killed now; what is left is stopped
    assert not left, f"processes of the killed agentserve run left after 15 s: {left}"
    assert free, "the app's or the metrics port is still taken"
    assert "killed" in "".join(lines), "the guard did not say what it did"
