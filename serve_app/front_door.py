"""Drain Serve's HAProxy before Serve stops: in-flight requests finish, no new ones start.

NOTE: Serve's shutdown kills its HAProxy at once (Ray 2.60's ``HAProxyApi.stop``:
``proc.kill()``), before the replicas' graceful stop, so every request still in flight
through it was cut ("Server disconnected without sending a response"), whatever
``graceful_shutdown_timeout_s`` says. ``agentserve run`` (Ctrl-C, ``docker stop``) first
soft-stops HAProxy (SIGUSR1, the signal its own reloads send the old process): it
closes its listeners, answers the requests in flight with ``Connection: close`` and
exits when its last connection is gone (Ray's config bounds that with
``hard-stop-after``). Closing the listener alone was not enough: a client that keeps
connections alive (nginx's ``keepalive`` upstream in compose) kept sending new requests
through them.

Serve stops once no request is in flight through HAProxy, not once HAProxy has exited:
Ray's config has ``option idle-close-on-response``, so a soft-stopping HAProxy keeps an
idle kept-alive connection open until it carries one more request (answered, then
closed) or ``timeout http-keep-alive`` ends it. The Agent's own LLM client (the local
model is reached through HAProxy) and nginx hold such connections, so waiting for the
exit waited out the whole stop timeout and reported requests cut that did not exist.
The soft-stop closes the admin socket's listener too, so the drain opens an interactive
admin session first (``prompt``), which lives on through the soft-stop, and reads the
streams in flight with ``show sess``. An earlier HAProxy that a reload left soft-stopping
has no admin socket any more; it is waited for until it exits.
"""

from __future__ import annotations

import glob
import logging
import os
import signal
import socket
import time

from serve_app.procfs import cmdline, pids, stat_fields

log = logging.getLogger(__name__)


def admin_sockets(socket_path: str | None) -> list[str]:
    """The admin sockets of one cluster's HAProxy: Ray puts each node's under ``<dir>/<node id>/``."""
    if not socket_path:
        return []
    directory, name = os.path.split(socket_path)
    return sorted(glob.glob(os.path.join(glob.escape(directory), "*", glob.escape(name))))


def haproxy_pid(show_info: str) -> int:
    """The process id in HAProxy's ``show info`` answer."""
    for line in show_info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Pid":
            return int(value)
    raise ValueError("no Pid in HAProxy's `show info` answer")


def running(pid: int) -> bool:
    """Whether ``pid`` still runs (an exited child not yet reaped by its parent does not)."""
    stat = stat_fields(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def processes_of(directory: str) -> set[int]:
    """HAProxy processes started with a file of ``directory`` (its config): the current one and
    the soft-stopping ones that earlier reloads left, which may still be answering streams."""
    prefix = os.path.join(directory, "")
    found = set()
    for pid in pids():
        args = cmdline(pid)
        if args and os.path.basename(args[0]) == "haproxy" and any(a.startswith(prefix) for a in args[1:]):
            found.add(pid)
    return found


class AdminSession:
    """An interactive session on HAProxy's runtime API: it outlives the soft-stop, which closes
    the admin socket's listener but not the connections already made to it."""

    def __init__(self, sock_path: str, timeout_s: float = 5.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(timeout_s)
            self._sock.connect(sock_path)
            self.ask("prompt")
        except BaseException:
            self._sock.close()
            raise

    def ask(self, line: str) -> str:
        """One command's answer (each ends with the prompt, ``"\\n> "``)."""
        self._sock.sendall(line.encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n> "):
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("HAProxy closed its admin session")
            answer += chunk
        return answer[: -len(b"> ")].decode(errors="replace")

    def close(self) -> None:
        self._sock.close()


def command(sock_path: str, line: str, timeout_s: float = 5.0) -> str:
    """One command on HAProxy's runtime API, in a session of its own."""
    session = AdminSession(sock_path, timeout_s)
    try:
        return session.ask(line)
    finally:
        session.close()


def requests_in_flight(show_sess: str) -> int:
    """Streams in ``show sess`` that carry a request: all but admin sessions (``fe=GLOBAL``)."""
    return sum(1 for line in show_sess.splitlines() if " fe=" in line and " fe=GLOBAL " not in line)


class _Watched:
    """One HAProxy being drained: its admin session while that answers, else its process."""

    def __init__(self, session: AdminSession, pid: int) -> None:
        self.session: AdminSession | None = session
        self.pid = pid

    def busy(self) -> bool:
        if self.session is not None:
            try:
                return requests_in_flight(self.session.ask("show sess")) > 0
            except TimeoutError:  # no answer in time (a stuck or very busy HAProxy): watch its exit
                self.close()
            except OSError:  # the session ended: HAProxy exited (its last connection, or hard-stop-after)
                self.close()
                return False
        return running(self.pid)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


def drain(sockets: list[str], timeout_s: float, poll_s: float = 0.1) -> int:
    """Soft-stop each HAProxy (and find its earlier, soft-stopping ones), then wait up to
    ``timeout_s`` until none carries a request.

    Returns how many were still serving requests when it stopped waiting (0: all done).
    A HAProxy that cannot be reached counts as drained: there is nothing to wait for.
    """
    watched: list[_Watched] = []
    earlier: set[int] = set()  # soft-stopping since a reload: no admin socket, waited for until gone
    try:
        for path in sockets:
            session = None
            try:
                session = AdminSession(path)
                current = haproxy_pid(session.ask("show info"))
            except (OSError, ValueError) as exc:
                if session is not None:
                    session.close()
                log.warning("HAProxy at %s could not be soft-stopped (%s); not draining it", path, type(exc).__name__)
                continue
            watched.append(_Watched(session, current))
            earlier |= processes_of(os.path.dirname(path)) - {current}
            for pid in {current} | earlier:
                try:
                    os.kill(pid, signal.SIGUSR1)  # a no-op for one already soft-stopping
                except OSError:
                    earlier.discard(pid)
        deadline = time.monotonic() + timeout_s
        while True:
            left = sum(w.busy() for w in watched) + sum(running(pid) for pid in earlier)
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(poll_s)
    finally:
        for w in watched:
            w.close()
