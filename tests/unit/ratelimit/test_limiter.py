"""InProcessRateLimiter: GCRA exact under concurrency, refill, costs, the token pre-check and charge."""

from __future__ import annotations

import asyncio
import time

import pytest

from serve_app.ratelimit.http import RefusedAddresses
from serve_app.ratelimit.limiter import InProcessRateLimiter, RateLimitDecision, gcra


class FakeClock:
    def __init__(self) -> None:
        self.now_us = 1_000_000_000

    def __call__(self) -> int:
        return self.now_us

    def advance(self, seconds: float) -> None:
        self.now_us += round(seconds * 1_000_000)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(clock: FakeClock) -> InProcessRateLimiter:
    return InProcessRateLimiter(clock_us=clock)


async def test_100_concurrent_hits_against_10_admit_exactly_10() -> None:
    limiter = InProcessRateLimiter()
    decisions = await asyncio.gather(*(limiter.hit("k", 10, 60) for _ in range(100)))
    assert sum(d.allowed for d in decisions) == 10
    assert [d.remaining for d in decisions if d.allowed] == list(range(9, -1, -1))


async def test_remaining_reset_and_retry_after(limiter: InProcessRateLimiter, clock: FakeClock) -> None:
    first = await limiter.hit("k", 10, 60)
    assert (first.allowed, first.limit, first.remaining, first.reset_s, first.retry_after_s) == (True, 10, 9, 6.0, 0.0)
    for _ in range(9):
        last = await limiter.hit("k", 10, 60)
    assert (last.allowed, last.remaining, last.reset_s) == (True, 0, 60.0)
    refused = await limiter.hit("k", 10, 60)
    assert (refused.allowed, refused.remaining, refused.reset_s, refused.retry_after_s) == (False, 0, 60.0, 6.0)
    clock.advance(5.9)
    assert not (await limiter.hit("k", 10, 60)).allowed
    clock.advance(0.1)
    again = await limiter.hit("k", 10, 60)
    assert (again.allowed, again.remaining) == (True, 0)


async def test_a_refusal_spends_nothing(limiter: InProcessRateLimiter, clock: FakeClock) -> None:
    for _ in range(3):
        await limiter.hit("k", 3, 3)
    for _ in range(50):
        assert not (await limiter.hit("k", 3, 3)).allowed
    clock.advance(1)
    assert (await limiter.hit("k", 3, 3)).allowed


async def test_the_budget_refills_over_time() -> None:
    limiter = InProcessRateLimiter()
    while (await limiter.hit("k", 5, 1)).allowed:
        pass
    deadline = time.monotonic() + 3
    while not (await limiter.hit("k", 5, 1)).allowed:
        assert time.monotonic() < deadline, "no refill within 3 s of a 1 s window"
        await asyncio.sleep(0.02)
    await asyncio.sleep(1.1)  # a whole window later the burst is back
    assert all([(await limiter.hit("k", 5, 1)).allowed for _ in range(5)])


async def test_cost_spends_many_units_or_none(limiter: InProcessRateLimiter) -> None:
    assert (await limiter.hit("k", 10, 60, cost=4)).remaining == 6
    assert (await limiter.hit("k", 10, 60, cost=4)).remaining == 2
    refused = await limiter.hit("k", 10, 60, cost=4)
    assert (refused.allowed, refused.remaining, refused.retry_after_s) == (False, 2, 12.0)
    assert (await limiter.hit("k", 10, 60, cost=2)).remaining == 0


