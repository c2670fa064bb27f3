"""``RayMetricsBackend``: the application metrics as Ray metrics, exported with Serve's own.

Uses ``ray.serve.metrics`` (``ray.util.metrics`` with the replica's ``deployment``,
``replica`` and ``application`` labels added), so per-replica values stay apart.
Ray's exporter names them ``ray_<name>``, counters ``ray_<name>_total``.
"""

from __future__ import annotations

from collections.abc import Mapping

from ray.serve import metrics

from serve_app.observability.metrics import METRICS, MetricDef


class RayMetricsBackend:
    """Every definition in ``METRICS`` as a Ray Counter, Histogram or Gauge."""

    def __init__(self) -> None:
        self._m: dict[str, metrics.Counter | metrics.Histogram | metrics.Gauge] = {}
        for d in METRICS:
            if d.kind == "counter":
                self._m[d.name] = metrics.Counter(d.name, d.description, tag_keys=d.labels)
            elif d.kind == "histogram":
                self._m[d.name] = metrics.Histogram(d.name, d.description, list(d.buckets), tag_keys=d.labels)
            else:
                self._m[d.name] = metrics.Gauge(d.name, d.description, tag_keys=d.labels)
        # NOTE: a Ray gauge is only ever set; up/down moves are summed here, per label set.
        self._gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def inc(self, metric: MetricDef, labels: Mapping[str, str], value: float) -> None:
        if value > 0:
            self._m[metric.name].inc(value, tags=dict(labels))  # type: ignore[union-attr]

    def observe(self, metric: MetricDef, labels: Mapping[str, str], value: float) -> None:
        self._m[metric.name].observe(value, tags=dict(labels))  # type: ignore[union-attr]

    def add(self, metric: MetricDef, labels: Mapping[str, str], delta: float) -> None:
        key = (metric.name, tuple(sorted(labels.items())))
        value = self._gauges[key] = self._gauges.get(key, 0.0) + delta
        self._m[metric.name].set(value, tags=dict(labels))  # type: ignore[union-attr]
