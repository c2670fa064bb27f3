"""Application metrics, Ray-free: definitions, a facade, the Prometheus backend, HTTP middleware."""

from serve_app.observability.metrics import (
    METRICS,
    Metrics,
    MetricsBackend,
    NullBackend,
    PrometheusBackend,
    get_metrics,
    set_metrics_backend,
)

__all__ = [
    "METRICS",
    "Metrics",
    "MetricsBackend",
    "NullBackend",
    "PrometheusBackend",
    "get_metrics",
    "set_metrics_backend",
]
