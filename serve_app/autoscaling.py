"""Autoscaling on what a replica is short of: CPU, or room for more requests.

Serve's default policy scales on ongoing requests alone (replicas = ongoing /
``target_ongoing_requests``). That fits a deployment whose requests each keep it
busy; an agent's turn mostly waits on the LLM, so a thousand open streams may
cost one replica half a core while a few tool-heavy turns can fill it. Counted
as requests, the first starts replicas nobody needs, at the moment the machine
is busiest (a replica's start is seconds of CPU: imports, stores, a worker
process); the second never scales. ``CpuOrRequestsPolicy`` asks for enough
replicas to cover both: the ongoing requests at ``target_ongoing_requests``
each, and the CPU the replicas used at ``target_cpu_per_replica`` cores each.
Serve applies ``min_replicas``/``max_replicas``, the scaling factors and the
up/down delays around it, as for its own policy.

A replica reports its CPU through Serve's custom autoscaling metrics: the
deployment's ``record_autoscaling_stats`` returns ``{CPU_METRIC: cores}``
(``CpuMeter``), and the controller averages it over ``look_back_period_s``.
Measured on 2 cores in docs/benchmarks.md ("Seventh session").

NOTE: no Ray import here: Serve's controller imports this module by its path in
a config (``autoscaling_config.policy.policy_function``) and calls the policy
with its ``AutoscalingContext``; the unit tests call it with a stand-in.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any, Protocol

logger = logging.getLogger("ray.serve")

CPU_METRIC = "process_cpu_cores"
"""The custom autoscaling metric: CPU cores the replica's process used since its last report."""


class CpuMeter:
    """CPU cores this process used between two ``sample`` calls (all its threads)."""

    def __init__(self) -> None:
        self._cpu = time.process_time()
        self._wall = time.monotonic()

    def sample(self) -> float:
        """Cores used since the previous sample (or since the meter was made)."""
        cpu, wall = time.process_time(), time.monotonic()
        used = (cpu - self._cpu) / max(wall - self._wall, 1e-6)
        self._cpu, self._wall = cpu, wall
        return round(used, 4)


class _Config(Protocol):
    def get_target_ongoing_requests(self) -> float: ...


class _Context(Protocol):
    """What the policy reads of Serve's ``AutoscalingContext``."""

    current_num_replicas: int
    target_num_replicas: int
    config: _Config

    @property
    def total_num_requests(self) -> float: ...

    @property
    def aggregated_metrics(self) -> Mapping[str, Mapping[Any, float]] | None: ...


class CpuOrRequestsPolicy:
    """Replicas for the ongoing requests or for the CPU used, whichever asks for more.

    Args:
        target_cpu_per_replica: Cores a replica should use on average (a replica's
            user code is one event loop: near 1 core its requests queue behind each
            other). Set in a config's ``policy_kwargs``.
    """

    def __init__(self, target_cpu_per_replica: float = 0.75) -> None:
        if not 0 < target_cpu_per_replica <= 64:
            raise ValueError(f"target_cpu_per_replica must be in (0, 64], got {target_cpu_per_replica!r}")
        self.target_cpu_per_replica = float(target_cpu_per_replica)
        self._last_logged: int | None = None

    def desired(self, ctx: _Context) -> tuple[float, dict[str, float]]:
        """The replicas each signal asks for (before Serve's bounds and delays), and both signals."""
        by_requests = ctx.total_num_requests / ctx.config.get_target_ongoing_requests()
        # NOTE: the CPU the replicas reported, summed: a replica that has not reported yet
        # (just started) adds nothing. Counting it as the others' average would read its
        # arrival as more load (one replica at 0.9 cores and a new one would "need" 2.4)
        # and ask for the next replica before the load was even split.
        cpu = sum(((ctx.aggregated_metrics or {}).get(CPU_METRIC) or {}).values())
        by_cpu = cpu / self.target_cpu_per_replica
        return max(by_requests, by_cpu), {"by_requests": by_requests, "by_cpu": by_cpu, "cpu_cores": cpu}

    def __call__(self, ctx: _Context) -> tuple[float, dict[str, Any]]:
        # As Serve's own policy: the raw figure; Serve rounds it up, bounds it and delays it.
        if ctx.current_num_replicas == 0:
            return ctx.target_num_replicas, {}
        wanted, signals = self.desired(ctx)
        # One line in the controller's log each time the answer changes (the policy runs
        # every control-loop tick): why a deployment scales is then on record.
        replicas = math.ceil(round(wanted, 6))
        if replicas != self._last_logged:
            self._last_logged = replicas
            logger.info(
                "CpuOrRequestsPolicy: %s replica(s) wanted (running %d): %.2f by requests, %.2f by CPU (%.2f cores)",
                replicas,
                ctx.current_num_replicas,
                signals["by_requests"],
                signals["by_cpu"],
                signals["cpu_cores"],
            )
        return wanted, {}
