"""DispatchBatcher: batches form when the batch function is free, from what queued meanwhile;
only a full batch goes out while another runs, up to ``max_in_flight`` at once.

The batch function here blocks on a ``threading.Event`` the test releases, so each test
decides what arrives while a batch runs; it records every batch it was given.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from deployments.batcher import DispatchBatcher


class Gate:
    """A batch function that records its batches and, while closed, blocks in its thread."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.open = threading.Event()
        self.open.set()
        self.running = threading.Event()  # set while a batch is inside the function

    def __call__(self, items: list[str]) -> list[str]:
        self.batches.append(list(items))
        self.running.set()
        self.open.wait(5)
        self.running.clear()
        return [item.upper() for item in items]


async def a_batch_running(
    max_batch_size: int, max_in_flight: int = 2
) -> tuple[Gate, DispatchBatcher[str, str], asyncio.Future[str]]:
    """A batcher whose function is busy with the batch ["a"] until the test opens the gate."""
    gate = Gate()
    gate.open.clear()
    batcher = DispatchBatcher(gate, max_batch_size=max_batch_size, wait_s=0.001, max_in_flight=max_in_flight)
    first = asyncio.ensure_future(batcher.submit("a"))
    assert await asyncio.to_thread(gate.running.wait, 5)
    return gate, batcher, first


async def test_what_arrives_while_a_batch_runs_is_the_next_batch() -> None:
    gate, batcher, first = await a_batch_running(max_batch_size=4)
    later = []
    for group in ("b", "cd", "ef"):  # apart by far more than wait_s, all while "a" runs
        later += [asyncio.ensure_future(batcher.submit(x)) for x in group]
        await asyncio.sleep(0.03)
    gate.open.set()
    assert await first == "A"
    assert await asyncio.gather(*later) == list("BCDEF")
    assert gate.batches == [["a"], ["b", "c", "d", "e"], ["f"]]


async def test_an_idle_batcher_waits_for_company_but_not_once_the_batch_is_full() -> None:
    gate = Gate()
    batcher = DispatchBatcher(gate, max_batch_size=3, wait_s=0.5)
    a = asyncio.ensure_future(batcher.submit("a"))
    await asyncio.sleep(0.01)
    b = asyncio.ensure_future(batcher.submit("b"))
    assert await asyncio.gather(a, b) == ["A", "B"]
    assert gate.batches == [["a", "b"]]

    full = DispatchBatcher(gate, max_batch_size=2, wait_s=60)  # a full batch never waits
    assert await asyncio.wait_for(asyncio.gather(full.submit("c"), full.submit("d")), 5) == ["C", "D"]
    assert gate.batches[-1] == ["c", "d"]


async def test_an_item_alone_runs_once_its_wait_is_up() -> None:
    gate = Gate()
    batcher = DispatchBatcher(gate, max_batch_size=8, wait_s=0.01)
    assert await asyncio.wait_for(batcher.submit("solo"), 5) == "SOLO"
    assert await asyncio.wait_for(batcher.submit("again"), 5) == "AGAIN"  # the worker restarts
    assert gate.batches == [["solo"], ["again"]]


async def test_a_failing_batch_fails_its_callers_only() -> None:
    calls: list[list[str]] = []

    def flaky(items: list[str]) -> list[str]:
        calls.append(items)
        if "bad" in items:
            raise ValueError("model failed")
        return items

    batcher = DispatchBatcher(flaky, max_batch_size=2, wait_s=0.01)
    results = await asyncio.gather(batcher.submit("bad"), batcher.submit("x"), return_exceptions=True)
    assert [type(r) for r in results] == [ValueError, ValueError]
    assert await batcher.submit("good") == "good"
    assert calls == [["bad", "x"], ["good"]]


async def test_a_result_per_item_is_enforced() -> None:
    batcher = DispatchBatcher(lambda items: items[:1], max_batch_size=2, wait_s=0.01)
    results = await asyncio.gather(batcher.submit("a"), batcher.submit("b"), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and "1 results for 2 items" in str(r) for r in results)


async def test_a_caller_that_went_away_takes_no_place_in_a_batch() -> None:
    gate, batcher, first = await a_batch_running(max_batch_size=2)
    gone = asyncio.ensure_future(batcher.submit("gone"))
    stays = [asyncio.ensure_future(batcher.submit(x)) for x in "bc"]
    await asyncio.sleep(0)
    gone.cancel()
    gate.open.set()
    assert await first == "A"
    assert await asyncio.gather(*stays) == ["B", "C"]
    assert gate.batches == [["a"], ["b", "c"]]


async def test_a_full_batch_goes_out_while_one_runs_and_a_partial_one_waits() -> None:
    gate, batcher, first = await a_batch_running(max_batch_size=2, max_in_flight=2)
    full = [asyncio.ensure_future(batcher.submit(x)) for x in "bc"]
    for _ in range(500):  # it reaches the function while "a" is still inside
        if len(gate.batches) == 2:
            break
        await asyncio.sleep(0.01)
    assert gate.batches == [["a"], ["b", "c"]]
    # Two batches run: another full one waits for a place, and so does a partial one.
    rest = [asyncio.ensure_future(batcher.submit(x)) for x in "def"]
    await asyncio.sleep(0.05)
    assert gate.batches == [["a"], ["b", "c"]]
    gate.open.set()
    assert await first == "A"
    assert await asyncio.gather(*full, *rest) == list("BCDEF")
    assert gate.batches == [["a"], ["b", "c"], ["d", "e"], ["f"]]


async def test_one_batch_in_flight_holds_even_a_full_one_back() -> None:
    gate, batcher, first = await a_batch_running(max_batch_size=2, max_in_flight=1)
    later = [asyncio.ensure_future(batcher.submit(x)) for x in "bc"]
    await asyncio.sleep(0.05)
    assert gate.batches == [["a"]]
    gate.open.set()
    assert await first == "A"
    assert await asyncio.gather(*later) == ["B", "C"]
    assert gate.batches == [["a"], ["b", "c"]]


def test_a_batch_holds_at_least_one_item() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        DispatchBatcher(lambda items: items, max_batch_size=0, wait_s=0.01)
    with pytest.raises(ValueError, match="max_in_flight"):
        DispatchBatcher(lambda items: items, max_batch_size=1, wait_s=0.01, max_in_flight=0)
