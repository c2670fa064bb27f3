"""DependencyWatch: a blip is tolerated, a long outage fails the replica, a success resets."""

from __future__ import annotations

import pytest

from agent.errors import StoreUnavailableError
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


async def test_the_verdict_names_what_failed_in_our_words_and_never_quotes_a_driver() -> None:
    """Serve shows the verdict (``agentserve run``, ``serve status``): our error's message says
    which dependency failed; a driver's message may quote its connection string, so only its
    type is shown."""

    async def store_down() -> None:
        raise StoreUnavailableError("the conversation store is unavailable")

    with pytest.raises(RuntimeError) as ours:
        await DependencyWatch(store_down, clock=lambda: 0.0).verdict()
    assert str(ours.value) == (
        "dependencies failing for 0s: the conversation store is unavailable (StoreUnavailableError)"
    )

    async def driver_error() -> None:
        raise ValueError("invalid dsn: postgresql://bob:S3cretPw9@db:5432/app")

    with pytest.raises(RuntimeError) as theirs:
        await DependencyWatch(driver_error, clock=lambda: 0.0).verdict()
    assert str(theirs.value) == "dependencies failing for 0s: ValueError"
