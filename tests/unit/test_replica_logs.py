"""In a replica, our modules' log records go to Serve's logger (its JSON file, its context), at its level.

Serve configures only its ``ray.serve`` logger: ours went to the root logger, at WARNING with
no handler, so INFO was dropped and warnings went to the worker's stderr as plain text.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from deployments.process import (
    APP_PACKAGES,
    SERVE_LOGGER,
    ToServeLogger,
    in_replica,
    send_app_logs_to_serve,
    set_up_replica_process,
)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def serve_logger() -> Iterator[Collect]:
    """Serve's logger as Serve leaves it in a replica: its own handler, not propagating, at INFO."""
    serve, root = logging.getLogger(SERVE_LOGGER), logging.getLogger()
    saved = (serve.handlers[:], serve.level, serve.propagate)
    ours = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level,
                   logging.getLogger(name).propagate) for name in APP_PACKAGES}  # fmt: skip
    collect, at_root = Collect(), Collect()
    serve.handlers, serve.propagate = [collect], False
    serve.setLevel(logging.INFO)
    root.addHandler(at_root)
    try:
        yield collect
        assert at_root.records == [], "a record reached the root logger too (logged twice)"
    finally:
        root.removeHandler(at_root)
        # NOTE: setLevel, not the attribute: it also clears the loggers' cached levels.
        serve.handlers, serve.propagate = saved[0], saved[2]
        serve.setLevel(saved[1])
        for name, (handlers, level, propagate) in ours.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)


def test_our_info_and_warnings_reach_serves_logger_once(serve_logger: Collect) -> None:
    send_app_logs_to_serve()
    send_app_logs_to_serve()  # a second replica class in the process: still one handler each
    logging.getLogger("deployments.agent").info("graceful stop: every queued memory write stored")
    logging.getLogger("memory.sqlite_store").warning("store not ready")
    logging.getLogger("deployments.agent").debug("not at INFO")
    logging.getLogger("httpx").info("HTTP Request: POST ...")  # not ours: left to the root logger's WARNING
    assert [(r.name, r.levelname, r.getMessage()) for r in serve_logger.records] == [
        ("deployments.agent", "INFO", "graceful stop: every queued memory write stored"),
        ("memory.sqlite_store", "WARNING", "store not ready"),
    ]


def test_serves_level_of_the_moment_applies(serve_logger: Collect) -> None:
    send_app_logs_to_serve()
    logging.getLogger(SERVE_LOGGER).setLevel(logging.WARNING)  # a redeploy's logging_config
    logging.getLogger("agent.loop").info("dropped now")
    logging.getLogger("agent.loop").error("kept")
    assert [r.getMessage() for r in serve_logger.records] == ["kept"]


def test_outside_a_replica_our_loggers_are_left_alone() -> None:
    """A test (or a script) that builds a deployment's class in its own process keeps its logging."""
    assert not in_replica()
    before = {name: logging.getLogger(name).propagate for name in APP_PACKAGES}
    set_up_replica_process()
    assert {name: logging.getLogger(name).propagate for name in APP_PACKAGES} == before
    assert not any(isinstance(h, ToServeLogger) for name in APP_PACKAGES for h in logging.getLogger(name).handlers)