async def test_charge_goes_into_debt_and_the_zero_cost_check_refuses_until_paid(
    limiter: InProcessRateLimiter, clock: FakeClock
) -> None:
    assert (await limiter.hit("tok", 100, 60, cost=0)).allowed
    within = await limiter.charge("tok", 100, 60, 60)
    assert (within.allowed, within.remaining) == (True, 40)
    assert (await limiter.hit("tok", 100, 60, cost=0)).allowed
    over = await limiter.charge("tok", 100, 60, 90)  # recorded although it does not fit
    assert (over.allowed, over.remaining, over.retry_after_s, over.reset_s) == (False, 0, 30.0, 90.0)
    check = await limiter.hit("tok", 100, 60, cost=0)
    assert (check.allowed, check.retry_after_s) == (False, 30.0)
    clock.advance(30)
    check = await limiter.hit("tok", 100, 60, cost=0)
    assert (check.allowed, check.remaining) == (True, 0)
    clock.advance(30)
    assert (await limiter.hit("tok", 100, 60, cost=0)).remaining == 50


async def test_a_changed_limit_keeps_the_spent_fraction_of_the_window(limiter: InProcessRateLimiter) -> None:
    for _ in range(5):
        await limiter.hit("k", 10, 60)  # half the window spent
    lowered = await limiter.hit("k", 2, 60)
    assert (lowered.allowed, lowered.remaining) == (True, 0)
    raised = await limiter.hit("k", 4, 60)
    assert (raised.allowed, raised.retry_after_s) == (False, 15.0)  # refills at the new rate


async def test_keys_are_independent(limiter: InProcessRateLimiter) -> None:
    assert (await limiter.hit("a", 1, 60)).allowed
    assert not (await limiter.hit("a", 1, 60)).allowed
    assert (await limiter.hit("b", 1, 60)).allowed


@pytest.mark.parametrize(("limit", "window_s", "cost"), [(0, 60, 1), (10, 0, 1), (10, 60, -1)])
async def test_invalid_arguments_are_refused(
    limiter: InProcessRateLimiter, limit: int, window_s: float, cost: int
) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        await limiter.hit("k", limit, window_s, cost)


async def test_expired_keys_are_swept(limiter: InProcessRateLimiter, clock: FakeClock) -> None:
    for i in range(1500):
        await limiter.hit(f"old{i}", 10, 1)
    clock.advance(2)
    for i in range(600):
        await limiter.hit(f"new{i}", 10, 1)
    assert len(limiter._tat) <= 600
    assert (await limiter.hit("old1", 10, 1)).remaining == 9


def test_limits_that_do_not_divide_the_window_still_admit_exactly_the_limit() -> None:
    for limit, window_us in [(7, 60_000_000), (3, 1_000_000), (997, 1_000_000), (100_000, 60_000_000)]:
        tat, admitted = None, 0
        for _ in range(limit + 5):
            new_tat, (allowed, *_rest) = gcra(tat, 123_456_789, limit, window_us, 1, charge=False)
            tat, admitted = new_tat, admitted + allowed
        assert admitted == limit


class FakeSeconds:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_remembered_refusal_lasts_until_its_retry_after_for_its_limit() -> None:
    clock = FakeSeconds()
    refused = RefusedAddresses(clock)
    refused.remember("10.0.0.1", RateLimitDecision(False, 5, 0, reset_s=40.0, retry_after_s=12.0))
    clock.now += 11.5
    known = refused.refusal("10.0.0.1", 5)
    assert known is not None and not known.allowed
    assert (known.retry_after_s, known.reset_s, known.limit) == (0.5, 28.5, 5)
    assert refused.refusal("10.0.0.1", 6) is None  # another limit: ask the limiter
    assert refused.refusal("10.0.0.2", 5) is None
    clock.now += 0.5
    assert refused.refusal("10.0.0.1", 5) is None


def test_remembered_refusals_stay_bounded() -> None:
    clock = FakeSeconds()
    refused = RefusedAddresses(clock, keep=10)
    for i in range(10):
        refused.remember(f"a{i}", RateLimitDecision(False, 5, 0, 1.0, 1.0))
    clock.now += 2  # all expired: the next one sweeps them
    refused.remember("b", RateLimitDecision(False, 5, 0, 60.0, 60.0))
    for i in range(20):
        refused.remember(f"c{i}", RateLimitDecision(False, 5, 0, 60.0, 60.0))
    assert len(refused._until) <= 10
    assert refused.refusal("c19", 5) is not None
