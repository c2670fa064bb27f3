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
