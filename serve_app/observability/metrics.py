"""Application metrics: one table of definitions, a facade over it, and its backends.

Call sites record through ``get_metrics()`` (domain methods, fixed labels); where
the values go is the process's backend:

- ``RayMetricsBackend`` (``deployments.metrics_ray``): every Serve replica sets it
  in its constructor, so values reach Ray's Prometheus export and the dashboard.
- ``PrometheusBackend``: the app without Ray (the bench baseline); ``/metrics``.
- ``NullBackend``: the default, records nothing (unit tests, CLI tools).

Exported names are the same in both exporting backends: Ray prefixes every
application metric with ``ray_`` and the Prometheus backend does the same, so one
dashboard serves both. Counters get ``_total``; histograms ``_bucket/_sum/_count``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import prometheus_client

Kind = Literal["counter", "histogram", "gauge"]
EXPORT_PREFIX = "ray_"  # what Ray's exporter puts in front of every ray.util.metrics name


@dataclass(frozen=True)
class MetricDef:
    name: str
    kind: Kind
    description: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    @property
    def exported(self) -> str:
        """The name to query: ``_total`` on counters; histograms add ``_bucket/_sum/_count`` to it."""
        return EXPORT_PREFIX + self.name + ("_total" if self.kind == "counter" else "")


LATENCY_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TOKEN_GAP_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
BATCH_SIZES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)

HTTP_REQUESTS = MetricDef("agentserve_http_requests", "counter", "HTTP requests by route template and status.",
                          ("route", "method", "status"))  # fmt: skip
HTTP_DURATION = MetricDef("agentserve_http_request_duration_seconds", "histogram",
                          "HTTP request time to the end of the response (a stream: its whole length).",
                          ("route", "method"), LATENCY_S)  # fmt: skip
RATE_LIMITED = MetricDef("agentserve_rate_limited_requests", "counter", "Requests answered 429.", ("route",))
ACTIVE_STREAMS = MetricDef("agentserve_active_streams", "gauge", "Open SSE responses.", ("route",))
STORE_ERRORS = MetricDef("agentserve_store_errors", "counter", "Requests failed by an unavailable store.", ("route",))
LLM_CALLS = MetricDef("agentserve_llm_calls", "counter", "LLM calls by outcome (ok, error).", ("model", "outcome"))
LLM_TOKENS = MetricDef("agentserve_llm_tokens", "counter", "LLM tokens by kind (prompt, completion).",
                       ("model", "kind"))  # fmt: skip
LLM_TTFT = MetricDef("agentserve_llm_time_to_first_token_seconds", "histogram",
                     "From the LLM call to its first text token.", ("model",), LATENCY_S)  # fmt: skip
LLM_TPOT = MetricDef("agentserve_llm_time_per_output_token_seconds", "histogram",
                     "Mean gap between output tokens after the first, per call.", ("model",), TOKEN_GAP_S)  # fmt: skip
TOOL_CALLS = MetricDef("agentserve_tool_calls", "counter", "Tool calls by tool and outcome (ok or the error kind).",
                       ("tool", "outcome"))  # fmt: skip
TOOL_DURATION = MetricDef("agentserve_tool_call_duration_seconds", "histogram", "Tool call time.", ("tool",), LATENCY_S)
EMBED_BATCH = MetricDef("agentserve_embedding_batch_size", "histogram", "Texts per embedding model call.", (),
                        BATCH_SIZES)  # fmt: skip
MEMORY_RECALLS = MetricDef("agentserve_memory_recalls", "counter",
                           "Turns' semantic-memory recalls by outcome (ok; error, timeout: the turn went on without).",
                           ("outcome",))  # fmt: skip
MEMORY_RECALL_DURATION = MetricDef("agentserve_memory_recall_duration_seconds", "histogram",
                                   "A turn's recall: embedding its message and searching the vector store.", (),
                                   LATENCY_S)  # fmt: skip
MEMORY_WRITES = MetricDef("agentserve_memory_writes", "counter",
                          "Turns' messages remembered in the background, by outcome (stored, dropped).",
                          ("outcome",))  # fmt: skip
MEMORY_WRITE_QUEUE = MetricDef("agentserve_memory_write_queue", "gauge",
                               "Messages queued for the vector store or being written, per Agent replica.")  # fmt: skip
VECTOR_SEARCHES = MetricDef("agentserve_memory_vector_searches", "counter",
                            "Vector searches by path: copy (the replica's copy of the table), read (the table "
                            "read into a copy first), lancedb (searched in the store), empty (no table).",
                            ("path",))  # fmt: skip
VECTOR_CACHE_BYTES = MetricDef("agentserve_memory_vector_cache_bytes", "gauge",
                               "Memory taken by the copies of small vector tables, per Agent replica.")  # fmt: skip

METRICS: tuple[MetricDef, ...] = (HTTP_REQUESTS, HTTP_DURATION, RATE_LIMITED, ACTIVE_STREAMS, STORE_ERRORS,
                                  LLM_CALLS, LLM_TOKENS, LLM_TTFT, LLM_TPOT, TOOL_CALLS, TOOL_DURATION,
                                  EMBED_BATCH, MEMORY_RECALLS, MEMORY_RECALL_DURATION, MEMORY_WRITES,
                                  MEMORY_WRITE_QUEUE, VECTOR_SEARCHES, VECTOR_CACHE_BYTES)  # fmt: skip


class MetricsBackend(Protocol):
    """Where values go. Labels are exactly the definition's; values are never negative for counters."""

    def inc(self, metric: MetricDef, labels: Mapping[str, str], value: float) -> None: ...

    def observe(self, metric: MetricDef, labels: Mapping[str, str], value: float) -> None: ...

    def add(self, metric: MetricDef, labels: Mapping[str, str], delta: float) -> None:
        """Move a gauge up or down."""
        ...


