"""``agentserve status --ray-address`` with an address where no Ray cluster is: one line, at once.

Before, ``ray.init`` kept retrying such an address (still at it after 2 min).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from serve_app.ports import free_port

AGENTSERVE = str(Path(sys.executable).with_name("agentserve"))


@pytest.mark.parametrize(
    ("address", "why"),
    [
        (f"127.0.0.1:{free_port()}", "nothing answers there (Connection refused)"),
        ("my-cluster", "expected host:port (the address `agentserve run` prints)"),
        ("127.0.0.1:99999", "expected host:port"),
    ],
)
def test_status_of_an_address_without_ray_says_so_at_once(address: str, why: str) -> None:
    done = subprocess.run(
        [AGENTSERVE, "status", "--ray-address", address],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"no Ray cluster at {address}: {why}"), done.stderr
