"""Rate limiters: one contract for the in-process and the Redis limiter; Redis exact across replicas and processes.

A request's decision (``hit_all``: its address, its principal, its token budget) is
one atomic step: every bucket spends or none does, exact under concurrency too.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis as sync_redis

from serve_app.ratelimit.limiter import Bucket, InProcessRateLimiter, RateLimiter, RedisRateLimiter
from tests.support.services import redis_url_or_fail

CLOSED_PORT_URL = "redis://127.0.0.1:1/15"


def patient(url: str, prefix: str) -> RedisRateLimiter:
    """Fail closed with a long timeout: a late reply takes the fallback, and 0.25 s is tight on a loaded machine."""
    return RedisRateLimiter(url, prefix=prefix, timeout_s=10.0, fail_open=False)


@pytest.fixture
def redis_prefix() -> Iterator[tuple[str, str]]:
    """A Redis URL (db 15) and a prefix of this test's own; its keys are deleted afterwards."""
    url = redis_url_or_fail()
    prefix = f"agentserve-test:rl:{uuid.uuid4().hex}"
    yield url, prefix
    client = sync_redis.Redis.from_url(url)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(params=["in_process", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    made: RateLimiter
    if request.param == "redis":
        url, prefix = request.getfixturevalue("redis_prefix")
        made = patient(url, prefix)
    else:
        made = InProcessRateLimiter()
    yield made
    await made.close()
    assert getattr(made, "fallbacks", 0) == 0


async def test_100_parallel_hits_against_10_admit_exactly_10(limiter: RateLimiter) -> None:
    decisions = await asyncio.gather(*(limiter.hit("k", 10, 60) for _ in range(100)))
    assert sum(d.allowed for d in decisions) == 10
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))
    refused = next(d for d in decisions if not d.allowed)
    assert refused.remaining == 0
    assert 5.5 < refused.retry_after_s <= 6.0
    assert 59.0 < refused.reset_s <= 60.0


async def test_cost_spends_many_units_or_none(limiter: RateLimiter) -> None:
    assert (await limiter.hit("k", 10, 60, cost=7)).remaining == 3
    refused = await limiter.hit("k", 10, 60, cost=4)
    assert (refused.allowed, refused.remaining) == (False, 3)
    assert (await limiter.hit("k", 10, 60, cost=3)).allowed


async def test_charge_overdraws_and_the_zero_cost_check_refuses(limiter: RateLimiter) -> None:
    assert (await limiter.charge("tok", 1000, 60, 400)).allowed
    assert (await limiter.hit("tok", 1000, 60, cost=0)).allowed
    over = await limiter.charge("tok", 1000, 60, 1100)
    assert (over.allowed, over.remaining) == (False, 0)
    assert 29.0 < over.retry_after_s <= 30.0
    check = await limiter.hit("tok", 1000, 60, cost=0)
    assert not check.allowed
    assert 29.0 < check.retry_after_s <= 30.0


async def test_the_budget_refills(limiter: RateLimiter) -> None:
    while (await limiter.hit("k", 5, 1)).allowed:
        pass
    for _ in range(150):
        if (await limiter.hit("k", 5, 1)).allowed:
            return
        await asyncio.sleep(0.02)
    pytest.fail("no refill within 3 s of a 1 s window")


async def test_a_decision_spends_every_bucket_or_none(limiter: RateLimiter) -> None:
    ip, alice = Bucket("ip:a", 5, 60), Bucket("p:alice", 2, 60)
    assert [d.allowed for d in await limiter.hit_all([ip, alice])] == [True, True]
    assert [d.remaining for d in await limiter.hit_all([ip, alice])] == [3, 0]
    refused = await limiter.hit_all([ip, alice])
    assert [d.allowed for d in refused] == [True, False]  # the address fitted, the principal did not
    assert refused[0].remaining == 3  # ... so the address spent nothing
    assert 29.0 < refused[1].retry_after_s <= 30.0
    assert (await limiter.hit("ip:a", 5, 60, cost=0)).remaining == 3
    assert [d.allowed for d in await limiter.hit_all([ip, Bucket("p:bob", 2, 60)])] == [True, True]


async def test_an_overdrawn_token_budget_refuses_the_decision_and_spends_nothing(limiter: RateLimiter) -> None:
    await limiter.charge("tok:alice", 100, 60, 150)
    buckets = [Bucket("ip:a", 5, 60), Bucket("p:alice", 5, 60), Bucket("tok:alice", 100, 60, cost=0)]
    decisions = await limiter.hit_all(buckets)
    assert [d.allowed for d in decisions] == [True, True, False]
    assert 29.0 < decisions[2].retry_after_s <= 30.0
    assert (await limiter.hit("p:alice", 5, 60, cost=0)).remaining == 5


