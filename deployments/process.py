"""What every replica process sets up first: Ray's metrics, the garbage collector, our logs."""

from __future__ import annotations

import logging

from deployments.metrics_ray import RayMetricsBackend
from serve_app.observability import set_metrics_backend
from serve_app.settings import ProcessSettings

SERVE_LOGGER = "ray.serve"
# The top-level packages whose module loggers (``logging.getLogger(__name__)``) are ours.
APP_PACKAGES = ("agent", "memory", "tools", "deployments", "serve_app")


def set_up_replica_process() -> None:
    """Metrics to Ray's exporter, the collector thresholds of ``ProcessSettings`` (``GC_THRESHOLDS``),
    and our modules' logs into the replica's Serve log."""
    set_metrics_backend(RayMetricsBackend())
    ProcessSettings().apply()
    if in_replica():  # not where a test builds a deployment's class in its own process
        send_app_logs_to_serve()


def in_replica() -> bool:
    """Whether this code runs in a Serve replica (Serve has set its replica context)."""
    from ray import serve
    from ray.serve.exceptions import RayServeException

    try:
        serve.get_replica_context()
    except RayServeException:
        return False
    return True


class ToServeLogger(logging.Handler):
    """Hands each record to Serve's logger, at the level Serve's is set to now (the deploy
    config's ``logging_config.log_level``, which a redeploy may change)."""

    def emit(self, record: logging.LogRecord) -> None:
        serve = logging.getLogger(SERVE_LOGGER)
        if record.levelno >= serve.getEffectiveLevel():
            serve.handle(record)


def send_app_logs_to_serve() -> None:
    """Our modules' log records go through Serve's replica handlers: the replica's log file,
    JSON with the replica's context (deployment, replica, request id) under ``encoding: JSON``.

    NOTE: Serve configures its ``ray.serve`` logger only. Ours went to the root logger, at
    WARNING and with no handler: every INFO line (schema migrations applied, the embedding
    model's precision, an index built, a JWKS reload, a replica's graceful stop) was dropped,
    and warnings reached the worker's stderr file as plain text, outside the replica's log.
    """
    # INFO, or DEBUG where Serve logs DEBUG; the handler applies Serve's level of the moment.
    level = min(logging.INFO, logging.getLogger(SERVE_LOGGER).getEffectiveLevel())
    for name in APP_PACKAGES:
        logger = logging.getLogger(name)
        if not any(isinstance(h, ToServeLogger) for h in logger.handlers):
            logger.addHandler(ToServeLogger())
        logger.setLevel(level)
        logger.propagate = False
