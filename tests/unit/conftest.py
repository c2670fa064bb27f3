"""Fixtures shared by the fast tier's deployment tests."""

from __future__ import annotations

import pytest
from ray.serve.batching import _BatchQueue


@pytest.fixture
def outside_a_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lets a deployment class with ``@serve.batch`` run here, without Ray.

    NOTE: the batch queue's only use of Serve's replica context is a warning that
    compares max_batch_size with the replica's max_ongoing_requests; outside a replica
    that lookup raises. Everything else of @serve.batch runs as in a replica.
    """
    monkeypatch.setattr(_BatchQueue, "_warn_if_max_batch_size_exceeds_max_ongoing_requests", lambda self: None)