async def test_100_parallel_decisions_admit_exactly_10_and_charge_only_those(limiter: RateLimiter) -> None:
    def buckets(i: int) -> list[Bucket]:
        return [Bucket("ip:shared", 10, 60), Bucket(f"p:user{i % 7}", 100, 60)]

    decisions = await asyncio.gather(*(limiter.hit_all(buckets(i)) for i in range(100)))
    assert sum(all(d.allowed for d in ds) for ds in decisions) == 10
    spent = [100 - (await limiter.hit(f"p:user{u}", 100, 60, cost=0)).remaining for u in range(7)]
    assert sum(spent) == 10  # a refused decision charged no principal


async def test_five_replicas_admit_exactly_10_of_100(redis_prefix: tuple[str, str]) -> None:
    url, prefix = redis_prefix
    replicas = [patient(url, prefix) for _ in range(5)]
    try:
        decisions = await asyncio.gather(*(replicas[i % 5].hit("shared", 10, 60) for i in range(100)))
    finally:
        for replica in replicas:
            await replica.close()
    assert [r.fallbacks for r in replicas] == [0] * 5
    assert sum(d.allowed for d in decisions) == 10


def _replica_process(url: str, prefix: str, start: Any, results: Any, principal: str | None = None) -> None:
    """20 parallel requests: on ``shared`` alone, or as a decision of ``shared`` (10) and ``principal`` (3)."""

    async def one(limiter: RedisRateLimiter) -> bool:
        if principal is None:
            return (await limiter.hit("shared", 10, 60)).allowed
        decisions = await limiter.hit_all([Bucket("shared", 10, 60), Bucket(principal, 3, 60)])
        return all(d.allowed for d in decisions)

    async def run() -> tuple[int, int]:
        limiter = patient(url, prefix)
        await limiter.redis.ping()  # connected before the start line
        start.wait(30)
        admitted = await asyncio.gather(*(one(limiter) for _ in range(20)))
        await limiter.close()
        return sum(admitted), limiter.fallbacks

    results.put(asyncio.run(run()))


@pytest.mark.parametrize("combined", [False, True], ids=["one_bucket", "address_and_principal"])
def test_five_processes_admit_exactly_10_of_100(redis_prefix: tuple[str, str], combined: bool) -> None:
    """With ``combined``, each process is a principal of at most 3: still exactly 10, none over 3."""
    url, prefix = redis_prefix
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(5), ctx.Queue()
    procs = [
        ctx.Process(target=_replica_process, args=(url, prefix, start, results, f"p{i}" if combined else None))
        for i in range(5)
    ]
    for proc in procs:
        proc.start()
    try:
        admitted = [results.get(timeout=60) for _ in procs]
    finally:
        for proc in procs:
            proc.join(10)
    assert all(proc.exitcode == 0 for proc in procs)
    assert [fallbacks for _, fallbacks in admitted] == [0] * 5
    assert sum(allowed for allowed, _ in admitted) == 10
    if combined:
        assert max(allowed for allowed, _ in admitted) <= 3


async def test_the_state_is_on_the_server_clock(redis_prefix: tuple[str, str]) -> None:
    url, prefix = redis_prefix
    limiter = patient(url, prefix)
    try:
        await limiter.hit("k", 10, 60)
        seconds, micros = await limiter.redis.time()
        tat = int(await limiter.redis.get(f"{prefix}:k"))
        ttl_ms = await limiter.redis.pttl(f"{prefix}:k")
    finally:
        await limiter.close()
    server_now = seconds * 1_000_000 + micros
    assert 0 < tat - server_now <= 6_000_000
    assert 0 < ttl_ms <= 6_000


@pytest.mark.parametrize("fail_open", [True, False])
async def test_redis_down_takes_the_configured_side_and_warns_once(
    fail_open: bool, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RedisRateLimiter(CLOSED_PORT_URL, fail_open=fail_open, timeout_s=0.25)
    with caplog.at_level(logging.WARNING, logger="serve_app.ratelimit.limiter"):
        decisions = [await limiter.hit("k", 10, 60) for _ in range(20)]
        decisions += [await limiter.charge("tok", 100, 60, 5) for _ in range(5)]
        decisions += [d for _ in range(5) for d in await limiter.hit_all([Bucket("ip", 10, 60), Bucket("p", 5, 60)])]
    await limiter.close()
    assert limiter.fallbacks == 30  # one per decision, however many buckets
    assert all(d.allowed is fail_open for d in decisions)
    if not fail_open:
        assert all(d.retry_after_s >= 1 for d in decisions)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert ("fail open" if fail_open else "fail closed") in warnings[0].getMessage()


async def test_redis_down_warns_again_after_the_interval(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RedisRateLimiter(CLOSED_PORT_URL, warn_interval_s=0.2)
    with caplog.at_level(logging.WARNING, logger="serve_app.ratelimit.limiter"):
        await limiter.hit("k", 10, 60)
        await limiter.hit("k", 10, 60)
        await asyncio.sleep(0.25)
        await limiter.hit("k", 10, 60)
    await limiter.close()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
