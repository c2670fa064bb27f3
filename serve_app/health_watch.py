"""When to give up on a replica: dependencies failing continuously, not a blip.

Serve calls a deployment's ``check_health`` every few seconds and replaces a
replica whose check raises. A database restart must not kill every replica at
once, so a replica only fails its check once its dependencies have been failing
*continuously* for ``unhealthy_after_s``; one success resets the clock.

A replica whose dependencies have never answered (a bad ``DATABASE_URL`` in a
rollout, say) gets no grace: it fails its first check, so Serve never routes to
it and the rollout sees the failure at once.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from agent.errors import AgentError


class DependencyWatch:
    """Tracks how long a dependency check has failed without a break.

    Args:
        check: An async callable that raises when a dependency is down.
        unhealthy_after_s: Continuous failure after which ``verdict`` raises.
        clock: Monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        check: Callable[[], Awaitable[object]],
        unhealthy_after_s: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.check = check
        self.unhealthy_after_s = unhealthy_after_s
        self.clock = clock
        self.failing_since: float | None = None
        self.ever_ok = False

    async def verdict(self) -> None:
        """Run the check; raise ``RuntimeError`` once it has failed for too long."""
        try:
            await self.check()
        except Exception as exc:
            now = self.clock()
            if self.failing_since is None:
                self.failing_since = now
            if not self.ever_ok or now - self.failing_since >= self.unhealthy_after_s:
                raise RuntimeError(
                    f"dependencies failing for {now - self.failing_since:.0f}s: {what_failed(exc)}"
                ) from None
            return
        self.failing_since = None
        self.ever_ok = True


def what_failed(exc: BaseException) -> str:
    """A failed check's exception for Serve's status and logs: our own errors' messages, which
    are written for clients ("the conversation store is unavailable"); of anything else only
    its type, since a driver's message may quote a connection string."""
    return f"{exc.message} ({type(exc).__name__})" if isinstance(exc, AgentError) else type(exc).__name__
