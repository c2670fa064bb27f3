"""``agentserve run``'s wait for ``/ready`` stops as soon as Serve has given up on an application."""

from __future__ import annotations

import pytest

from serve_app.cli import DeployFailed, wait_ready
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
