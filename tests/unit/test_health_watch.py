"""DependencyWatch: a blip is tolerated, a long outage fails the replica, a success resets."""

from __future__ import annotations

import pytest

from serve_app.health_watch import DependencyWatch


class Flaky:
    def __init__(self) -> None:
        self.up = True

    async def __call__(self) -> None:
        if not self.up:
            raise ConnectionError("down")


async def test_only_a_continuous_outage_fails() -> None:
    now = [0.0]
    dep = Flaky()
    watch = DependencyWatch(dep, unhealthy_after_s=60, clock=lambda: now[0])
    await watch.verdict()
    dep.up = False
    for t in (1, 30, 59):
        now[0] = t
        await watch.verdict()  # still within the grace period
    now[0] = 62
    with pytest.raises(RuntimeError, match="failing for 61s"):
        await watch.verdict()
    dep.up = True
    await watch.verdict()  # one success resets the clock
    dep.up = False
    now[0] = 100
    await watch.verdict()
    assert watch.failing_since == 100


async def test_a_replica_whose_dependencies_never_answered_fails_at_once() -> None:
    dep = Flaky()
    dep.up = False
    watch = DependencyWatch(dep, unhealthy_after_s=60, clock=lambda: 0.0)
    with pytest.raises(RuntimeError, match="failing for 0s"):
        await watch.verdict()
    dep.up = True
    await watch.verdict()
    dep.up = False
    await watch.verdict()  # healthy once: now the grace period applies
