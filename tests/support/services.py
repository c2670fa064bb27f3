"""Reach the real PostgreSQL and Redis of this machine; a missing server fails, never skips."""

from __future__ import annotations

import os
import socket

import pytest

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def redis_url_or_fail() -> str:
    if _reachable("127.0.0.1", 6379):
        return REDIS_URL
    pytest.fail("Redis is not reachable on 127.0.0.1:6379 (`make test` starts it)", pytrace=False)
