"""``agentserve run``'s wait for ``/ready`` stops as soon as Serve has given up on an application."""

from __future__ import annotations

import pytest

from serve_app.cli import DeployFailed, condensed, wait_ready
from serve_app.ports import free_port


def test_an_application_serve_gave_up_on_ends_the_wait_with_serves_message() -> None:
    asked: list[int] = []

    def failures() -> list[str]:
        asked.append(1)
        return [] if len(asked) < 3 else ["agentserve: ModuleNotFoundError: No module named 'my_tools'"]

    with pytest.raises(DeployFailed, match="No module named 'my_tools'"):
        wait_ready(f"http://127.0.0.1:{free_port()}/ready", timeout_s=60, failures=failures)
    assert len(asked) == 3  # asked each round until it failed, not after


def test_without_failures_it_waits_out_the_timeout() -> None:
    assert wait_ready(f"http://127.0.0.1:{free_port()}/ready", timeout_s=1.5, failures=list) is False


SERVE_MESSAGE = """The deployment failed to start 3 times in a row. This may be due to a problem with its \
constructor or initial health check failing. See controller logs for details. Error:
\x1b[36mray::ServeReplica:agentserve:Agent.initialize_and_get_metadata()\x1b[39m (pid=21988, ip=192.0.2.2)
  File "/usr/lib/python3.11/concurrent/futures/_base.py", line 449, in result
    return self.__get_result()
  File ".venv/lib/python3.11/site-packages/ray/serve/_private/replica.py", line 1928, in initialize
    raise RuntimeError(traceback.format_exc()) from None
RuntimeError: Traceback (most recent call last):
  File "/work/main/serve_app/health_watch.py", line 49, in verdict
    raise RuntimeError(
RuntimeError: dependencies failing for 0s: the conversation store is unavailable (StoreUnavailableError)
"""


def test_serves_message_is_condensed_to_what_serve_did_and_the_exception() -> None:
    assert condensed(SERVE_MESSAGE).splitlines() == [
        "The deployment failed to start 3 times in a row. This may be due to a problem with its constructor "
        "or initial health check failing. See controller logs for details. Error:",
        "  RuntimeError: dependencies failing for 0s: the conversation store is unavailable (StoreUnavailableError)",
    ]
    plain = "The deployment failed to start 3 times in a row: ValueError: bad value"
    assert condensed(plain) == plain  # no traceback: kept whole
