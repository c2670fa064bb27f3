"""``bench.throughput``'s warm-up: Serve's goes on until its autoscaler has settled."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # bench/ is not installed

from bench.stacks import until_settled  # noqa: E402


class Timeline:
    """A fake clock that ``load`` advances, and the deployments' states at each moment."""

    def __init__(self, changes: dict[float, dict[str, tuple[str, int]]]) -> None:
        self.now = 0.0
        self.changes = sorted(changes.items())
        self.loads: list[float] = []

    def clock(self) -> float:
        return self.now

    def load(self, seconds: float) -> None:
        self.loads.append(seconds)
        self.now += seconds

    def states(self) -> dict[str, tuple[str, int]]:
        return [state for at, state in self.changes if at <= self.now][-1]


ONE = {"Agent": ("HEALTHY", 1), "Ingress": ("HEALTHY", 1)}
STARTING = {"Agent": ("UPSCALING", 1), "Ingress": ("HEALTHY", 1)}
TWO = {"Agent": ("HEALTHY", 2), "Ingress": ("HEALTHY", 1)}


def test_without_states_it_loads_for_the_minimum_at_once() -> None:
    t = Timeline({0: ONE})
    assert until_settled(t.load, 30, None, clock=t.clock) == 30
    assert t.loads == [30]


def test_a_replica_that_comes_up_late_gets_steady_seconds_of_load_before_the_rounds() -> None:
    # The autoscaler asks for a second Agent replica 22 s in; it runs from 29 s.
    t = Timeline({0: ONE, 22: STARTING, 29: TWO})
    assert until_settled(t.load, 30, t.states, clock=t.clock) == 40
    assert t.loads == [5.0] * 8


def test_states_that_never_change_end_at_the_minimum() -> None:
    t = Timeline({0: ONE})
    assert until_settled(t.load, 30, t.states, clock=t.clock) == 30


def test_a_short_minimum_still_waits_steady_seconds() -> None:
    t = Timeline({0: TWO})
    assert until_settled(t.load, 4, t.states, clock=t.clock) == 10


def test_a_deployment_that_never_settles_is_given_up_at_the_bound() -> None:
    t = Timeline({0: STARTING})
    assert until_settled(t.load, 30, t.states, max_s=60, clock=t.clock) == 60