class NullBackend:
    def inc(self, metric: MetricDef, labels: Mapping[str, str], value: float) -> None:
        return None

    def observe(self, metric: MetricDef, labels: Mapping[str, str], value: float) -> None:
        return None

    def add(self, metric: MetricDef, labels: Mapping[str, str], delta: float) -> None:
        return None


class PrometheusBackend:
    """prometheus-client on a private registry; serve ``render()`` on ``/metrics``."""

    def __init__(self, prefix: str = EXPORT_PREFIX) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        self._m: dict[str, prometheus_client.Counter | prometheus_client.Histogram | prometheus_client.Gauge] = {}
        for d in METRICS:
            name, r = prefix + d.name, self.registry
            if d.kind == "counter":
                self._m[d.name] = prometheus_client.Counter(name, d.description, d.labels, registry=r)
            elif d.kind == "histogram":
                self._m[d.name] = prometheus_client.Histogram(name, d.description, d.labels, registry=r,
                                                              buckets=d.buckets)  # fmt: skip
            else:
                self._m[d.name] = prometheus_client.Gauge(name, d.description, d.labels, registry=r)

    def _child(self, metric: MetricDef, labels: Mapping[str, str]) -> object:
        m = self._m[metric.name]
        return m.labels(**labels) if metric.labels else m

    def inc(self, metric: MetricDef, labels: Mapping[str, str], value: float) -> None:
        self._child(metric, labels).inc(value)  # type: ignore[attr-defined]

    def observe(self, metric: MetricDef, labels: Mapping[str, str], value: float) -> None:
        self._child(metric, labels).observe(value)  # type: ignore[attr-defined]

    def add(self, metric: MetricDef, labels: Mapping[str, str], delta: float) -> None:
        self._child(metric, labels).inc(delta)  # type: ignore[attr-defined]

    def render(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)


class Metrics:
    """The recording side: one method per thing measured, labels fixed here."""

    def __init__(self, backend: MetricsBackend) -> None:
        self.backend = backend

    def http_request(self, route: str, method: str, status: int, duration_s: float) -> None:
        b = self.backend
        b.inc(HTTP_REQUESTS, {"route": route, "method": method, "status": str(status)}, 1)
        b.observe(HTTP_DURATION, {"route": route, "method": method}, duration_s)
        if status == 429:
            b.inc(RATE_LIMITED, {"route": route}, 1)

    def stream_open(self, route: str, delta: int) -> None:
        self.backend.add(ACTIVE_STREAMS, {"route": route}, delta)

    def store_error(self, route: str) -> None:
        self.backend.inc(STORE_ERRORS, {"route": route}, 1)

    def llm_call(self, model: str, ok: bool, prompt_tokens: int, completion_tokens: int) -> None:
        b = self.backend
        b.inc(LLM_CALLS, {"model": model, "outcome": "ok" if ok else "error"}, 1)
        for kind, n in (("prompt", prompt_tokens), ("completion", completion_tokens)):
            if n > 0:
                b.inc(LLM_TOKENS, {"model": model, "kind": kind}, n)

    def llm_timing(self, model: str, ttft_s: float | None, per_token_s: float | None) -> None:
        if ttft_s is not None:
            self.backend.observe(LLM_TTFT, {"model": model}, ttft_s)
        if per_token_s is not None:
            self.backend.observe(LLM_TPOT, {"model": model}, per_token_s)

    def tool_call(self, tool: str, outcome: str, duration_s: float) -> None:
        self.backend.inc(TOOL_CALLS, {"tool": tool, "outcome": outcome}, 1)
        self.backend.observe(TOOL_DURATION, {"tool": tool}, duration_s)

    def embedding_batch(self, size: int) -> None:
        self.backend.observe(EMBED_BATCH, {}, size)

    def memory_recall(self, outcome: str, duration_s: float) -> None:
        self.backend.inc(MEMORY_RECALLS, {"outcome": outcome}, 1)
        self.backend.observe(MEMORY_RECALL_DURATION, {}, duration_s)

    def memory_writes(self, outcome: str, count: int) -> None:
        self.backend.inc(MEMORY_WRITES, {"outcome": outcome}, count)

    def memory_queue(self, delta: int) -> None:
        self.backend.add(MEMORY_WRITE_QUEUE, {}, delta)

    def vector_search(self, path: str) -> None:
        self.backend.inc(VECTOR_SEARCHES, {"path": path}, 1)

    def vector_cache(self, delta_bytes: int) -> None:
        self.backend.add(VECTOR_CACHE_BYTES, {}, delta_bytes)


_metrics = Metrics(NullBackend())


def get_metrics() -> Metrics:
    """The process's metrics (read at each call, so a later ``set_metrics_backend`` applies)."""
    return _metrics


def set_metrics_backend(backend: MetricsBackend) -> Metrics:
    """Send this process's metrics to ``backend`` from now on (a Serve replica: in its constructor)."""
    global _metrics
    _metrics = Metrics(backend)
    return _metrics
