"""Drain Serve's HAProxy before Serve stops: no new connections, in-flight requests finish.

NOTE: Serve's shutdown kills its HAProxy at once (Ray 2.60's ``HAProxyApi.stop``:
``proc.kill()``), before the replicas' graceful stop, so every request still in flight
through it was cut ("Server disconnected without sending a response"), whatever
``graceful_shutdown_timeout_s`` says. ``agentserve run`` (Ctrl-C, ``docker stop``) first
closes HAProxy's HTTP listener through its runtime API, then waits until no request is in
flight to a backend (``show stat``), and only then stops Serve.
"""

from __future__ import annotations

import glob
import logging
import os
import socket
import time

log = logging.getLogger(__name__)

HTTP_FRONTEND = "http_frontend"  # the name Ray's HAProxy template gives Serve's HTTP listener
INTERNAL_PROXIES = frozenset({"stats", "prometheus"})


def admin_sockets(socket_path: str | None) -> list[str]:
    """The admin sockets of one cluster's HAProxy: Ray puts each node's under ``<dir>/<node id>/``."""
    if not socket_path:
        return []
    directory, name = os.path.split(socket_path)
    return sorted(glob.glob(os.path.join(glob.escape(directory), "*", glob.escape(name))))


def command(sock_path: str, line: str, timeout_s: float = 5.0) -> str:
    """One command on HAProxy's runtime API; HAProxy answers, then closes the connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(sock_path)
        s.sendall(line.encode() + b"\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def in_flight(stat_csv: str) -> int:
    """Requests HAProxy is forwarding or queueing, from ``show stat``'s CSV: its backends' scur + qcur."""
    lines = stat_csv.splitlines()
    if not lines or not lines[0].startswith("#"):
        raise ValueError("not HAProxy's `show stat` output")
    header = lines[0].lstrip("# ").split(",")
    px, sv, scur, qcur = (header.index(k) for k in ("pxname", "svname", "scur", "qcur"))
    total = 0
    for line in lines[1:]:
        row = line.split(",")
        if len(row) <= max(px, sv, scur, qcur) or row[sv] != "BACKEND" or row[px] in INTERNAL_PROXIES:
            continue
        total += int(row[scur] or 0) + int(row[qcur] or 0)
    return total


def drain(sockets: list[str], timeout_s: float, poll_s: float = 0.1) -> int:
    """Close each HAProxy's HTTP listener, then wait up to ``timeout_s`` for its requests to end.

    Returns how many requests were still in flight when it stopped waiting (0: all ended).
    A HAProxy that cannot be reached counts as drained: there is nothing to wait for.
    """
    live = []
    for path in sockets:
        try:
            answer = command(path, f"disable frontend {HTTP_FRONTEND}").strip()
        except OSError as exc:
            log.warning("HAProxy at %s did not answer (%s); not draining it", path, type(exc).__name__)
            continue
        if answer:  # success is silent; an error names what went wrong
            log.warning("HAProxy at %s refused to close its listener: %s", path, answer)
        live.append(path)
    deadline = time.monotonic() + timeout_s
    left = 0
    while live:
        left = 0
        for path in list(live):
            try:
                left += in_flight(command(path, "show stat"))
            except (OSError, ValueError):
                live.remove(path)  # gone (or not answering stats): nothing more to wait for there
        if left == 0 or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    return left
