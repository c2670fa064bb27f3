"""The app's metrics on a Prometheus page: the ``prometheus`` fixture, and reading one sample."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serve_app.observability import NullBackend, PrometheusBackend, set_metrics_backend


@pytest.fixture
def prometheus() -> Iterator[PrometheusBackend]:
    """This process's metrics on a fresh Prometheus registry, for the test's length."""
    backend = PrometheusBackend()
    set_metrics_backend(backend)
    yield backend
    set_metrics_backend(NullBackend())


def sample(text: str, name: str, default: float | None = None, **labels: str) -> float:
    """The value of ``name`` with (at least) ``labels``; ``default`` when absent, else AssertionError."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    if default is not None:
        return default
    raise AssertionError(f"{name}{labels} not in /metrics")
