"""A free local TCP port that Ray's own processes will not take before it is bound.

NOTE: a port the kernel hands out for ``bind(0)`` comes from its ephemeral range
(32768-60999 by default), where Ray's processes also bind while the cluster starts, so
a port chosen that way before ``ray.init`` and bound by HAProxy a few seconds later
was once taken meanwhile ("cannot bind socket (Address already in use)", a failed
start). Ports from 20000-29999 sit between Ray's worker ports (10002-19999), Serve's
direct-ingress ports (30000-31000) and the ephemeral range.
"""

from __future__ import annotations

import random
import socket

PORT_RANGE = (20000, 29999)
_given: set[int] = set()  # handed out by this process: two calls never get the same port


def free_port(host: str = "127.0.0.1") -> int:
    """A port in ``PORT_RANGE`` that nothing listens on now (checked by binding it), new to this process."""
    low, high = PORT_RANGE
    for _ in range(200):
        port = random.randint(low, high)
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port in {low}-{high}")


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on ``host:port``, so that a server could not bind it now.

    NOTE: with SO_REUSEADDR, as servers bind, so a closed connection's TIME_WAIT does not
    count; without SO_REUSEPORT, so a listener that set it (HAProxy) still does.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False
