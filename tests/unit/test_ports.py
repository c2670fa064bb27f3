"""``serve_app.ports.free_port``: outside the ports Ray's processes take, never one in use, never twice."""

from __future__ import annotations

import socket

import pytest

from serve_app import ports


def test_ports_are_in_the_quiet_range_and_never_given_twice() -> None:
    given = [ports.free_port() for _ in range(200)]
    low, high = ports.PORT_RANGE
    assert all(low <= p <= high for p in given)
    assert len(set(given)) == len(given)


def test_a_port_in_use_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        picks = iter([taken, 23456, 23457])
        monkeypatch.setattr(ports.random, "randint", lambda low, high: next(picks))
        monkeypatch.setattr(ports, "_given", set())
        assert ports.free_port() in (23456, 23457)


def test_port_in_use_sees_listeners_but_not_a_closed_connection() -> None:
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert ports.port_in_use("127.0.0.1", port)
        assert ports.port_in_use("0.0.0.0", port)
        # A closed connection's TIME_WAIT on the port does not make it "in use".
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = busy.accept()
        conn.close()
        client.close()
    assert not ports.port_in_use("127.0.0.1", port)


def test_port_in_use_sees_a_reuseport_listener() -> None:
    """HAProxy listens with SO_REUSEPORT: a check that set it too would bind beside it."""
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert ports.port_in_use("127.0.0.1", busy.getsockname()[1])
