"""What every replica process sets up first: Ray's metrics and the garbage collector."""

from __future__ import annotations

from deployments.metrics_ray import RayMetricsBackend
from serve_app.observability import set_metrics_backend
from serve_app.settings import ProcessSettings


def set_up_replica_process() -> None:
    """Metrics to Ray's exporter, and the collector thresholds of ``ProcessSettings`` (``GC_THRESHOLDS``)."""
    set_metrics_backend(RayMetricsBackend())
    ProcessSettings().apply()
