"""deployments.streaming.batched: order kept, errors delivered, closing cancels upstream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from deployments.streaming import batched


async def burst(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


async def test_ready_items_travel_together_in_order() -> None:
    batches = [b async for b in batched(burst(100))]
    assert [x for b in batches for x in b] == list(range(100))
    assert len(batches) < 10


async def test_slow_items_are_not_held_back() -> None:
    async def slow() -> AsyncIterator[int]:
        for i in range(3):
            await asyncio.sleep(0.05)
            yield i

    assert [b async for b in batched(slow())] == [[0], [1], [2]]


async def test_errors_arrive_after_the_items_before_them() -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        raise ValueError("boom")

    got: list[int] = []
    with pytest.raises(ValueError, match="boom"):
        async for b in batched(failing()):
            got.extend(b)
    assert got == [1]


async def test_closing_cancels_the_source() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[int]:
        try:
            i = 0
            while True:
                await asyncio.sleep(0.01)
                yield i
                i += 1
        finally:
            closed.set()

    gen = batched(endless())
    await anext(gen)
    await gen.aclose()
    await asyncio.wait_for(closed.wait(), 1)
